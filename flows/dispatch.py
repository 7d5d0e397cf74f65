"""Sending one shard to the embedding deployment and seeing it through (docs/ARCHITECTURE.md §5).

A shard becomes a run of ``embed-shard`` on a work pool. The dispatcher watches that run itself
instead of trusting it to end: the shard process stamps its flow run with a heartbeat label every
``HEARTBEAT_S``; a running run whose stamps stopped (the worker or its machine died with the shard
process; the server never marks such a run crashed, and a worker's own heartbeat is not refreshed
while it runs a flow) is declared lost here, cancelled, and the shard submitted again. A run that has been *running* longer than the shard
timeout (measured from its start, so shards queued behind a busy pool are never cancelled) is
cancelled the same way. Every run the dispatcher gives up on ends in a final state before the next
attempt is submitted: no orphan run is left behind. The shard's pre-assigned sequence number and
its atomic write make a resubmitted shard exactly-once.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

import httpx
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.states import Cancelled, Cancelling

from mmindex.pipeline.errors import ShardDispatchError
from mmindex.pipeline.ingest.units import RunDir
from mmindex.pipeline.io.root import parse_root

DEFAULT_SHARD_TIMEOUT_S = 3600.0
# The shard process stamps its run every HEARTBEAT_S; a run unstamped for LOST_AFTER_S is lost.
HEARTBEAT_S = 10.0
LOST_AFTER_S = 60.0
HEARTBEAT_LABEL = "mmindex.heartbeat"
# A run taken by a worker (PENDING) that never starts running: the worker died while submitting it.
STUCK_PENDING_S = 300.0
# How long a timed-out run's live worker gets to stop it before the run is forced to Cancelled.
CANCEL_GRACE_S = 60.0
WORKER_LABEL = "prefect.worker.name"


@dataclass(frozen=True, slots=True)
class ShardRun:
    """A shard's completed run: its id and the Prefect worker that ran it."""

    seq: int
    flow_run_id: str
    worker: str | None


@dataclass(frozen=True, slots=True)
class Abandoned:
    """Why a shard run will never end by itself, and whether its worker can still stop it."""

    reason: str
    worker_alive: bool


API_RETRY_DELAYS_S = (1.0, 2.0, 4.0, 8.0, 16.0)
T = TypeVar("T")


def _transient_api_error(exc: Exception) -> bool:
    """A Prefect API failure worth another try: the server busy (5xx) or unreachable for a moment."""
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code >= 500
    return isinstance(exc, httpx.TransportError)


def with_api_retries(call: Callable[[], T], sleep: Callable[[float], None] = time.sleep) -> T:
    """``call()``, tried again with backoff while the Prefect server answers 5xx (SQLite under load
    answers 503) or drops the connection; other errors, and the last transient one, are raised."""
    delays = iter(API_RETRY_DELAYS_S)
    while True:
        try:
            return call()
        except (httpx.HTTPStatusError, httpx.TransportError) as exc:
            delay = next(delays, None)
            if delay is None or not _transient_api_error(exc):
                raise
            sleep(delay)


def submit_shard_run(deployment: str, parameters: dict[str, Any], collection: str, idempotency_key: str,
                     sleep: Callable[[float], None] = time.sleep) -> FlowRun:
    """Create the shard's run of the deployment, retrying a busy or unreachable server under the same
    idempotency key, so a create that did reach the server gives back that run, never a second one."""
    def create() -> FlowRun:
        child: FlowRun = run_deployment(  # type: ignore[assignment]
            deployment, parameters=parameters, timeout=0, tags=["mmindex", f"collection:{collection}"],
            idempotency_key=idempotency_key)
        return child

    return with_api_retries(create, sleep)


def _now() -> datetime:
    return datetime.now(UTC)


def worker_of(flow_run: FlowRun) -> str | None:
    """The name of the Prefect worker that took ``flow_run`` (the label the worker sets on it)."""
    name = flow_run.labels.get(WORKER_LABEL) if flow_run.labels else None
    return str(name) if name is not None else None


def _last_sign_of_life(flow_run: FlowRun) -> datetime | None:
    """The shard process's last heartbeat stamp, else when the run started."""
    stamp = flow_run.labels.get(HEARTBEAT_LABEL) if flow_run.labels else None
    if stamp is not None:
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(str(stamp))
    return flow_run.start_time


@contextlib.contextmanager
def heartbeating() -> Iterator[None]:
    """Stamp this flow run with a heartbeat label every ``HEARTBEAT_S`` while the block runs
    (in the shard process; outside a flow run it does nothing)."""
    from prefect.runtime import flow_run as current

    flow_run_id = current.id
    if not flow_run_id:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        with get_client(sync_client=True) as client:
            while not stop.is_set():
                with contextlib.suppress(httpx.HTTPError, OSError):  # a missed beat is retried next time
                    client.update_flow_run_labels(UUID(str(flow_run_id)), {HEARTBEAT_LABEL: _now().isoformat()})
                stop.wait(HEARTBEAT_S)

    thread = threading.Thread(target=beat, name="mmindex-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=HEARTBEAT_S)


def why_abandoned(flow_run: FlowRun, shard_timeout: float | None, now: datetime) -> Abandoned | None:
    """Why a not-yet-final shard run will never end by itself (None while it may still)."""
    state = flow_run.state
    if state is None or state.is_scheduled():  # queued: waiting for a free worker is not a fault
        return None
    since = state.timestamp
    if state.is_pending() and since is not None and (now - since).total_seconds() > STUCK_PENDING_S:
        return Abandoned(f"lost: taken by worker {worker_of(flow_run) or '-'} but not started within "
                         f"{STUCK_PENDING_S:.0f}s", False)
    alive = _last_sign_of_life(flow_run)
    if state.is_running() and alive is not None and (now - alive).total_seconds() > LOST_AFTER_S:
        return Abandoned(f"lost: no heartbeat from its shard process for {(now - alive).total_seconds():.0f}s "
                         f"(worker {worker_of(flow_run) or '-'} or its machine died)", False)
    if state.is_running() and shard_timeout and flow_run.start_time is not None:
        running = (now - flow_run.start_time).total_seconds()
        if running > shard_timeout:
            return Abandoned(f"timed out after running {running:.0f}s (shard timeout {shard_timeout:.0f}s)", True)
    return None


def _end(client: SyncPrefectClient, flow_run: FlowRun, abandoned: Abandoned, poll_seconds: float) -> None:
    """Bring an abandoned run to a final state: a live worker is asked to stop it (Cancelling kills
    its process); a lost one cannot, so the run is set Cancelled directly."""
    message = f"mmindex: shard run abandoned ({abandoned.reason}); submitted again"
    if abandoned.worker_alive:
        with_api_retries(lambda: client.set_flow_run_state(flow_run.id, Cancelling(message=message), force=True))
        deadline = time.monotonic() + CANCEL_GRACE_S
        while time.monotonic() < deadline:
            current = with_api_retries(lambda: client.read_flow_run(flow_run.id))
            if current.state is not None and current.state.is_final():
                return
            time.sleep(poll_seconds)  # polling interval; the loop waits on the run's state
    with_api_retries(lambda: client.set_flow_run_state(flow_run.id, Cancelled(message=message), force=True))


def _watch(
    client: SyncPrefectClient, flow_run_id: UUID, shard_timeout: float | None, poll_seconds: float,
    shard_done: Callable[[], bool],
) -> tuple[FlowRun, Abandoned | None]:
    """Poll a shard run until it is final (None) or abandoned (why).

    A run that looks lost or late but whose shard is already done (``shard_done``: its outcome is
    written) is only finishing: it gets ``CANCEL_GRACE_S`` more to end by itself before it counts as
    abandoned, so a slow or overloaded server's missed heartbeats do not cancel a finished shard.
    """
    finishing_since: float | None = None
    while True:
        flow_run = with_api_retries(lambda: client.read_flow_run(flow_run_id))
        if flow_run.state is not None and flow_run.state.is_final():
            return flow_run, None
        abandoned = why_abandoned(flow_run, shard_timeout, _now())
        if abandoned is not None:
            if finishing_since is None and shard_done():
                finishing_since = time.monotonic()
            if finishing_since is None or time.monotonic() - finishing_since > CANCEL_GRACE_S:
                return flow_run, abandoned
        time.sleep(poll_seconds)  # polling interval; the loop waits on the run's state


def _final_message(flow_run: FlowRun) -> str:
    state = flow_run.state
    if state is None:
        return "no state"
    return f"{state.type.value}: {state.message}" if state.message else state.type.value


@task(name="dispatch-shard", task_run_name="dispatch-shard-{seq}", cache_policy=NO_CACHE)
def dispatch_shard(
    deployment: str, parameters: dict[str, Any], root: str, collection: str, run_id: str, seq: int,
    attempts: int, shard_timeout: float | None, poll_seconds: float,
) -> ShardRun:
    """Run one shard as a run of the embedding deployment; submit it again when that run crashes,
    fails, times out or loses its worker. Raises ``ShardDispatchError`` with the last run's error."""
    logger = get_run_logger()
    run_dir = RunDir(parse_root(root), collection, run_id)
    last_error = "never submitted"
    for attempt in range(1, attempts + 1):
        # The key makes the server answer a repeated create (an HTTP retry of the client under load)
        # with the same run instead of a second run of the same shard.
        child = submit_shard_run(deployment, parameters, collection, f"mmindex:{collection}:{run_id}:{seq}:{attempt}")
        with get_client(sync_client=True) as client:
            flow_run, abandoned = _watch(client, child.id, shard_timeout, poll_seconds,
                                         lambda: run_dir.read_outcome(seq) is not None)
            if abandoned is None and flow_run.state is not None and flow_run.state.is_completed():
                return ShardRun(seq, str(flow_run.id), worker_of(flow_run))
            if abandoned is not None:
                _end(client, flow_run, abandoned, poll_seconds)
                last_error = abandoned.reason
            else:
                last_error = _final_message(flow_run)
        if run_dir.read_outcome(seq) is not None:  # the shard got done before its run ended badly
            logger.warning("shard %d: done, though its run %s on worker %s ended %s", seq, flow_run.name,
                           worker_of(flow_run) or "-", last_error)
            return ShardRun(seq, str(flow_run.id), worker_of(flow_run))
        logger.warning("shard %d: run %s on worker %s %s (attempt %d of %d)", seq, flow_run.name,
                       worker_of(flow_run) or "-", last_error, attempt, attempts)
    raise ShardDispatchError(f"shard {seq} of run {run_id} did not complete in {attempts} attempts; "
                             f"last run: {last_error}")
