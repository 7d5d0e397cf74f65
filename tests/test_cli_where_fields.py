"""``--where`` through the real CLI: an unknown field, or a value outside a field's fixed set, is
a one-line error (rc 2) that lists the known fields; a known field that matches nothing is an
empty result."""

from __future__ import annotations

import json

from helpers import Indexed, assert_one_line_error, run_cli


def _query(indexed: Indexed, *args: str) -> tuple[int, str, str]:
    return run_cli("query", "x", "-c", "photos", *indexed.flags, *args)


def test_unknown_field_is_named_with_the_known_ones(indexed: Indexed) -> None:
    result = _query(indexed, "--where", "colour=red")
    assert_one_line_error(result, "no field 'colour' in the collection's payload", code=2)
    assert "modality" in result.stderr and "width" in result.stderr and "meta.KEY" in result.stderr


def test_a_map_field_needs_a_key_and_a_plain_field_none(indexed: Indexed) -> None:
    assert_one_line_error(_query(indexed, "--where", "meta=x"), "no field 'meta'", code=2)
    assert_one_line_error(_query(indexed, "--where", "width.px>3"), "no field 'width.px'", code=2)


def test_value_outside_a_fixed_set(indexed: Indexed) -> None:
    result = _query(indexed, "--where", "modality=video")
    assert_one_line_error(result, "modality is one of image, text, not 'video'", code=2)
    assert_one_line_error(_query(indexed, "--where", "modality!=image,audio"), "not 'audio'", code=2)


def test_known_field_without_a_match_is_an_empty_result(indexed: Indexed) -> None:
    for where in ("ext=tga", "meta.colour=red", "labels=zebra", "width>=100000"):
        code, stdout, stderr = _query(indexed, "--where", where, "--json")
        assert code == 0, stderr
        assert json.loads(stdout) == [], where
