"""LangChain retriever over an mmindex collection.

    from mmindex import Index
    from mmindex.integrations.langchain import MmindexRetriever

    retriever = MmindexRetriever(retriever=Index("docs").retriever(k=4, mode="hybrid"))
    documents = retriever.invoke("how do I rotate the API key?")

Each ``Document`` holds the passage text as ``page_content`` and its source, chunk span,
heading path and score in ``metadata``; images (``include_images``) come with their caption
(or an empty text) and ``modality="image"``.
"""

from __future__ import annotations

from typing import Any

from pydantic import field_validator

try:
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
except ImportError as exc:  # pragma: no cover - depends on the optional extra
    raise ImportError("the LangChain adapter needs langchain-core: pip install 'mmindex[langchain]'") from exc

from mmindex.integrations._common import passage_metadata
from mmindex.pipeline.search.retriever import Retriever


class MmindexRetriever(BaseRetriever):
    """``BaseRetriever`` answering with ``Retriever.retrieve`` (mode, filters and k configurable)."""

    retriever: Any
    k: int | None = None
    mode: str | None = None
    where: list[str] = []
    include_images: bool | int = False

    @field_validator("retriever")
    @classmethod
    def _is_a_retriever(cls, value: Any) -> Retriever:
        if not isinstance(value, Retriever):
            raise TypeError("retriever must be an mmindex Retriever (Index(...).retriever())")
        return value

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        passages = self.retriever.retrieve(query, self.k, where=self.where, mode=self.mode,
                                           include_images=self.include_images)
        return [Document(page_content=p.text, metadata=passage_metadata(p), id=p.point_id) for p in passages]
