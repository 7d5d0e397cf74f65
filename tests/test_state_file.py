"""state.json: the previous generation is kept, a torn file is recovered from it with a warning,
and names in it are validated whole (a tampered physical name can never leave the root)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers import assert_one_line_error, run_cli
from pydantic import ValidationError

from mmindex.pipeline.errors import ConfigError, SchemaMismatchError
from mmindex.pipeline.ingest.run import IndexRequest, preflight
from mmindex.pipeline.io.state_file import edit_state, previous_generation, read_state
from mmindex.pipeline.store.open_store import validate_collection_name
from mmindex.schemas.config import Settings
from mmindex.schemas.state import CollectionState, CollectionVersion, IndexState


def _version(physical_name: str = "photos--0123456789") -> CollectionVersion:
    return CollectionVersion(physical_name=physical_name, embedder_id="e", model="m", pretrained=None, dim=4,
                             created_at=datetime.now(UTC))


def _add(root: Path, name: str) -> None:
    with edit_state(root) as state:
        state.collections[name] = CollectionState(name=name, current=_version(f"{name}--0123456789"))


def test_torn_state_file_is_recovered_from_the_previous_generation(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _add(tmp_path, "photos")
    _add(tmp_path, "notes")
    state_file = tmp_path / "state.json"
    assert set(read_state(tmp_path).collections) == {"photos", "notes"}
    assert set(json.loads(previous_generation(state_file).read_text())["collections"]) == {"photos"}
    state_file.write_bytes(state_file.read_bytes()[:40])  # torn write
    with caplog.at_level(logging.WARNING):
        recovered = read_state(tmp_path)
    assert set(recovered.collections) == {"photos"}
    assert "state.json.prev" in caplog.text and "cp " in caplog.text
    _add(tmp_path, "docs")  # the next edit repairs the file and never keeps the torn one
    assert set(read_state(tmp_path).collections) == {"photos", "docs"}
    assert set(json.loads(previous_generation(state_file).read_text())["collections"]) == {"photos"}


def test_both_generations_damaged_is_one_clear_error(tmp_path: Path) -> None:
    _add(tmp_path, "photos")
    _add(tmp_path, "notes")
    (tmp_path / "state.json").write_bytes(b"\x00" * 64)
    previous_generation(tmp_path / "state.json").write_text("{", encoding="utf-8")
    with pytest.raises(SchemaMismatchError, match="previous generation .* damaged too"):
        read_state(tmp_path)


@pytest.mark.parametrize("physical_name", ["../../..", "photos/x", "photos\n", ".hidden", "a.b"])
def test_tampered_physical_names_are_refused(tmp_path: Path, physical_name: str) -> None:
    _add(tmp_path, "photos")
    state_file = tmp_path / "state.json"
    data = json.loads(state_file.read_text())
    data["collections"]["photos"]["current"]["physical_name"] = physical_name
    state_file.write_text(json.dumps(data), encoding="utf-8")
    previous_generation(state_file).unlink(missing_ok=True)
    with pytest.raises(SchemaMismatchError, match="not a valid mmindex state file"):
        read_state(tmp_path)
    with pytest.raises(ValidationError):
        _version(physical_name)


@pytest.mark.parametrize("name", ["photos\n", "photos\r\n", "../x", "", "-x"])
def test_collection_names_match_whole(name: str) -> None:
    with pytest.raises(ConfigError):
        validate_collection_name(name)
    with pytest.raises(ValidationError):
        IndexState.model_validate({"collections": {name: {"name": name, "current": _version().model_dump()}}})


def test_a_name_with_a_newline_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    """Through the real CLI, and the check every entry point (CLI, API, flow) makes before its lock."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("a note", encoding="utf-8")
    root = tmp_path / "root"
    result = run_cli("index", str(corpus), "--collection", "photos\n", "--root", str(root))
    assert_one_line_error(result, "invalid collection name", code=2)
    assert not root.exists()  # no lock file, no state.json entry, no store
    with pytest.raises(ConfigError, match="invalid collection name"):
        preflight(IndexRequest(corpus, "photos\n"), Settings(root=root))
    assert not root.exists()
