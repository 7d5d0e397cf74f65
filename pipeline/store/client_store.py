"""``VectorStore`` over qdrant-client: a Qdrant server or cluster by URL, or the client's in-process mode.

The in-process mode (``ClientStore.in_memory()`` / ``ClientStore.local(path)``) implements the same
API in Python and stands in for a server in tests; it ignores payload indexes (filters are
evaluated by scanning), which changes speed, never answers.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from mmindex.pipeline.errors import CollectionNotFoundError, ConfigError, MmindexError, SchemaMismatchError, StoreUnavailableError
from mmindex.pipeline.redact import redact_secrets
from mmindex.pipeline.store._filter_translate import translate_filter
from mmindex.pipeline.store.filters import PayloadFilter
from mmindex.pipeline.store.retrying import ATTEMPTS, RetryingTransport
from mmindex.pipeline.store.store import (
    CLIP_VECTOR,
    SCROLL_PAGE,
    SPARSE_VECTOR,
    TEXT_VECTOR,
    UPSERT_BATCH,
    CollectionSpec,
    MmrParams,
    PayloadUpdate,
    PointBatch,
    ScrollPage,
    SearchHit,
    SparseVector,
    StoredPoint,
    TextSearch,
    canonical_id,
)
from mmindex.pipeline.store.vectors import (
    check_text_vectors,
    named_vector,
    point_vectors,
    stored_points,
    text_branches,
    vector_list,
    vector_matrix,
)
from mmindex.schemas.payload import FieldType

logger = logging.getLogger(__name__)

_SCHEMA_TYPES: dict[FieldType, models.PayloadSchemaType] = {
    FieldType.KEYWORD: models.PayloadSchemaType.KEYWORD,
    FieldType.INTEGER: models.PayloadSchemaType.INTEGER,
    FieldType.FLOAT: models.PayloadSchemaType.FLOAT,
}
# qdrant-client's local mode warns on every create_payload_index; the index is simply not needed there.
_LOCAL_INDEX_WARNING = r"Payload indexes have no effect in the local Qdrant"


class _ClientFilterBuilders:
    """qdrant-client constructors for ``translate_filter``."""

    def filter(self, must: list[Any] | None, should: list[Any] | None, must_not: list[Any] | None) -> Any:
        return models.Filter(must=must, should=should, must_not=must_not)

    def match_value(self, key: str, value: str | int) -> Any:
        return models.FieldCondition(key=key, match=models.MatchValue(value=value))

    def match_any(self, key: str, values: list[str] | list[int]) -> Any:
        return models.FieldCondition(key=key, match=models.MatchAny(any=values))

    def range(self, key: str, gte: float | None, gt: float | None, lte: float | None, lt: float | None) -> Any:
        return models.FieldCondition(key=key, range=models.Range(gte=gte, gt=gt, lte=lte, lt=lt))

    def has_id(self, ids: list[str]) -> Any:
        return models.HasIdCondition(has_id=list[models.ExtendedPointId](ids))


_BUILDERS = _ClientFilterBuilders()


def client_filter(payload_filter: PayloadFilter | None, exclude_ids: Sequence[str] = ()) -> models.Filter | None:
    """The qdrant-client filter of a ``PayloadFilter`` minus ``exclude_ids`` (``None`` for no filter)."""
    return translate_filter(payload_filter, _BUILDERS, exclude_ids=exclude_ids)


@dataclass(frozen=True, slots=True)
class _VectorInfo:
    """The named vector of a collection, read once from the server."""

    name: str
    dim: int
    text_dim: int | None = None


def _delete_alias(name: str) -> models.DeleteAliasOperation:
    return models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=name))


def _client_sparse(sparse: SparseVector) -> models.SparseVector:
    return models.SparseVector(indices=list(sparse.indices), values=list(sparse.values))


def _client_points(batch: PointBatch, info: _VectorInfo, collection: str) -> Iterator[models.PointStruct]:
    """qdrant-client points of a batch (its CLIP vectors converted in one call)."""
    vectors = vector_matrix(batch.vectors, info.dim, collection).tolist()
    for row, (point_id, vector, payload) in enumerate(zip(batch.ids, vectors, batch.payloads, strict=True)):
        text_vector, sparse = batch.rag_vectors(row)
        named = point_vectors(vector, text_vector, sparse, info.name, info.text_dim, collection, _client_sparse)
        yield models.PointStruct(id=point_id, vector=named, payload=payload)


def _short(exc: Exception) -> str:
    """An error from qdrant-client in a few words (an unexpected answer: its status, not its body)."""
    if isinstance(exc, ResourceExhaustedResponse):
        return f"HTTP 429 (rate limited; the server asks to retry after {exc.retry_after_s} s)"
    if isinstance(exc, UnexpectedResponse):
        return f"HTTP {exc.status_code} {exc.reason_phrase}".strip()
    return str(exc)


class ClientStore:
    """Qdrant through qdrant-client (remote server, cluster, or in-process local mode)."""

    def __init__(self, client: QdrantClient, location: str = "qdrant-client", secret: str | None = None) -> None:
        """Wrap a client; ``location`` names it in error messages, ``secret`` is redacted from them."""
        self.client = client
        self.location = location
        self._secret = secret
        self._vectors: dict[str, _VectorInfo] = {}
        # How many times each request was tried before an error reaches us (a server: RetryingTransport).
        self.attempts = 1
        # Processes ``upsert_batches`` uploads from (qdrant-client's ``parallel``; servers only).
        self.upload_parallel = 1

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def connect(cls, url: str, api_key: str | None, timeout: float = 10.0) -> ClientStore:
        """A store on the Qdrant server at ``url``, checked reachable once (``get_collections``)."""
        try:
            client = QdrantClient(url=url, api_key=api_key, timeout=max(1, round(timeout)), check_compatibility=False,
                                  transport=RetryingTransport())
        except ValueError as exc:
            raise StoreUnavailableError(f"invalid Qdrant URL {url!r}: {exc}") from None
        url = redact_secrets(url)  # from here on it only names the server, in messages and logs
        store = cls(client, location=url, secret=api_key)
        store.attempts = ATTEMPTS
        try:
            client.get_collections()
        except UnexpectedResponse as exc:
            client.close()
            hint = " (check the API key)" if exc.status_code in (401, 403) else ""
            message = f"Qdrant at {url} refused the request: HTTP {exc.status_code}{hint}"
            raise StoreUnavailableError(store._redact(message)) from None
        except (ResponseHandlingException, ResourceExhaustedResponse, OSError) as exc:
            client.close()
            raise StoreUnavailableError(store._redact(f"cannot reach Qdrant at {url}: {_short(exc)}")) from None
        logger.info("connected to Qdrant at %s", url)
        return store

    @classmethod
    def in_memory(cls) -> ClientStore:
        """qdrant-client's in-process mode, in memory (tests)."""
        return cls(QdrantClient(location=":memory:"), location=":memory:")

    @classmethod
    def local(cls, path: Path) -> ClientStore:
        """qdrant-client's in-process mode persisted under ``path`` (one client per folder)."""
        try:
            client = QdrantClient(path=str(path))
        except RuntimeError as exc:  # the folder is locked by another client
            raise StoreUnavailableError(f"cannot open local Qdrant storage {path}: {exc}") from None
        return cls(client, location=str(path))

    # -- helpers ---------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _gave_up(self, name: str, what: str, exc: Exception) -> str:
        tries = f" ({self.attempts} attempts)" if self.attempts > 1 else ""
        return f"Qdrant at {self.location}: {what} {name!r} failed{tries}: {_short(exc)}"

    @contextmanager
    def _calling(self, name: str, what: str) -> Iterator[None]:
        """Translate client failures: unreachable -> StoreUnavailableError, missing -> CollectionNotFoundError."""
        try:
            yield
        except MmindexError:
            raise
        except (ResponseHandlingException, ResourceExhaustedResponse) as exc:
            raise StoreUnavailableError(self._redact(self._gave_up(name, what, exc))) from None
        except UnexpectedResponse as exc:
            if exc.status_code is not None and (exc.status_code == 429 or exc.status_code >= 500):
                raise StoreUnavailableError(self._redact(self._gave_up(name, what, exc))) from None
            if exc.status_code == 404 or not self.collection_exists(name):
                self._vectors.pop(name, None)
                raise CollectionNotFoundError(f"collection {name!r} not found in Qdrant at {self.location}") from exc
            detail = exc.content.decode("utf-8", "replace")[:300]
            message = f"Qdrant at {self.location} refused to {what} {name!r}: HTTP {exc.status_code}: {detail}"
            raise StoreUnavailableError(self._redact(message)) from None
        except (ValueError, KeyError) as exc:
            # Remote answers 404, local mode raises ValueError: ask once, on this failure path only.
            if not self.collection_exists(name):
                self._vectors.pop(name, None)
                raise CollectionNotFoundError(f"collection {name!r} not found in Qdrant at {self.location}") from exc
            raise

    def _vector_info(self, name: str) -> _VectorInfo:
        """The collection's named vector (cached per store)."""
        if name not in self._vectors:
            with self._calling(name, "describe"):
                vectors = self.client.get_collection(name).config.params.vectors
            if isinstance(vectors, dict) and CLIP_VECTOR in vectors and TEXT_VECTOR in vectors:
                text = vectors[TEXT_VECTOR]
                self._vectors[name] = _VectorInfo(CLIP_VECTOR, int(vectors[CLIP_VECTOR].size), int(text.size))
                return self._vectors[name]
            if not isinstance(vectors, dict) or len(vectors) != 1:
                raise SchemaMismatchError(
                    f"collection {name!r} in {self.location} does not have exactly one named vector"
                )
            (vector_name, params), = vectors.items()
            self._vectors[name] = _VectorInfo(vector_name, int(params.size))
        return self._vectors[name]

    # -- collections -----------------------------------------------------------------------

    def collection_exists(self, name: str) -> bool:
        """Whether the collection exists."""
        try:
            return bool(self.client.collection_exists(name))
        except (ResponseHandlingException, UnexpectedResponse, ResourceExhaustedResponse) as exc:
            raise StoreUnavailableError(self._redact(f"cannot reach Qdrant at {self.location}: {_short(exc)}")) from None

    def create_collection(self, name: str, spec: CollectionSpec) -> None:
        """Create the collection (one named cosine vector) and its payload indexes; error if it exists."""
        if self.collection_exists(name):
            raise MmindexError(f"collection {name!r} already exists in Qdrant at {self.location}")
        vectors = {spec.vector_name: models.VectorParams(size=spec.dim, distance=models.Distance.COSINE)}
        sparse = None
        if spec.text_dim is not None:
            vectors[TEXT_VECTOR] = models.VectorParams(size=spec.text_dim, distance=models.Distance.COSINE)
            sparse = {SPARSE_VECTOR: models.SparseVectorParams(modifier=models.Modifier.IDF)}
        with self._calling(name, "create"):
            self.client.create_collection(name, vectors_config=vectors, sparse_vectors_config=sparse)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=_LOCAL_INDEX_WARNING, category=UserWarning)
                for field_name, kind in spec.indexed_fields.items():
                    self.client.create_payload_index(name, field_name, _SCHEMA_TYPES[kind], wait=True)
        self._vectors[name] = _VectorInfo(spec.vector_name, spec.dim, spec.text_dim)
        logger.info("created collection %r (%d-d %r) in %s", name, spec.dim, spec.vector_name, self.location)

    def drop_collection(self, name: str) -> None:
        """Delete the collection (the one an alias of this name points to, and the alias); no error
        if it does not exist."""
        self._vectors.pop(name, None)
        target = self._alias_target(name)
        with self._calling(name, "drop"):
            if target is not None:
                self.client.update_collection_aliases([_delete_alias(name)])
                self.client.delete_collection(target)
            self.client.delete_collection(name)

    def _alias_target(self, name: str) -> str | None:
        """The collection an alias called ``name`` points to (None: no such alias)."""
        with self._calling(name, "list the aliases of"):
            aliases = self.client.get_aliases().aliases
        return next((alias.collection_name for alias in aliases if alias.alias_name == name), None)

    def replace_collection(self, name: str, replacement: str) -> None:
        """Point the alias ``name`` at ``replacement`` in one alias operation, then drop the collection
        it pointed to. (Qdrant cannot rename a collection: the first replace of a plain collection
        drops it just before the alias takes its name.)"""
        if not self.client.collection_exists(replacement):
            raise CollectionNotFoundError(f"collection {replacement!r} not found in Qdrant at {self.location}")
        previous = self._alias_target(name)
        operations: list[models.DeleteAliasOperation | models.CreateAliasOperation] = []
        with self._calling(name, "replace"):
            if previous is not None:
                operations.append(_delete_alias(name))
            else:
                self.client.delete_collection(name)
            operations.append(models.CreateAliasOperation(
                create_alias=models.CreateAlias(collection_name=replacement, alias_name=name)))
            self.client.update_collection_aliases(operations)
            if previous is not None and previous != replacement:
                self.client.delete_collection(previous)
        self._vectors.pop(name, None)
        logger.info("collection %r is now %r in %s", name, replacement, self.location)

    def list_collections(self) -> list[str]:
        """Names of all collections, sorted (a collection behind an alias by the alias's name)."""
        try:
            names = {collection.name for collection in self.client.get_collections().collections}
            aliases = {alias.alias_name: alias.collection_name for alias in self.client.get_aliases().aliases}
        except (ResponseHandlingException, UnexpectedResponse, ResourceExhaustedResponse) as exc:
            raise StoreUnavailableError(self._redact(f"cannot reach Qdrant at {self.location}: {_short(exc)}")) from None
        return sorted((names - set(aliases.values())) | set(aliases))

    # -- points ----------------------------------------------------------------------------

    def upsert(self, name: str, batch: PointBatch) -> None:
        """Write a batch in requests of ``UPSERT_BATCH`` points, each acknowledged (``wait=True``)."""
        if not len(batch):
            return
        points = list(_client_points(batch, self._vector_info(name), name))
        for start in range(0, len(points), UPSERT_BATCH):
            with self._calling(name, "upsert into"):
                self.client.upsert(name, points=points[start : start + UPSERT_BATCH], wait=True)
        logger.debug("upserted %d points into %r", len(batch), name)

    def upsert_batches(
        self, name: str, batches: Iterable[PointBatch], optimize: bool = False, create: CollectionSpec | None = None
    ) -> int:
        """Bulk load with qdrant-client's uploader (``UPSERT_BATCH`` points a request, each acknowledged).

        Per Qdrant's guidance for bulk uploads, a server's collection has vector indexing switched
        off (``indexing_threshold`` 0) during the load and its previous threshold restored at the
        end (also when the load fails), so the server builds the HNSW index once instead of while
        points arrive. (A process killed mid-load leaves indexing off: running the rebuild again
        restores it. The local mode has no such setting.) ``upload_parallel`` > 1 uploads from that many processes.
        ``optimize`` changes nothing here: the server builds its indexes in the background.
        ``create`` creates the collection first (``create_collection``).
        """
        if create is not None:
            self.create_collection(name, create)
        info = self._vector_info(name)
        counted = [0]

        def points() -> Iterator[models.PointStruct]:
            for batch in batches:
                counted[0] += len(batch)
                yield from _client_points(batch, info, name)

        with self._indexing_deferred(name), self._calling(name, "upload into"):
            self.client.upload_points(name, points(), batch_size=UPSERT_BATCH, parallel=self.upload_parallel,
                                      wait=True)
        logger.debug("bulk-loaded %d points into %r", counted[0], name)
        return counted[0]

    @contextmanager
    def _indexing_deferred(self, name: str) -> Iterator[None]:
        """Vector indexing off (``indexing_threshold`` 0) inside the block, the previous value after it."""
        with self._calling(name, "describe"):
            previous = self.client.get_collection(name).config.optimizer_config.indexing_threshold
        if not previous:
            yield
            return
        with self._calling(name, "configure"):
            self.client.update_collection(name, optimizers_config=models.OptimizersConfigDiff(indexing_threshold=0))
        try:
            yield
        finally:
            with self._calling(name, "configure"):
                self.client.update_collection(
                    name, optimizers_config=models.OptimizersConfigDiff(indexing_threshold=previous)
                )

    def delete(self, name: str, ids: Sequence[str]) -> None:
        """Delete points by id; unknown ids are ignored."""
        if not ids:
            return
        for start in range(0, len(ids), UPSERT_BATCH):
            selector = models.PointIdsList(points=list(ids[start : start + UPSERT_BATCH]))
            with self._calling(name, "delete from"):
                self.client.delete(name, points_selector=selector, wait=True)

    def search(
        self,
        name: str,
        vector: np.ndarray,
        limit: int,
        payload_filter: PayloadFilter | None = None,
        with_vectors: bool = False,
        *,
        score_threshold: float | None = None,
        exclude_ids: Sequence[str] = (),
        mmr: MmrParams | None = None,
    ) -> list[SearchHit]:
        """Nearest points by cosine similarity (higher is closer), best first, filtered.

        With ``mmr`` the query is a ``NearestQuery`` with Qdrant's MMR: MMR's order, cosine scores.
        """
        info = self._vector_info(name)
        query = vector_list(vector, info.dim, name)
        if limit <= 0:
            return []
        scoring: Any = query
        if mmr is not None:
            diversify = models.Mmr(diversity=mmr.diversity, candidates_limit=max(mmr.candidates, limit))
            scoring = models.NearestQuery(nearest=query, mmr=diversify)
        return self._query(name, info, scoring, limit, client_filter(payload_filter, exclude_ids),
                           with_vectors, score_threshold)

    def _query(
        self,
        name: str,
        info: _VectorInfo,
        scoring: Any,
        limit: int,
        point_filter: models.Filter | None,
        with_vectors: bool,
        score_threshold: float | None,
    ) -> list[SearchHit]:
        with self._calling(name, "search"):
            response = self.client.query_points(
                name,
                query=scoring,
                using=info.name,
                query_filter=point_filter,
                limit=limit,
                score_threshold=score_threshold,
                with_payload=True,
                with_vectors=[info.name] if with_vectors else False,
            )
        return [
            SearchHit(
                id=str(point.id),
                score=float(point.score),
                payload=dict(point.payload or {}),
                vector=named_vector(point.vector, info.name) if with_vectors else None,
            )
            for point in response.points
        ]

    def recommend(
        self,
        name: str,
        positive_ids: Sequence[str],
        limit: int,
        payload_filter: PayloadFilter | None = None,
        with_vectors: bool = False,
        *,
        negative_ids: Sequence[str] = (),
        score_threshold: float | None = None,
    ) -> list[SearchHit]:
        """Points like the stored examples: Qdrant's recommend API by id (``average_vector``).

        The server looks the examples up and leaves them out of the answer.
        """
        if not positive_ids:
            raise ConfigError("recommend needs at least one positive example")
        info = self._vector_info(name)
        positive = [canonical_id(point_id) for point_id in positive_ids]
        negative = [canonical_id(point_id) for point_id in negative_ids]
        self._require_points(name, [*positive, *negative])
        if limit <= 0:
            return []
        scoring = models.RecommendQuery(
            recommend=models.RecommendInput(
                positive=positive, negative=negative or None, strategy=models.RecommendStrategy.AVERAGE_VECTOR  # type: ignore[arg-type]
            )
        )
        return self._query(name, info, scoring, limit, client_filter(payload_filter), with_vectors, score_threshold)

    def search_text(
        self, name: str, request: TextSearch, limit: int, payload_filter: PayloadFilter | None = None
    ) -> list[SearchHit]:
        """Passages by ``text`` (cosine), ``bm25`` (BM25 with Qdrant's IDF) or both: prefetch + RRF fusion."""
        text_dim = check_text_vectors(self._vector_info(name).text_dim, name)
        if limit <= 0:
            return []
        point_filter = client_filter(payload_filter)
        branches = text_branches(request, text_dim, name, _client_sparse)
        with self._calling(name, "search"):
            if request.mode == "hybrid":
                prefetch = [models.Prefetch(query=query, using=using, filter=point_filter, limit=max(request.candidates, limit))
                            for query, using in branches]
                fusion: models.Query = models.FusionQuery(fusion=models.Fusion.DBSF) if request.fusion == "dbsf" \
                    else models.RrfQuery(rrf=models.Rrf(k=request.rrf_k, weights=list(request.rrf_weights)))
                response = self.client.query_points(name, prefetch=prefetch, query=fusion,
                                                    query_filter=point_filter, limit=limit, with_payload=True)
            else:
                query, using = branches[0]
                response = self.client.query_points(name, query=query, using=using, query_filter=point_filter,
                                                    limit=limit, with_payload=True)
        return [SearchHit(id=str(p.id), score=float(p.score), payload=dict(p.payload or {})) for p in response.points]

    def _require_points(self, name: str, ids: list[str]) -> None:
        """``ConfigError`` naming the first id that is not stored (the server's error is a 404/500 blob)."""
        with self._calling(name, "retrieve from"):
            found = {str(record.id) for record in self.client.retrieve(name, ids=list(dict.fromkeys(ids)),
                                                                       with_payload=False, with_vectors=False)}
        missing = [point_id for point_id in ids if point_id not in found]
        if missing:
            raise ConfigError(f"no point {missing[0]} in collection {name!r} to recommend from")

    def retrieve(self, name: str, ids: Sequence[str], with_vectors: bool = False) -> list[StoredPoint]:
        """Points by id, in the order asked (missing ids are left out)."""
        if not ids:
            return []
        info = self._vector_info(name)
        wanted = list(dict.fromkeys(canonical_id(point_id) for point_id in ids))
        with self._calling(name, "retrieve from"):
            records = self.client.retrieve(
                name, ids=wanted, with_payload=True, with_vectors=[info.name] if with_vectors else False
            )
        by_id = {str(record.id): record for record in records}
        return [
            StoredPoint(
                id=point_id,
                payload=dict(by_id[point_id].payload or {}),
                vector=named_vector(by_id[point_id].vector, info.name) if with_vectors else None,
            )
            for point_id in wanted
            if point_id in by_id
        ]

    def count(self, name: str, payload_filter: PayloadFilter | None = None) -> int:
        """Exact number of points matching the filter."""
        with self._calling(name, "count"):
            return int(self.client.count(name, count_filter=client_filter(payload_filter), exact=True).count)

    def scroll(
        self,
        name: str,
        payload_filter: PayloadFilter | None = None,
        limit: int = SCROLL_PAGE,
        offset: str | None = None,
        with_vectors: bool = False,
    ) -> ScrollPage:
        """One page of the points matching the filter, in id order, from ``offset`` on."""
        info = self._vector_info(name)
        with self._calling(name, "scroll"):
            records, next_offset = self.client.scroll(
                name,
                scroll_filter=client_filter(payload_filter),
                limit=limit,
                offset=None if offset is None else canonical_id(offset),
                with_payload=True,
                with_vectors=[info.name] if with_vectors else False,
            )
        points = stored_points(records, info.name, with_vectors)
        return ScrollPage(points, None if next_offset is None else str(next_offset))

    def set_payload(self, name: str, updates: Sequence[PayloadUpdate]) -> None:
        """Set payload keys point by point, ``UPSERT_BATCH`` updates per request; unknown ids are ignored.

        Each update selects its point with a ``has_id`` filter rather than by id, so a point
        deleted meanwhile is skipped instead of failing the whole batch (as on the edge backend).
        """
        for start in range(0, len(updates), UPSERT_BATCH):
            operations = [
                models.SetPayloadOperation(
                    set_payload=models.SetPayload(
                        payload=update.payload,
                        filter=models.Filter(must=[models.HasIdCondition(has_id=[canonical_id(update.id)])]),
                    )
                )
                for update in updates[start : start + UPSERT_BATCH]
            ]
            with self._calling(name, "set payload in"):
                self.client.batch_update_points(name, update_operations=operations, wait=True)

    def create_field_index(self, name: str, field_name: str, kind: FieldType) -> None:
        """Index a payload field of an existing collection (Qdrant accepts a repeated request)."""
        with self._calling(name, "index a field of"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_LOCAL_INDEX_WARNING, category=UserWarning)
            self.client.create_payload_index(name, field_name, _SCHEMA_TYPES[kind], wait=True)

    def optimize(self, name: str) -> bool:
        """A Qdrant server optimizes in the background by itself; nothing to do but check the name."""
        if not self.collection_exists(name):
            raise CollectionNotFoundError(f"collection {name!r} not found in Qdrant at {self.location}")
        return False

    def close(self) -> None:
        """Close the client (releases a local folder's lock)."""
        self.client.close()
