"""A query's result count is bounded (``pipeline/search/limits.py``): a huge ``--limit`` is one
clear usage error, checked before any collection is opened or model loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import assert_one_line_error, run_cli


@pytest.mark.parametrize("limit", ["0", "1001", "100000000"])
def test_query_limit_is_bounded(tmp_path: Path, limit: str) -> None:
    result = run_cli("query", "a dog", "--collection", "photos", "--limit", limit, "--root", str(tmp_path / "root"))
    assert_one_line_error(result, f"--limit must be between 1 and 1000, got {limit}", code=2)
    assert not (tmp_path / "root").exists()
