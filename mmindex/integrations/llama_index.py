"""LlamaIndex retriever over an mmindex collection.

    from mmindex import Index
    from mmindex.integrations.llama_index import MmindexRetriever

    retriever = MmindexRetriever(Index("docs").retriever(k=4, mode="hybrid"))
    nodes = retriever.retrieve("how do I rotate the API key?")   # list[NodeWithScore]

Each ``NodeWithScore`` holds a ``TextNode`` (id = the point id, text = the passage, metadata =
source, chunk span, heading path) and the retrieval score.
"""

from __future__ import annotations

from collections.abc import Sequence

try:
    from llama_index.core.callbacks import CallbackManager
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
except ImportError as exc:  # pragma: no cover - depends on the optional extra
    raise ImportError("the LlamaIndex adapter needs llama-index-core: pip install 'mmindex[llamaindex]'") from exc

from mmindex.integrations._common import passage_metadata
from mmindex.pipeline.search.retriever import RetrieveMode, Retriever


class MmindexRetriever(BaseRetriever):
    """``BaseRetriever`` answering with ``Retriever.retrieve``."""

    def __init__(
        self,
        retriever: Retriever,
        *,
        k: int | None = None,
        mode: RetrieveMode | None = None,
        where: Sequence[str] = (),
        include_images: bool | int = False,
        callback_manager: CallbackManager | None = None,
    ) -> None:
        if not isinstance(retriever, Retriever):
            raise TypeError("retriever must be an mmindex Retriever (Index(...).retriever())")
        self._mmindex = retriever
        self._k = k
        self._mode = mode
        self._where = tuple(where)
        self._include_images = include_images
        super().__init__(callback_manager=callback_manager)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        passages = self._mmindex.retrieve(query_bundle.query_str, self._k, where=self._where, mode=self._mode,
                                          include_images=self._include_images)
        return [
            NodeWithScore(node=TextNode(id_=p.point_id, text=p.text, metadata=passage_metadata(p)), score=p.score)
            for p in passages
        ]
