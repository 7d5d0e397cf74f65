"""LangChain retriever over an mmindex collection.

    from mmindex import Index
    from mmindex.integrations.langchain import MmindexRetriever

    retriever = MmindexRetriever(retriever=Index("docs").retriever(k=4, mode="hybrid"))
    documents = retriever.invoke("how do I rotate the API key?")
    one = retriever.invoke("how do I rotate the API key?", k=1, where="ext=md", mode="sparse")
    documents = await retriever.ainvoke("how do I rotate the API key?")   # off the event loop

The fields (``k``, ``mode``, ``where``, ``include_images``) override the ``Retriever``'s own
defaults; the same names given to ``invoke``/``ainvoke`` override them for that call
(``where`` adds filters to the standing ones). Each ``Document`` holds the passage text as
``page_content`` and its source, chunk span, heading path and score in ``metadata``; images
(``include_images``) come with their caption (or an empty text) and ``modality="image"``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator

try:
    from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
except ImportError as exc:  # pragma: no cover - depends on the optional extra
    raise ImportError("the LangChain adapter needs langchain-core: pip install 'mmindex[langchain]'") from exc

from mmindex.integrations._common import checked_count, passage_metadata
from mmindex.pipeline.errors import ConfigError
from mmindex.pipeline.search.retriever import RetrieveMode, Retriever

# Per-call keyword arguments of ``invoke``/``ainvoke`` this adapter reads; LangChain itself
# passes ``verbose`` through to retrievers too (it only concerns its callbacks).
CALL_ARGUMENTS = ("k", "where", "mode", "include_images")
_LANGCHAIN_OWN = frozenset({"verbose"})


class MmindexRetriever(BaseRetriever):
    """``BaseRetriever`` answering with ``Retriever.retrieve`` (mode, filters and k configurable per call)."""

    retriever: Any
    k: int | None = Field(default=None, ge=1)
    mode: RetrieveMode | None = None
    where: list[str] = []
    include_images: bool | int = False

    @field_validator("retriever")
    @classmethod
    def _is_a_retriever(cls, value: Any) -> Retriever:
        if not isinstance(value, Retriever):
            raise TypeError("retriever must be an mmindex Retriever (Index(...).retriever())")
        return value

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        return self._documents(query, kwargs)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        # The store and the models are blocking: search in a worker thread, the loop stays free.
        return await asyncio.to_thread(self._documents, query, kwargs)

    def _documents(self, query: str, overrides: Mapping[str, Any]) -> list[Document]:
        """The documents of one call: the fields, overridden by the call's own arguments."""
        unknown = sorted(set(overrides) - set(CALL_ARGUMENTS) - _LANGCHAIN_OWN)
        if unknown:
            raise ConfigError(f"unknown retriever argument(s) {', '.join(unknown)}: use {', '.join(CALL_ARGUMENTS)}")
        extra = overrides.get("where")
        where = [*self.where, *((extra,) if isinstance(extra, str) else (extra or ()))]
        k, mode, images = (overrides.get(name) for name in ("k", "mode", "include_images"))
        passages = self.retriever.retrieve(
            query,
            self.k if k is None else checked_count(k, "k"),
            where=where,
            mode=self.mode if mode is None else mode,
            include_images=self.include_images if images is None else images,
        )
        return [Document(page_content=p.text, metadata=passage_metadata(p), id=p.point_id) for p in passages]
