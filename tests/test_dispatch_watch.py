"""The dispatcher's watch over one shard run, against a scripted sequence of the run's states."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

from prefect.client.schemas.objects import FlowRun
from prefect.states import Completed, Running

from mmindex.flows import dispatch


class ScriptedClient:
    """Answers ``read_flow_run`` with the given runs in turn, then the last one forever."""

    def __init__(self, runs: list[FlowRun]) -> None:
        self.runs = runs
        self.reads = 0

    def read_flow_run(self, flow_run_id: object) -> FlowRun:
        run = self.runs[min(self.reads, len(self.runs) - 1)]
        self.reads += 1
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
