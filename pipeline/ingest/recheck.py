"""``index --recheck``: revalidate the URLs of unchanged manifest rows in their work unit.

Planning sends an unchanged row whose URL is http(s) to its work unit as a recheck job (the row,
and the catalog state of its item: the content sha256 and the validators its body came with).
The unit sends a conditional GET (``HttpFetcher.revalidate``: ``If-None-Match`` /
``If-Modified-Since``) with the fetch options of the item's source (the same guard, deadline,
size limit and retries), ``concurrency`` at a time, a window of ``4 x concurrency`` in flight,
in order. A 304 costs no body and nothing is written; a body whose sha256 is the stored one is
not re-embedded (only new validators are written, from the stored vectors); a body with another
sha256 is embedded as it is (never fetched twice). A failed revalidation keeps the stored item.
The check runs where the unit runs (a Prefect worker fetches its own shard's items).
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from mmindex.pipeline.embed.decode import sha256_hex
from mmindex.pipeline.errors import DecodeError
from mmindex.pipeline.ingest.units import ReuseJob
from mmindex.pipeline.sources.base import ItemRef, Validators
from mmindex.pipeline.sources.fetch import HttpFetcher
from mmindex.schemas.state import SourceSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Rechecked:
    """What revalidating one item found: the new body (None: not modified, or ``error``) and the
    validators to store."""

    job: ReuseJob
    body: bytes | None = None
    validators: Validators | None = None
    error: str | None = None

    @property
    def stored_validators(self) -> Validators:
        return Validators(self.job.stored.etag, self.job.stored.last_modified)

    @property
    def changed(self) -> bool:
        """A body came back whose content hash is not the stored one."""
        return self.body is not None and sha256_hex(self.body) != self.job.stored.sha256

    @property
    def new_validators(self) -> bool:
        """The server now identifies the same content with other validators (store them)."""
        return self.validators is not None and self.validators != self.stored_validators


def revalidate(jobs: Sequence[ReuseJob], sources: Mapping[str, SourceSpec]) -> Iterator[Rechecked]:
    """Revalidate each job's URL with its stored validators; results in the jobs' order."""
    if not jobs:
        return
    fetchers = {sid: HttpFetcher(spec.fetch) for sid in {job.ref.source_id for job in jobs}
                if (spec := sources.get(sid)) is not None}
    concurrency = max((fetcher.concurrency for fetcher in fetchers.values()), default=1)

    def one(job: ReuseJob) -> Rechecked:
        fetcher = fetchers.get(job.ref.source_id)
        if fetcher is None:
            return Rechecked(job, error=f"source {job.ref.source_id} is not known to this collection")
        try:
            found = fetcher.revalidate(job.ref.uri, Validators(job.stored.etag, job.stored.last_modified))
        except DecodeError as exc:
            return Rechecked(job, error=str(exc))
        return Rechecked(job, found.body, found.validators)

    pool = ThreadPoolExecutor(concurrency, thread_name_prefix="mmindex-recheck")
    try:
        queued = iter(jobs)
        pending: deque[Future[Rechecked]] = deque(pool.submit(one, job) for job in itertools.islice(queued, 4 * concurrency))
        while pending:
            done = pending.popleft().result()
            following = next(queued, None)
            if following is not None:
                pending.append(pool.submit(one, following))
            yield done
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for fetcher in fetchers.values():
            fetcher.close()


class FetchedBodies:
    """An ``ItemReader`` of bodies a recheck already fetched (each read once, then dropped)."""

    def __init__(self, found: Sequence[Rechecked]) -> None:
        self._bodies = {item.job.ref.key: item.body for item in found if item.body is not None}
        self._validators = {item.job.ref.key: item.validators for item in found}

    def read(self, ref: ItemRef, max_bytes: int) -> bytes:
        body = self._bodies.pop(ref.key, None)
        if body is None:
            raise DecodeError("no fetched body")
        if len(body) > max_bytes:
            raise DecodeError(f"body over {max_bytes} bytes")
        return body

    def validators(self, ref: ItemRef) -> Validators | None:
        validators = self._validators.pop(ref.key, None)
        return validators if validators is not None and validators.known else None

    def close(self) -> None:
        self._bodies.clear()
