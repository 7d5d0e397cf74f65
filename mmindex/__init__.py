"""mmindex: multimodal vector-database indexing pipeline.

The library lives in ``mmindex.pipeline``; Arrow/payload/config schemas in ``mmindex.schemas``;
Prefect flows in ``mmindex.flows``. For programs: ``from mmindex import Index`` (see
``mmindex.api``). The exports are imported lazily, so ``import mmindex`` (and the CLI) stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "Index": "mmindex.api",
    "QueryHit": "mmindex.pipeline.search.query",
    "SearchQuery": "mmindex.pipeline.search.query",
    "SearchResult": "mmindex.pipeline.search.query",
    "QueryPart": "mmindex.pipeline.search.fusion",
    "Contribution": "mmindex.pipeline.search.fusion",
    "MmrParams": "mmindex.pipeline.store.store",
    "LabelReport": "mmindex.pipeline.search.labels",
    "Retriever": "mmindex.pipeline.search.retriever",
    "Passage": "mmindex.pipeline.search.retriever",
    "MmindexError": "mmindex.pipeline.errors",
}

__all__ = [
    "__version__",
    "Index",
    "QueryHit",
    "SearchQuery",
    "SearchResult",
    "QueryPart",
    "Contribution",
    "MmrParams",
    "LabelReport",
    "Retriever",
    "Passage",
    "MmindexError",
]

if TYPE_CHECKING:
    from mmindex.api import Index
    from mmindex.pipeline.errors import MmindexError
    from mmindex.pipeline.search.fusion import Contribution, QueryPart
    from mmindex.pipeline.search.labels import LabelReport
    from mmindex.pipeline.search.query import QueryHit, SearchQuery, SearchResult
    from mmindex.pipeline.search.retriever import Passage, Retriever
    from mmindex.pipeline.store.store import MmrParams


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mmindex' has no attribute {name!r}")
