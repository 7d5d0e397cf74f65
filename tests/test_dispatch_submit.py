"""Submitting a shard's run survives a busy Prefect server: a 5xx or a dropped connection is retried
with backoff under the same idempotency key; other errors (4xx) are not retried."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from mmindex.flows import dispatch


def _status_error(code: int) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "http://127.0.0.1:1/api/deployments/x/create_flow_run")
    return httpx.HTTPStatusError(f"{code}", request=request, response=httpx.Response(code, request=request))


def _failing(errors: list[Exception], calls: list[dict[str, Any]]) -> Any:
    def run_deployment(name: str, **kwargs: Any) -> str:
        calls.append(kwargs)
        if errors:
            raise errors.pop(0)
        return "the run"

    return run_deployment


def test_a_busy_server_is_retried_under_the_same_idempotency_key(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    errors: list[Exception] = [_status_error(503), httpx.ConnectError("refused")]
    monkeypatch.setattr(dispatch, "run_deployment", _failing(errors, calls))
    slept: list[float] = []
    child = dispatch.submit_shard_run("embed-shard/x", {"seq": 1}, "c", "key-1", sleep=slept.append)
    assert child == "the run"  # type: ignore[comparison-overlap]
    assert [call["idempotency_key"] for call in calls] == ["key-1"] * 3
    assert slept == list(dispatch.SUBMIT_RETRY_DELAYS_S[:2])


def test_a_client_error_or_a_server_busy_for_too_long_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(dispatch, "run_deployment", _failing([_status_error(404)], calls))
    with pytest.raises(httpx.HTTPStatusError):
        dispatch.submit_shard_run("embed-shard/x", {}, "c", "k", sleep=lambda _: None)
    assert len(calls) == 1
    busy = [_status_error(503)] * (len(dispatch.SUBMIT_RETRY_DELAYS_S) + 1)
    monkeypatch.setattr(dispatch, "run_deployment", _failing(busy, calls))
    with pytest.raises(httpx.HTTPStatusError):
        dispatch.submit_shard_run("embed-shard/x", {}, "c", "k", sleep=lambda _: None)
    assert len(calls) == 1 + len(dispatch.SUBMIT_RETRY_DELAYS_S) + 1
