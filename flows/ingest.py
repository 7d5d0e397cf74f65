"""The Prefect ingest flow: ``mmindex index`` as plan → one task per shard → finalize (docs/ARCHITECTURE.md §5).

The tasks are thin: they call the same ``pipeline.ingest`` functions as the CLI (``plan_run``,
then a ``RunSession``'s ``process`` and ``finalize``). A task's input is a reference (root, collection, run id,
shard seq), never arrays. Shard tasks retry with backoff on I/O failures (store unreachable or
busy, file system errors); items that fail to decode are already rows with a reason and are
never retried here.

Without ``embed_deployment`` every shard runs in this flow's process. With it (e.g.
``embed-shard/embed-shard``, a deployment of ``embed_shard`` on a ``gpu`` work pool), each shard
becomes a run of that deployment, picked up by whichever worker of the pool is free; a run that
crashes or fails (a worker died mid-shard) is submitted again, and the shard's pre-assigned
sequence number plus its atomic write make it exactly-once.
"""

# No ``from __future__ import annotations`` here: Prefect builds the flows' parameter models from
# the annotations at run time, and a string ``IndexOptions`` would not resolve there.
import contextlib
import dataclasses
import hashlib
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.futures import PrefectFuture, wait
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import Task

from mmindex.flows.dispatch import DEFAULT_SHARD_TIMEOUT_S, ShardRun, dispatch_shard, heartbeating
from mmindex.flows.params import check_allowed, check_flow_options, check_no_credentials
from mmindex.pipeline.embed.model import Embedder, ModelSpec
from mmindex.pipeline.errors import ShardDispatchError, StoreUnavailableError
from mmindex.pipeline.ingest.options import IndexOptions
from mmindex.pipeline.ingest.report import index_report_json, index_report_markdown
from mmindex.pipeline.ingest.run import (
    IndexReport,
    IndexRequest,
    PlannedRun,
    RunSession,
    holding_ingest_lock,
    plan_run,
    preflight,
)
from mmindex.pipeline.ingest.units import UnitOutcome, run_outcomes
from mmindex.pipeline.io.root import StoragePath, is_remote
from mmindex.schemas.config import Settings, load_settings

IO_RETRIES = 3
IO_RETRY_DELAYS = [2.0, 10.0, 30.0]
MAX_SHARDS_IN_FLIGHT = 32
DEFAULT_EMBED_DEPLOYMENT = "embed-shard/embed-shard"


def retry_on_io(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry transient I/O failures (store unreachable or busy, file system errors), nothing else."""
    return isinstance(state.result(raise_on_failure=False), (StoreUnavailableError, OSError))


class _DoneEvent:
    """Stands in for the completion event of a Prefect service in a forked child (already done)."""

    def is_set(self) -> bool:
        return True


def _services_done_in_child() -> None:
    from prefect._internal.concurrency import services

    for service in list(services._active_services):
        if service._done_event is None:
            service._done_event = _DoneEvent()  # type: ignore[assignment]


_fork_guard = threading.Lock()
_fork_guard_installed = False


def _guard_forked_children() -> None:
    """Work around a Prefect 3.8 bug: in a process forked while Prefect's log/event services run
    (DataLoader decode workers of a shard), Prefect resets the services after the fork but still
    drains them at exit, fails an assertion there and the child exits with status 1, which
    DataLoader reports as a crashed worker. Marking the reset services as drained (a hook that
    runs after Prefect's own) lets forked children exit cleanly."""
    global _fork_guard_installed
    with _fork_guard:
        if not _fork_guard_installed:
            os.register_at_fork(after_in_child=_services_done_in_child)
            _fork_guard_installed = True


_embedders: dict[tuple[str, str | None, str, str], Embedder] = {}
_embedders_lock = threading.Lock()


def _cached_embedder(spec: ModelSpec, settings: Settings) -> Embedder:
    """One loaded model per process (shard tasks of one flow run share it)."""
    from mmindex.pipeline.embed.model import load_embedder

    key = (spec.name, spec.pretrained, settings.device, settings.precision)
    with _embedders_lock:
        if key not in _embedders:
            _embedders[key] = load_embedder(spec, settings.device, settings.precision)
        return _embedders[key]


@dataclass(frozen=True, slots=True)
class ShardDone:
    """What a shard task returns: a reference to its outcome, not the data."""

    seq: int
    shard: str | None
    worker: str
    failed: int
    reapplied: bool


@task(name="plan", retries=IO_RETRIES, retry_delay_seconds=IO_RETRY_DELAYS, retry_condition_fn=retry_on_io,
      cache_policy=NO_CACHE)
def plan_task(request: IndexRequest, settings: Settings) -> PlannedRun:
    """Crawl, plan against the catalog, write the run plan (one unit per shard)."""
    _guard_forked_children()
    return plan_run(request, settings, loader=_cached_embedder)


@task(name="shard", task_run_name="shard-{seq}", retries=IO_RETRIES, retry_delay_seconds=IO_RETRY_DELAYS,
      retry_condition_fn=retry_on_io, cache_policy=NO_CACHE)
def shard_task(settings: Settings, collection: str, run_id: str, seq: int) -> ShardDone:
    """Decode, embed, write the shard's Parquet file, upsert it (idempotent; see ``RunSession.process``)."""
    _guard_forked_children()
    with RunSession(settings, collection, run_id, loader=_cached_embedder) as session:
        outcome = session.process(seq)
    return ShardDone(outcome.seq, outcome.shard, outcome.worker, outcome.counts.failed, outcome.reapplied)


@task(name="finalize", retries=IO_RETRIES, retry_delay_seconds=IO_RETRY_DELAYS, retry_condition_fn=retry_on_io,
      cache_policy=NO_CACHE)
def finalize_task(settings: Settings, collection: str, run_id: str) -> IndexReport:
    """Mark the run's shards applied, materialize the catalog, optimize, record the run, label."""
    _guard_forked_children()
    with RunSession(settings, collection, run_id, loader=_cached_embedder) as session:
        return session.finalize()


@flow(name="embed-shard", flow_run_name="embed-shard-{collection}-{seq}")
def embed_shard(
    root: str,
    collection: str,
    run_id: str,
    seq: int,
    qdrant_url: str | None = None,
    device: str | None = None,
    precision: str | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
) -> int:
    """One shard of a planned run, on whichever worker picks it up (deploy on the ``gpu`` pool).

    Settings not given here come from the worker's environment (``MMINDEX_*``, ``QDRANT_URL``,
    ``QDRANT_API_KEY``: secrets never travel as parameters). Returns the shard's seq.
    """
    check_allowed("root", root)
    check_no_credentials("qdrant_url", qdrant_url)
    settings = load_settings(root=root or None, device=device, precision=precision, batch_size=batch_size,
                             workers=workers, qdrant_url=qdrant_url)
    with heartbeating():  # the dispatcher's sign that this process (and its worker) is alive
        return shard_task(settings, collection, run_id, seq).seq


def root_limit_name(root: StoragePath) -> str:
    """The Prefect global concurrency limit that lets one ingest at a time write an object-storage root."""
    return "mmindex-root-" + hashlib.sha256(str(root).encode("utf-8")).hexdigest()[:16]


@contextlib.contextmanager
def one_writer_per_root(settings: Settings) -> Iterator[None]:
    """Hold the root's writer slot from planning to finalize when the root is on object storage.

    An object store holds no file lock, so there the coordination is Prefect's: a global
    concurrency limit of 1 per root (created on first use), taken with a lease that expires if
    this flow run dies. A second ingest into the same root waits for the slot. Local roots use
    their file locks instead and skip this.
    """
    if not is_remote(settings.root):
        yield
        return
    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectAlreadyExists

    name = root_limit_name(settings.root)
    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.upsert_global_concurrency_limit_by_name(name, 1)  # two first runs may race to create it
    with concurrency(name, occupy=1, strict=True):
        yield


def _artifact_key(collection: str) -> str:
    return "mmindex-ingest-" + re.sub(r"[^a-z0-9-]+", "-", collection.lower()).strip("-")


def _settled(futures: list[PrefectFuture[ShardRun]], collection: str, run_id: str) -> dict[int, ShardRun]:
    """The completed shard runs by seq; when some shards never completed, an artifact names each
    with its last run's error and the ingest fails with the first of them."""
    done: dict[int, ShardRun] = {}
    errors: list[str] = []
    for future in futures:
        state = future.state
        if state.is_completed():
            shard_run = future.result()
            done[shard_run.seq] = shard_run
        else:
            errors.append(str(state.result(raise_on_failure=False)))
    if errors:
        lines = [f"## mmindex ingest into {collection}: run {run_id} incomplete", "",
                 f"{len(errors)} of {len(futures)} shard(s) did not complete:", ""]
        lines += [f"- `{error.replace('`', chr(39))}`" for error in errors]
        create_markdown_artifact(key=_artifact_key(collection), markdown="\n".join(lines),
                                 description=f"mmindex ingest into {collection} (incomplete)")
        raise ShardDispatchError(errors[0] if len(errors) == 1 else f"{errors[0]} (and {len(errors) - 1} more)")
    return done


def _named_workers(outcomes: list[UnitOutcome], shard_runs: dict[int, ShardRun]) -> list[UnitOutcome]:
    """Outcomes whose worker is the Prefect worker's name (``host:pid`` of the shard process after it)."""
    named = []
    for outcome in outcomes:
        shard_run = shard_runs.get(outcome.seq)
        if shard_run is not None and shard_run.worker:
            outcome = dataclasses.replace(outcome, worker=f"{shard_run.worker} ({outcome.worker})")
        named.append(outcome)
    return named


@flow(name="mmindex-ingest", task_runner=ThreadPoolTaskRunner(max_workers=MAX_SHARDS_IN_FLIGHT))  # type: ignore[arg-type]
def ingest_flow(
    options: IndexOptions,
    embed_deployment: str | None = None,
    shard_attempts: int = 3,
    shard_timeout: float | None = DEFAULT_SHARD_TIMEOUT_S,
    poll_seconds: float = 5.0,
) -> dict[str, Any]:
    """``mmindex index`` as a flow: ``options`` are the command's options (one ``IndexOptions``,
    the same model as the CLI's flags), plus where shards run: ``embed_deployment`` (e.g.
    ``embed-shard/embed-shard`` on the ``gpu`` pool) or, when unset, this process.
    Returns the run report (``mmindex index --json``)."""
    logger = get_run_logger()
    check_flow_options(options)
    settings = options.settings()
    request = options.request()
    collection = options.collection
    if options.dry_run:
        return index_report_json(plan_task(request, settings).report)
    # Before the lock and any model load: a run that cannot start leaves nothing. Shards that run on
    # workers embed with the workers' device, so this process checks only what planning loads.
    preflight(request, settings, embeds_here=embed_deployment is None)
    with one_writer_per_root(settings), holding_ingest_lock(settings, collection):
        planned = plan_task(request, settings)
        run = planned.run
        if run is None:  # only a dry run has no run plan
            return index_report_json(planned.report)
        logger.info("run %s: %d shard(s) to process for %s", run.run_id, len(run.seqs), collection)
        shard_runs: dict[int, ShardRun] = {}
        if embed_deployment:
            shard_params = [
                {"root": str(settings.root), "collection": collection, "run_id": run.run_id, "seq": seq,
                 "qdrant_url": options.qdrant_url, "device": options.device, "precision": options.precision,
                 "batch_size": options.batch_size, "workers": options.workers}
                for seq in run.seqs
            ]
            futures = [
                dispatch_shard.submit(embed_deployment, params, str(settings.root), collection, run.run_id, params["seq"],  # type: ignore[arg-type]
                                      shard_attempts, shard_timeout, poll_seconds)
                for params in shard_params
            ]
            wait(futures)  # every shard settles before the lock is released, even when one failed
            shard_runs = _settled(futures, collection, run.run_id)
        else:
            for seq in run.seqs:
                shard_task(settings, collection, run.run_id, seq)
        report = finalize_task(settings, collection, run.run_id)
    outcomes = _named_workers(run_outcomes(settings.root, collection, run.run_id), shard_runs)
    create_markdown_artifact(key=_artifact_key(collection), markdown=index_report_markdown(report, outcomes),
                             description=f"mmindex ingest into {collection}")
    logger.info("indexed %d items into %s (%d embedded, %d failed) in %.1fs", report.items_seen, collection,
                report.counts.embedded, report.counts.failed, report.seconds)
    return index_report_json(report)
