"""Plan an incremental run: compare a crawl with the catalog (docs/ARCHITECTURE.md §2).

Per item, cheapest signal first: same size and mtime (and sidecar signature) -> unchanged (no
read); otherwise the content hash decides. A remote item (a manifest row: size unknown) is
unchanged when its row signature is; it is never read at planning time (with ``recheck``, an
unchanged row whose URL is http(s) goes to its work unit to be revalidated there: ``ingest/recheck.py``).
New items whose content
is already stored under another key (a rename or a copy) reuse the stored vectors. Items of the
crawled source that the crawl no longer finds are deleted. Only new and changed items (and failed ones being retried) need the model.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmindex.pipeline.io.catalog import Catalog, CatalogItem
from mmindex.pipeline.sources.base import UNKNOWN_SIZE, ItemRef
from mmindex.pipeline.timing import stage
from mmindex.schemas.items import STATUS_DELETED, STATUS_FAILED, STATUS_OK
from mmindex.schemas.state import RunCounts

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Reuse:
    """A crawled item whose content is already embedded under ``source`` (renamed or copied)."""

    ref: ItemRef
    source: CatalogItem
    renamed: bool


@dataclass(slots=True)
class ChangePlan:
    """What a run will do, item by item: for one part of a streamed plan (``plan_changes``)."""

    embed_new: list[ItemRef] = field(default_factory=list)
    embed_changed: list[ItemRef] = field(default_factory=list)
    retry_failed: list[ItemRef] = field(default_factory=list)
    reuse: list[Reuse] = field(default_factory=list)
    metadata_changed: list[tuple[ItemRef, CatalogItem]] = field(default_factory=list)
    restat: list[tuple[ItemRef, CatalogItem]] = field(default_factory=list)
    deleted: list[CatalogItem] = field(default_factory=list)
    previous: list[CatalogItem] = field(default_factory=list)  # the catalog state of changed and retried items
    # Unchanged fetched items to revalidate (``--recheck``), with their catalog state; counted in ``unchanged``.
    recheck: list[tuple[ItemRef, CatalogItem]] = field(default_factory=list)
    unchanged: int = 0
    failed_unchanged: int = 0

    @property
    def to_embed(self) -> list[ItemRef]:
        """Items the model must see."""
        return [*self.embed_new, *self.embed_changed, *self.retry_failed]

    def stored_rewrites(self) -> list[tuple[ItemRef, CatalogItem]]:
        """Items written again from stored vectors: touched, sidecar edited, renamed or copied."""
        return [*self.restat, *self.metadata_changed, *((reuse.ref, reuse.source) for reuse in self.reuse)]

    def counts(self) -> RunCounts:
        """The plan's counts, as `--dry-run` and `mmindex info` show them."""
        renamed_from = {reuse.source.item_key for reuse in self.reuse if reuse.renamed}
        renamed = len(renamed_from)
        return RunCounts(
            new=len(self.embed_new) + len(self.reuse) - renamed,
            changed=len(self.embed_changed) + len(self.metadata_changed),
            renamed=renamed,
            deleted=sum(1 for item in self.deleted if item.item_key not in renamed_from),
            unchanged=self.unchanged + len(self.restat),
            retried=len(self.retry_failed),
            failed_unchanged=self.failed_unchanged,
            rechecked=len(self.recheck),
        )

    def items(self) -> PlannedItems:
        """The paths behind ``counts``' new, changed, renamed and deleted."""
        renamed = [reuse for reuse in self.reuse if reuse.renamed]
        renamed_from = {reuse.source.item_key for reuse in renamed}
        return PlannedItems(
            new=[ref.path for ref in self.embed_new] + [reuse.ref.path for reuse in self.reuse if not reuse.renamed],
            changed=[ref.path for ref in self.embed_changed] + [ref.path for ref, _ in self.metadata_changed],
            renamed=[(reuse.source.path, reuse.ref.path) for reuse in renamed],
            deleted=[item.path for item in self.deleted if item.item_key not in renamed_from],
        )


@dataclass(slots=True)
class PlannedItems:
    """Which items a plan finds new, changed, renamed (from, to) and deleted, by path: what
    ``--dry-run`` lists (``ChangePlan.counts`` counts the same items)."""

    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def extend(self, other: PlannedItems) -> None:
        """Add the items of another source's plan."""
        self.new += other.new
        self.changed += other.changed
        self.renamed += other.renamed
        self.deleted += other.deleted

    def lines(self) -> dict[str, list[str]]:
        """Each kind's items as one line each (a rename as ``old -> new``)."""
        return {"new": self.new, "changed": self.changed,
                "renamed": [f"{old} -> {new}" for old, new in self.renamed], "deleted": self.deleted}

    def as_json(self) -> dict[str, list[str] | list[dict[str, str]]]:
        return {"new": self.new, "changed": self.changed,
                "renamed": [{"from": old, "to": new} for old, new in self.renamed], "deleted": self.deleted}


def content_sha256(path: str) -> str | None:
    """sha256 of a file's bytes, or None when it cannot be read (the embed step will say why)."""
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        log.debug("cannot hash %s: %s", path, exc)
        return None


def _is_regular(ref: ItemRef) -> bool:
    """A local regular file (a remote item is never read at planning time)."""
    import os
    import stat

    if not ref.is_local or ref.known_size is None:
        return False
    try:
        return stat.S_ISREG(os.stat(ref.uri).st_mode)
    except OSError:
        return False


def _same(left: pa.ChunkedArray | pa.Array, right: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Element-wise equality where two nulls are equal and null vs value is not."""
    both_null = pc.and_(pc.is_null(left), pc.is_null(right))
    return pc.or_(pc.fill_null(pc.equal(left, right), False), both_null)


def _settled(refs: list[ItemRef], known: pa.Table, retry_failed: bool) -> tuple[np.ndarray, np.ndarray]:
    """Masks over ``refs``: unchanged ok items, and failed items left as they are (``known``:
    the catalog's rows aligned with ``refs``).

    This is the whole cost of a no-op re-run, so it is vectorized: size, mtime and sidecar
    signature compared column-wise against the catalog.
    """
    sizes = pa.array([ref.size for ref in refs], type=pa.int64())
    same_size = pc.or_(_same(known.column("bytes"), sizes), pc.equal(sizes, UNKNOWN_SIZE))  # a URL: by signature
    same_stat = pc.and_(same_size, _same(known.column("mtime_ns"), pa.array([ref.mtime_ns for ref in refs],
                                                                              type=pa.int64())))
    same_sidecars = _same(known.column("sidecar_sig"), pa.array([ref.sidecar_sig for ref in refs], type=pa.string()))
    status = known.column("status")
    unchanged = pc.and_(pc.and_(same_stat, same_sidecars), pc.fill_null(pc.equal(status, STATUS_OK), False))
    failed_kept = pc.and_(pc.and_(same_stat, same_sidecars), pc.fill_null(pc.equal(status, STATUS_FAILED), False))
    if retry_failed:
        failed_kept = pc.and_(failed_kept, False)
    return unchanged.to_numpy(zero_copy_only=False), failed_kept.to_numpy(zero_copy_only=False)


PLAN_BATCH_ITEMS = 65_536


def plan_changes(
    refs: Iterable[ItemRef],
    catalog: Catalog,
    source_id: str,
    *,
    retry_failed: bool = False,
    delete_missing: bool = True,
    batch_items: int | None = None,
    recheck: bool = False,
) -> Iterator[ChangePlan]:
    """Classify every crawled item against the catalog of the collection version, streaming.

    The crawl is planned ``batch_items`` (default ``PLAN_BATCH_ITEMS``) at a time and each
    batch's plan is yielded as soon as it is made; the last plan yielded holds the deletions and
    the items that reuse stored vectors (both need the whole crawl). What stays in memory between batches is one flag per catalog
    item (seen by the crawl) and the new items that have a same-size stored twin (possible renames
    or copies, hashed at the end), so planning a manifest of millions of rows never holds its
    ``ItemRef``s at once. The parts' ``counts`` (and ``items``) add up to the whole plan's.
    With ``recheck``, unchanged items fetched over HTTP(S) are also listed to be revalidated.
    """
    batch_items = batch_items or PLAN_BATCH_ITEMS
    seen = np.zeros(len(catalog), dtype=bool)
    stored_sizes = _stored_ok_sizes(catalog)
    twin_candidates: list[ItemRef] = []
    iterator = iter(refs)
    while True:
        with stage("crawl"):
            batch = list(itertools.islice(iterator, batch_items))
        if not batch:
            break
        with stage("plan"):
            plan, candidates = _plan_batch(batch, catalog, seen, retry_failed, recheck)
            if candidates:
                sizes = pa.array([ref.size for ref in candidates], type=pa.int64())
                for ref, twin in zip(candidates, pc.is_in(sizes, value_set=stored_sizes).to_pylist(), strict=True):
                    (twin_candidates if twin else plan.embed_new).append(ref)
        yield plan
    with stage("plan"):
        last = _plan_vanished(catalog, source_id, seen, twin_candidates, delete_missing)
    yield last


def _plan_vanished(
    catalog: Catalog, source_id: str, seen: np.ndarray, twin_candidates: list[ItemRef], delete_missing: bool
) -> ChangePlan:
    """The last part of a plan: the source's catalog items the crawl did not see (deleted, or
    renamed to one of ``twin_candidates``), and the new items that reuse stored vectors."""
    items = catalog.items
    vanished_mask = pc.and_(
        pc.and_(pc.not_equal(items.column("status"), STATUS_DELETED), pc.equal(items.column("source_id"), source_id)),
        pa.array(~seen, type=pa.bool_()),
    )
    vanished = catalog.items_where(vanished_mask)
    last = ChangePlan()
    if delete_missing:
        last.deleted = vanished
    if twin_candidates:
        _match_reuse(last, twin_candidates, catalog, vanished)
    return last


def _stored_ok_sizes(catalog: Catalog) -> pa.Array:
    """The distinct sizes of the catalog's ok items (a new item of another size has no stored twin)."""
    items = catalog.items
    sizes = items.filter(pc.equal(items.column("status"), STATUS_OK)).column("bytes")
    return pc.unique(pc.drop_null(sizes.combine_chunks() if isinstance(sizes, pa.ChunkedArray) else sizes))


def _plan_batch(
    refs: list[ItemRef], catalog: Catalog, seen: np.ndarray, retry_failed: bool, recheck: bool = False
) -> tuple[ChangePlan, list[ItemRef]]:
    """One batch's plan, and its new items (not in the catalog, or deleted there); marks the
    catalog items the batch has in ``seen``."""
    plan = ChangePlan()
    positions = catalog.positions(pa.array([ref.key for ref in refs], type=pa.string()))
    found = positions.is_valid().to_numpy(zero_copy_only=False)
    seen[positions.drop_null().to_numpy()] = True
    unchanged, failed_kept = _settled(refs, catalog.lookup_positions(positions), retry_failed)
    plan.unchanged = int(unchanged.sum())
    plan.failed_unchanged = int(failed_kept.sum())
    if recheck:
        for index in np.flatnonzero(unchanged):
            ref = refs[index]
            if ref.uri[:8].lower().startswith(("http://", "https://")):
                plan.recheck.append((ref, catalog.item_at(positions[index].as_py())))
    candidates: list[ItemRef] = []
    for index in np.flatnonzero(~(unchanged | failed_kept)):
        ref = refs[index]
        known = catalog.item_at(positions[index].as_py()) if found[index] else None
        if known is None or not known.is_live:
            candidates.append(ref)
            continue
        if known.status == STATUS_FAILED:
            (plan.retry_failed if retry_failed else plan.embed_changed).append(ref)
        elif (known.size, known.mtime_ns) != (ref.size, ref.mtime_ns) and _sha(ref) != known.sha256:
            plan.embed_changed.append(ref)
        elif ref.sidecar_sig != known.sidecar_sig:
            plan.metadata_changed.append((ref, known))
            continue
        else:
            plan.restat.append((ref, known))
            continue
        plan.previous.append(known)
    return plan, candidates


def _sha(ref: ItemRef) -> str | None:
    return content_sha256(ref.uri) if _is_regular(ref) else None


def _match_reuse(plan: ChangePlan, candidates: list[ItemRef], catalog: Catalog, vanished: list[CatalogItem]) -> None:
    """Send each new item either to the model or to a stored twin with the same content.

    Only items whose size matches a stored ok item are hashed here, so a first full ingest
    reads nothing twice.
    """
    items = catalog.items
    sizes = pa.array(sorted({ref.size for ref in candidates}), type=pa.int64())
    same_size = pc.and_(pc.equal(items.column("status"), STATUS_OK), pc.is_in(items.column("bytes"), value_set=sizes))
    stored_by_size: dict[int, list[CatalogItem]] = defaultdict(list)
    for item in catalog.items_where(same_size):
        stored_by_size[item.size or 0].append(item)
    vanished_keys = {item.item_key for item in vanished}
    claimed: set[str] = set()
    for ref in candidates:
        twins = [item for item in stored_by_size.get(ref.size, ()) if item.modality == ref.modality]
        digest = _sha(ref) if twins else None
        matches = [item for item in twins if digest is not None and item.sha256 == digest]
        if not matches:
            plan.embed_new.append(ref)
            continue
        # Prefer a vanished twin (a rename), each claimed once; else any twin (a copy).
        renamed_from = next((m for m in matches if m.item_key in vanished_keys and m.item_key not in claimed), None)
        if renamed_from is not None:
            claimed.add(renamed_from.item_key)
            plan.reuse.append(Reuse(ref, renamed_from, renamed=True))
        else:
            plan.reuse.append(Reuse(ref, matches[0], renamed=False))
