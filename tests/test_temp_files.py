"""#22.10: files are written through a ``mkstemp`` temporary file in the target folder (a random
name, created exclusively): a symlink another local user plants at a name the old code would have
used is never followed, the published file is 0600 and no temporary file is left behind."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from mmindex.pipeline.io.atomic import TMP_PREFIX, atomic_file
from mmindex.pipeline.io.root import RemotePath, publish
from mmindex.pipeline.search.gallery import write_gallery


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "elsewhere" / "victim.txt"
    victim.parent.mkdir()
    victim.write_text("the victim's own file", encoding="utf-8")
    return victim


def _assert_written_privately(target: Path, data: bytes, victim: Path) -> None:
    assert target.read_bytes() == data and not target.is_symlink()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert victim.read_text(encoding="utf-8") == "the victim's own file"
    assert not [path for path in target.parent.iterdir() if path.name.startswith(TMP_PREFIX) and not path.is_symlink()]


def test_publish_never_follows_a_planted_link(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    target = tmp_path / "root" / "state.json"
    target.parent.mkdir()
    planted = target.with_name(f".tmp-{target.name}.{os.getpid()}.{threading.get_ident()}")  # the old name
    planted.symlink_to(victim)
    publish(target, b'{"collections": {}}')
    _assert_written_privately(target, b'{"collections": {}}', victim)
    assert planted.is_symlink()  # left alone, not written through


def test_publish_on_a_file_url_root_is_private_and_atomic(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    folder = tmp_path / "root"
    folder.mkdir()
    (folder / f".tmp-state.json.{os.getpid()}.{threading.get_ident()}").symlink_to(victim)
    publish(RemotePath.from_url(f"file://{folder}") / "state.json", b"{}")
    assert (folder / "state.json").read_bytes() == b"{}"
    assert stat.S_IMODE((folder / "state.json").stat().st_mode) == 0o600
    assert victim.read_text(encoding="utf-8") == "the victim's own file"


def test_the_gallery_never_follows_a_planted_link(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    target = tmp_path / "shared" / "g.html"
    target.parent.mkdir()
    target.with_name(f".{target.name}.{os.getpid()}.tmp").symlink_to(victim)  # the old predictable name
    written = write_gallery(target, "<html>results</html>")
    assert written == target
    _assert_written_privately(target, b"<html>results</html>", victim)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "g.html"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_file(target) as handle:
        handle.write(b"half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert [path.name for path in tmp_path.iterdir()] == ["g.html"]
