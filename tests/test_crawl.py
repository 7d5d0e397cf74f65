"""Tests of the local directory crawler (``pipeline.sources.local.crawl_local``)."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import pytest
from helpers import finishes_within
from PIL import Image

from mmindex.pipeline.errors import SourceError
from mmindex.pipeline.ids import item_key
from mmindex.pipeline.sources import local
from mmindex.pipeline.sources.base import ItemRef
from mmindex.pipeline.sources.local import crawl_local

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# --- helpers ---------------------------------------------------------------------------------


def _png_bytes(color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), color).save(buffer, "PNG")
    return buffer.getvalue()


def _write(root: Path, rel: str, data: bytes | str = b"") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def _paths(refs: list[ItemRef]) -> list[str]:
    return [ref.path for ref in refs]


def _crawl(root: Path, **kwargs: object) -> list[ItemRef]:
    return list(crawl_local(root, **kwargs))  # type: ignore[arg-type]


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """A small nested source tree with images, texts, sidecars, hidden and ignored files."""
    root = tmp_path / "src"
    png = _png_bytes()
    _write(root, "b.png", png)
    _write(root, "a.JPG", png)  # content/extension mismatch is the decoder's business
    _write(root, "notes.md", "# notes\n")
    _write(root, "readme.txt", "a document\n")
    _write(root, "data.csv", "x,y\n")  # ignored: not an item extension
    _write(root, "photos/cat.png", png)
    _write(root, "photos/cat.txt", "  a cat  \n")  # caption sidecar
    _write(root, "photos/cat.json", '{"tags": ["cat"]}')  # metadata sidecar
    _write(root, "photos/dog.png", png)
    _write(root, "photos/dog.webp", png)  # same stem as dog.png
    _write(root, "photos/dog.txt", "a dog")
    _write(root, "photos/2021/deep/x.gif", png)
    _write(root, "photos/orphan.json", "{}")  # no image: ignored
    _write(root, ".hidden.png", png)
    _write(root, ".cache/c.png", png)
    _write(root, "docs/guide.txt", "guide")
    return root


# --- basics ----------------------------------------------------------------------------------


def test_nested_tree_order_modality_and_fields(tree: Path) -> None:
    refs = _crawl(tree)
    assert _paths(refs) == [
        "a.JPG",
        "b.png",
        "docs/guide.txt",
        "notes.md",
        "photos/2021/deep/x.gif",
        "photos/cat.png",
        "photos/dog.png",
        "photos/dog.webp",
        "readme.txt",
    ]
    by_path = {ref.path: ref for ref in refs}
    root_id = tree.resolve().as_posix()
    cat = by_path["photos/cat.png"]
    assert cat.modality == "image"
    assert cat.ext == "png"
    assert cat.source_id == root_id
    assert cat.key == item_key(root_id, "photos/cat.png")
    assert cat.uri == str(tree.resolve() / "photos" / "cat.png")
    assert cat.size == (tree / "photos/cat.png").stat().st_size
    assert cat.mtime_ns == (tree / "photos/cat.png").stat().st_mtime_ns
    assert by_path["a.JPG"].ext == "jpg"  # extension is lower-cased
    assert by_path["a.JPG"].modality == "image"
    assert by_path["notes.md"].modality == "text"
    assert by_path["readme.txt"].modality == "text"
    assert by_path["readme.txt"].caption_path is None


def test_order_and_keys_are_deterministic(tree: Path) -> None:
    first = _crawl(tree)
    second = _crawl(tree)
    assert first == second
    assert len({ref.key for ref in first}) == len(first)


def test_source_id_override(tree: Path) -> None:
    refs = _crawl(tree, source_id="photos-nas/")
    assert refs[0].key == "photos-nas/a.JPG"
    assert all(ref.source_id == "photos-nas/" for ref in refs)


def test_relative_root_resolves_to_absolute_source_id(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree.parent)
    refs = _crawl(Path("src"))
    assert refs[0].source_id == tree.resolve().as_posix()
    assert Path(refs[0].uri).is_absolute()


def test_missing_root_raises_source_error_at_call(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not found") as info:
        crawl_local(tmp_path / "nope")  # raised by the call, before iteration
    assert "\n" not in str(info.value)


def test_root_that_is_a_file_raises_source_error(tmp_path: Path) -> None:
    file = _write(tmp_path, "file.png", _png_bytes())
    with pytest.raises(SourceError, match="not a directory"):
        crawl_local(file)


def test_empty_root_yields_nothing(tmp_path: Path) -> None:
    assert _crawl(tmp_path) == []


# --- sidecars --------------------------------------------------------------------------------


def test_sidecars_are_attached_and_not_yielded(tree: Path) -> None:
    by_path = {ref.path: ref for ref in _crawl(tree)}
    cat = by_path["photos/cat.png"]
    assert cat.caption_path == str(tree.resolve() / "photos" / "cat.txt")
    assert cat.metadata_path == str(tree.resolve() / "photos" / "cat.json")
    assert "photos/cat.txt" not in by_path
    assert "photos/dog.txt" not in by_path
    # two images sharing a stem both get the caption
    assert by_path["photos/dog.png"].caption_path == str(tree.resolve() / "photos" / "dog.txt")
    assert by_path["photos/dog.webp"].caption_path == str(tree.resolve() / "photos" / "dog.txt")
    assert by_path["photos/dog.png"].metadata_path is None


def test_sidecar_only_in_the_same_directory(tmp_path: Path) -> None:
    _write(tmp_path, "a/photo.png", _png_bytes())
    _write(tmp_path, "b/photo.txt", "not a caption of a/photo.png")
    refs = _crawl(tmp_path)
    assert _paths(refs) == ["a/photo.png", "b/photo.txt"]
    assert refs[0].caption_path is None


def test_sidecar_stays_a_sidecar_when_its_image_is_excluded(tree: Path) -> None:
    refs = _crawl(tree, exclude=["cat.png"])
    assert "photos/cat.txt" not in _paths(refs)
    assert "photos/cat.png" not in _paths(refs)


# --- globs -----------------------------------------------------------------------------------


def test_include_basename_glob_matches_at_any_depth(tree: Path) -> None:
    assert _paths(_crawl(tree, include=["*.png"])) == ["b.png", "photos/cat.png", "photos/dog.png"]


def test_include_path_glob_with_double_star(tree: Path) -> None:
    assert _paths(_crawl(tree, include=["photos/**/*.gif"])) == ["photos/2021/deep/x.gif"]
    assert _paths(_crawl(tree, include=["photos/**"])) == [
        "photos/2021/deep/x.gif",
        "photos/cat.png",
        "photos/dog.png",
        "photos/dog.webp",
    ]
    # ``**/`` also matches zero directories; a single ``*`` never crosses ``/``
    assert _paths(_crawl(tree, include=["**/b.png"])) == ["b.png"]
    assert _paths(_crawl(tree, include=["photos/*.gif"])) == []


def test_exclude_prunes_directories_and_files(tree: Path) -> None:
    paths = _paths(_crawl(tree, exclude=["photos", "*.md"]))
    assert paths == ["a.JPG", "b.png", "docs/guide.txt", "readme.txt"]
    paths = _paths(_crawl(tree, exclude=["photos/2021/**"]))
    assert "photos/2021/deep/x.gif" not in paths
    assert "photos/cat.png" in paths


def test_include_and_exclude_combine(tree: Path) -> None:
    paths = _paths(_crawl(tree, include=["*.png", "*.webp"], exclude=["dog.*"]))
    assert paths == ["b.png", "photos/cat.png"]


def test_glob_character_classes_and_question_mark(tree: Path) -> None:
    assert _paths(_crawl(tree, include=["[ab].*"])) == ["a.JPG", "b.png"]
    assert _paths(_crawl(tree, include=["[!ab]*.png"])) == ["photos/cat.png", "photos/dog.png"]
    assert _paths(_crawl(tree, include=["?.png"])) == ["b.png"]


def test_glob_translation_edge_cases() -> None:
    assert local._compile_glob("a[b").fullmatch("a[b")
    assert local._compile_glob("x.(1)+").fullmatch("x.(1)+")
    assert local._compile_glob("**").fullmatch("a/b/c.png")


# --- hidden ----------------------------------------------------------------------------------


def test_hidden_files_and_dirs_skipped_by_default(tree: Path) -> None:
    paths = _paths(_crawl(tree))
    assert ".hidden.png" not in paths
    assert ".cache/c.png" not in paths


def test_hidden_included_with_flag(tree: Path) -> None:
    paths = _paths(_crawl(tree, include_hidden=True))
    assert ".hidden.png" in paths
    assert ".cache/c.png" in paths


# --- symlinks and special files --------------------------------------------------------------


def test_symlink_loop_terminates(tmp_path: Path) -> None:
    _write(tmp_path, "a/img.png", _png_bytes())
    (tmp_path / "a" / "loop").symlink_to(tmp_path / "a", target_is_directory=True)
    (tmp_path / "a" / "up").symlink_to(tmp_path, target_is_directory=True)
    refs = finishes_within(10, lambda: _crawl(tmp_path))
    assert _paths(refs) == ["a/img.png"]  # type: ignore[arg-type]


def test_symlinked_directory_outside_root_is_followed_once(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    _write(outside, "x.png", _png_bytes())
    root = tmp_path / "root"
    root.mkdir()
    (root / "link1").symlink_to(outside, target_is_directory=True)
    (root / "link2").symlink_to(outside, target_is_directory=True)
    assert _paths(_crawl(root)) == []  # links out of the root are not followed by default
    refs = _crawl(root, links_outside_root=True)
    assert _paths(refs) == ["link1/x.png"]  # the alias link2 is the same real directory
    assert refs[0].uri == str(root.resolve() / "link1" / "x.png")


def test_follow_symlinks_false_skips_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    _write(outside, "x.png", _png_bytes())
    root = tmp_path / "root"
    _write(root, "real.png", _png_bytes())
    (root / "dirlink").symlink_to(outside, target_is_directory=True)
    (root / "filelink.png").symlink_to(outside / "x.png")
    assert _paths(_crawl(root, links_outside_root=True)) == ["dirlink/x.png", "filelink.png", "real.png"]
    assert _paths(_crawl(root, follow_symlinks=False, links_outside_root=True)) == ["real.png"]


def test_links_leaving_the_root_are_skipped_and_links_inside_followed(tmp_path: Path) -> None:
    """#22.8: ``notes.txt -> ~/.ssh/id_rsa`` must not be indexed; a link within the root is."""
    home = tmp_path / "home"
    _write(home, ".ssh/id_rsa", b"-----BEGIN OPENSSH PRIVATE KEY-----\n")
    root = tmp_path / "root"
    _write(root, "real.png", _png_bytes())
    _write(root, "sub/inner.txt", b"inside")
    (root / "notes.txt").symlink_to(home / ".ssh" / "id_rsa")
    (root / "real.txt").symlink_to(home / ".ssh" / "id_rsa")  # a caption sidecar pointing out
    (root / "alias.txt").symlink_to(root / "sub" / "inner.txt")
    (root / "up").symlink_to(tmp_path, target_is_directory=True)
    refs = {ref.path: ref for ref in _crawl(root)}
    assert set(refs) == {"alias.txt", "real.png", "sub/inner.txt"}
    assert refs["real.png"].caption_path is None


def test_broken_symlink_is_yielded_with_size_zero(tmp_path: Path) -> None:
    _write(tmp_path, "ok.png", _png_bytes())
    (tmp_path / "gone.png").symlink_to(tmp_path / "does-not-exist.png")
    refs = {ref.path: ref for ref in _crawl(tmp_path)}
    assert set(refs) == {"gone.png", "ok.png"}
    assert refs["gone.png"].size == 0


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_fifo_is_yielded_without_being_opened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.jpg")
    _write(tmp_path, "ok.png", _png_bytes())
    refs = finishes_within(10, lambda: _crawl(tmp_path))
    by_path = {ref.path: ref for ref in refs}  # type: ignore[attr-defined]
    assert set(by_path) == {"ok.png", "pipe.jpg"}
    assert by_path["pipe.jpg"].size == 0
    assert by_path["pipe.jpg"].modality == "image"


def test_directory_named_like_an_image_is_walked_not_yielded(tmp_path: Path) -> None:
    _write(tmp_path, "album.png/inner.png", _png_bytes())
    assert _paths(_crawl(tmp_path)) == ["album.png/inner.png"]


# --- unreadable directories ------------------------------------------------------------------


def test_unreadable_subdirectory_is_skipped_with_warning(
    tree: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Simulated with a failing ``os.scandir``, so it also runs as root."""
    real_scandir = os.scandir
    blocked = str(tree.resolve() / "photos")

    def scandir(path: str) -> object:
        if os.fspath(path) == blocked:
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(local.os, "scandir", scandir)
    with caplog.at_level(logging.WARNING, logger=local.__name__):
        paths = _paths(_crawl(tree))
    assert not any(path.startswith("photos/") for path in paths)
    assert "b.png" in paths and "readme.txt" in paths
    assert any("unreadable directory" in record.getMessage() for record in caplog.records)


@pytest.mark.skipif(IS_ROOT, reason="root ignores directory permissions")
def test_unreadable_subdirectory_chmod(tree: Path, caplog: pytest.LogCaptureFixture) -> None:
    locked = tree / "photos"
    locked.chmod(0)
    try:
        with caplog.at_level(logging.WARNING, logger=local.__name__):
            paths = _paths(_crawl(tree))
    finally:
        locked.chmod(0o755)
    assert not any(path.startswith("photos/") for path in paths)
    assert "b.png" in paths
    assert any("unreadable directory" in record.getMessage() for record in caplog.records)


def test_unreadable_root_raises_source_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def scandir(path: str) -> object:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(local.os, "scandir", scandir)
    with pytest.raises(SourceError, match="cannot list"):
        crawl_local(tmp_path)


def test_deep_tree_does_not_recurse(tmp_path: Path) -> None:
    """The walk uses an explicit stack: depth is limited by the filesystem, not by Python."""
    depth = 60
    rel = "/".join(f"d{i}" for i in range(depth)) + "/leaf.png"
    _write(tmp_path, rel, _png_bytes())
    assert _paths(_crawl(tmp_path)) == [rel]
