"""The dispatcher against a busy or slow Prefect server: submitting a shard's run retries a 5xx or a
dropped connection under the same idempotency key (a 4xx is not retried); watching a run retries
its reads, and a finished shard's run with missed heartbeats is left to end by itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import httpx
import pytest
from prefect.client.schemas.objects import FlowRun
from prefect.states import Completed, Running

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
    assert slept == list(dispatch.API_RETRY_DELAYS_S[:2])


def test_a_client_error_or_a_server_busy_for_too_long_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(dispatch, "run_deployment", _failing([_status_error(404)], calls))
    with pytest.raises(httpx.HTTPStatusError):
        dispatch.submit_shard_run("embed-shard/x", {}, "c", "k", sleep=lambda _: None)
    assert len(calls) == 1
    busy = [_status_error(503)] * (len(dispatch.API_RETRY_DELAYS_S) + 1)
    monkeypatch.setattr(dispatch, "run_deployment", _failing(busy, calls))
    with pytest.raises(httpx.HTTPStatusError):
        dispatch.submit_shard_run("embed-shard/x", {}, "c", "k", sleep=lambda _: None)
    assert len(calls) == 1 + len(dispatch.API_RETRY_DELAYS_S) + 1


# -- watching a run ----------------------------------------------------------------------------------


class ScriptedClient:
    """Answers ``read_flow_run`` with the given runs (or raises the given errors) in turn, then the last forever."""

    def __init__(self, runs: list[FlowRun | Exception]) -> None:
        self.runs = runs
        self.reads = 0

    def read_flow_run(self, flow_run_id: object) -> FlowRun:
        run = self.runs[min(self.reads, len(self.runs) - 1)]
        self.reads += 1
        if isinstance(run, Exception):
            raise run
        return run


def _silent_run(flow_id: object, run_id: object, *, completed: bool = False) -> FlowRun:
    """A run whose last heartbeat is far older than LOST_AFTER_S."""
    stale = datetime.now(UTC) - timedelta(seconds=dispatch.LOST_AFTER_S * 3)
    return FlowRun(id=run_id, flow_id=flow_id, name="embed-shard-c-1", start_time=stale,
                   state=Completed() if completed else Running(),
                   labels={dispatch.HEARTBEAT_LABEL: stale.isoformat()})


def test_a_silent_run_whose_shard_is_not_done_is_abandoned_as_lost() -> None:
    flow_id, run_id = uuid4(), uuid4()
    client = ScriptedClient([_silent_run(flow_id, run_id)])
    _, abandoned = dispatch._watch(client, run_id, None, 0.0, lambda: False)  # type: ignore[arg-type]
    assert abandoned is not None and abandoned.reason.startswith("lost: no heartbeat")


def test_a_silent_run_whose_shard_is_done_is_left_to_finish() -> None:
    """Missed heartbeats (an overloaded server) must not cancel a run whose shard already wrote its outcome."""
    flow_id, run_id = uuid4(), uuid4()
    client = ScriptedClient([_silent_run(flow_id, run_id)] * 5 + [_silent_run(flow_id, run_id, completed=True)])
    flow_run, abandoned = dispatch._watch(client, run_id, None, 0.0, lambda: True)  # type: ignore[arg-type]
    assert abandoned is None and flow_run.state is not None and flow_run.state.is_completed()
    assert client.reads == 6


def test_a_busy_server_while_watching_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch, "API_RETRY_DELAYS_S", (0.0, 0.0))
    flow_id, run_id = uuid4(), uuid4()
    client = ScriptedClient([_status_error(503), _status_error(503), _silent_run(flow_id, run_id, completed=True)])
    flow_run, abandoned = dispatch._watch(client, run_id, None, 0.0, lambda: False)  # type: ignore[arg-type]
    assert abandoned is None and flow_run.state is not None and flow_run.state.is_completed()
    client = ScriptedClient([_status_error(503)] * 3)
    with pytest.raises(httpx.HTTPStatusError):
        dispatch._watch(client, run_id, None, 0.0, lambda: False)  # type: ignore[arg-type]
