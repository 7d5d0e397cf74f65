"""The TOML config file through the real CLI: where it is read from, that its keys are used, the
precedence flags > ``MMINDEX_*`` environment > file > defaults, and one-line errors for a bad file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import assert_one_line_error, run_cli

ITEMS = ["animals/cat.png", "rocket.bmp", "notes/rockets.txt"]


@pytest.fixture
def corpus(tmp_path: Path, photo_corpus: Path) -> Path:
    """Three items: two photos and a one-chunk text."""
    folder = tmp_path / "corpus"
    for relative in ITEMS:
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo_corpus / relative, folder / relative)
    return folder


def _write_config(path: Path, **values: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{name} = {json.dumps(value)}\n" for name, value in values.items()), encoding="utf-8")
    return path


def _root_shown(*args: str, env: dict[str, str] | None = None) -> str:
    code, stdout, stderr = run_cli("info", "--json", *args, env=env)
    assert code == 0, stderr
    return json.loads(stdout)["root"]


def test_root_precedence_flag_over_env_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MMINDEX_ROOT", raising=False)
    monkeypatch.setenv("MMINDEX_CONFIG", str(tmp_path / "absent.toml"))
    default = _root_shown()  # no file: the per-user data folder
    assert default.endswith("mmindex") and str(tmp_path) not in default

    config = _write_config(tmp_path / "mmindex.toml", root=str(tmp_path / "from-file"))
    monkeypatch.setenv("MMINDEX_CONFIG", str(config))
    assert _root_shown() == str(tmp_path / "from-file")
    assert _root_shown(env={"MMINDEX_ROOT": str(tmp_path / "from-env")}) == str(tmp_path / "from-env")
    flagged = _root_shown("--root", str(tmp_path / "from-flag"), env={"MMINDEX_ROOT": str(tmp_path / "from-env")})
    assert flagged == str(tmp_path / "from-flag")


def test_the_default_config_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MMINDEX_CONFIG", raising=False)
    monkeypatch.delenv("MMINDEX_ROOT", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config-home"))
    _write_config(tmp_path / "config-home" / "mmindex" / "config.toml", root=str(tmp_path / "default-file"))
    assert _root_shown() == str(tmp_path / "default-file")


def test_index_uses_the_file_and_the_environment_beats_it(
    tmp_path: Path, corpus: Path, tiny_local_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model, root and shard size of a run come from the file unless the environment or a flag
    says otherwise (shards: one per item at the file's shard_size = 1, two at the env's 2)."""
    monkeypatch.delenv("MMINDEX_ROOT", raising=False)
    monkeypatch.delenv("MMINDEX_SHARD_SIZE", raising=False)
    config = _write_config(tmp_path / "mmindex.toml", root=str(tmp_path / "file-root"), model=f"local-dir:{tiny_local_dir}",
                           shard_size=1, workers=0, device="cpu")
    monkeypatch.setenv("MMINDEX_CONFIG", str(config))

    code, stdout, stderr = run_cli("index", str(corpus), "-c", "from-file", "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["embedder"].startswith("local-dir@sha256:") and report["shards"] == len(ITEMS)
    assert (tmp_path / "file-root" / "shards" / "from-file").is_dir()

    env = {"MMINDEX_ROOT": str(tmp_path / "env-root"), "MMINDEX_SHARD_SIZE": "2"}
    code, stdout, stderr = run_cli("index", str(corpus), "-c", "from-env", "--json", env=env)
    assert code == 0, stderr
    assert json.loads(stdout)["shards"] == 2
    assert (tmp_path / "env-root" / "shards" / "from-env").is_dir()
    assert not (tmp_path / "file-root" / "shards" / "from-env").exists()

    code, stdout, stderr = run_cli("index", str(corpus), "-c", "from-flag", "--root", str(tmp_path / "flag-root"), "--json", env=env)
    assert code == 0, stderr
    assert (tmp_path / "flag-root" / "shards" / "from-flag").is_dir()
    listed = {root: [entry["name"] for entry in json.loads(run_cli("info", "--json", "--root", str(tmp_path / root)).stdout)["collections"]]
              for root in ("file-root", "env-root", "flag-root")}
    assert listed == {"file-root": ["from-file"], "env-root": ["from-env"], "flag-root": ["from-flag"]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('root = "/tmp/unterminated\n', "config file"),
        ("batch_size = 0\n", "invalid batch_size"),
        ('device = "tpu"\n', "invalid device"),
    ],
)
def test_a_bad_config_file_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, message: str) -> None:
    config = tmp_path / "mmindex.toml"
    config.write_text(text, encoding="utf-8")
    monkeypatch.setenv("MMINDEX_CONFIG", str(config))
    result = run_cli("info", "--root", str(tmp_path / "root"))
    assert_one_line_error(result, message, code=2)
    if message == "config file":
        assert str(config) in result.stderr
