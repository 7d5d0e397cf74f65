"""LlamaIndex retriever over an mmindex collection.

    from llama_index.core.vector_stores import MetadataFilter, MetadataFilters

    from mmindex import Index
    from mmindex.integrations.llama_index import MmindexRetriever

    retriever = MmindexRetriever(Index("docs").retriever(mode="hybrid"), similarity_top_k=4,
                                 filters=MetadataFilters(filters=[MetadataFilter(key="ext", value="md")]))
    nodes = retriever.retrieve("how do I rotate the API key?")          # list[NodeWithScore]
    nodes = await retriever.aretrieve("how do I rotate the API key?")   # off the event loop

Each ``NodeWithScore`` holds a ``TextNode`` (id = the point id, text = the passage, metadata =
source, chunk span, heading path) and the retrieval score. ``filters`` keys are the payload
fields of ``--where`` (``ext``, ``path``, ``doc_key``, ``meta.*`` ...); they are ANDed with the
``where`` expressions and the ``Retriever``'s own filters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

try:
    from llama_index.core.callbacks import CallbackManager
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
    from llama_index.core.vector_stores.types import FilterCondition, FilterOperator, MetadataFilter, MetadataFilters
except ImportError as exc:  # pragma: no cover - depends on the optional extra
    raise ImportError("the LlamaIndex adapter needs llama-index-core: pip install 'mmindex[llamaindex]'") from exc

from mmindex.integrations._common import checked_count, passage_metadata
from mmindex.pipeline.errors import ConfigError
from mmindex.pipeline.search.retriever import RetrieveMode, Retriever
from mmindex.pipeline.store.filters import parse_where

_WHERE_OPERATORS: dict[FilterOperator, str] = {
    FilterOperator.EQ: "=", FilterOperator.NE: "!=", FilterOperator.GT: ">", FilterOperator.GTE: ">=",
    FilterOperator.LT: "<", FilterOperator.LTE: "<=", FilterOperator.IN: "=", FilterOperator.NIN: "!=",
}
_LIST_OPERATORS = (FilterOperator.IN, FilterOperator.NIN)


def _where_of_filter(item: MetadataFilter) -> str:
    operator = _WHERE_OPERATORS.get(item.operator)
    if operator is None:
        supported = ", ".join(op.value for op in _WHERE_OPERATORS)
        raise ConfigError(f"filter on {item.key!r}: operator {item.operator.value!r} is not supported (use {supported})")
    listed = isinstance(item.value, list)
    if item.value is None or listed != (item.operator in _LIST_OPERATORS) or (listed and not item.value):
        shape = "a non-empty list" if item.operator in _LIST_OPERATORS else "one value"
        raise ConfigError(f"filter on {item.key!r}: operator {item.operator.value!r} takes {shape}, not {item.value!r}")
    values = [str(v) for v in item.value] if isinstance(item.value, list) else [str(item.value)]
    if any("," in v for v in values):
        raise ConfigError(f"filter on {item.key!r}: values containing ',' cannot be matched")
    return f"{item.key}{operator}{','.join(values)}"


def where_of(filters: MetadataFilters) -> tuple[str, ...]:
    """LlamaIndex ``MetadataFilters`` as ``--where`` expressions (AND of the supported operators).

    ``ConfigError`` for what mmindex filters cannot express: ``or``/``not`` conditions and the
    array or text-match operators.
    """
    if filters.condition not in (None, FilterCondition.AND):
        raise ConfigError(f"metadata filters: condition {filters.condition.value!r} is not supported (only 'and')")
    expressions: list[str] = []
    for item in filters.filters:
        expressions.extend(where_of(item) if isinstance(item, MetadataFilters) else (_where_of_filter(item),))
    return tuple(expressions)


class MmindexRetriever(BaseRetriever):
    """``BaseRetriever`` answering with ``Retriever.retrieve``.

    ``similarity_top_k`` (or its short name ``k``), ``mode`` and ``include_images`` override the
    ``Retriever``'s defaults; ``where`` expressions and ``filters`` add to its filters.
    ``similarity_top_k`` can be changed between calls, as on LlamaIndex's own retrievers.
    """

    def __init__(
        self,
        retriever: Retriever,
        *,
        similarity_top_k: int | None = None,
        k: int | None = None,
        mode: RetrieveMode | None = None,
        where: Sequence[str] = (),
        filters: MetadataFilters | None = None,
        include_images: bool | int = False,
        callback_manager: CallbackManager | None = None,
    ) -> None:
        if not isinstance(retriever, Retriever):
            raise TypeError("retriever must be an mmindex Retriever (Index(...).retriever())")
        if similarity_top_k is not None and k is not None and similarity_top_k != k:
            raise ConfigError(f"similarity_top_k={similarity_top_k} and k={k} disagree: give one of them")
        self._mmindex = retriever
        self.similarity_top_k = similarity_top_k if similarity_top_k is not None else k
        self._mode = mode
        self._where = (*where, *(where_of(filters) if filters is not None else ()))
        parse_where(self._where)  # a malformed filter fails here, not at the first question
        self._include_images = include_images
        super().__init__(callback_manager=callback_manager)

    @property
    def similarity_top_k(self) -> int | None:
        """How many passages a call returns (None: the ``Retriever``'s ``k``)."""
        return self._k

    @similarity_top_k.setter
    def similarity_top_k(self, value: int | None) -> None:
        self._k = checked_count(value, "similarity_top_k")

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        passages = self._mmindex.retrieve(query_bundle.query_str, self._k, where=self._where, mode=self._mode,
                                          include_images=self._include_images)
        return [
            NodeWithScore(node=TextNode(id_=p.point_id, text=p.text, metadata=passage_metadata(p)), score=p.score)
            for p in passages
        ]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        # LlamaIndex's default runs ``_retrieve`` on the event loop; the store and models block.
        return await asyncio.to_thread(self._retrieve, query_bundle)
