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
    "QueryHit": "mmindex.pipeline.query",
    "SearchQuery": "mmindex.pipeline.query",
    "SearchResult": "mmindex.pipeline.query",
    "QueryPart": "mmindex.pipeline.fusion",
    "Contribution": "mmindex.pipeline.fusion",
    "MmrParams": "mmindex.pipeline.index.store",
    "LabelReport": "mmindex.pipeline.labels",
    "Retriever": "mmindex.pipeline.retriever",
    "Passage": "mmindex.pipeline.retriever",
    "MmindexError": "mmindex.pipeline.errors",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from .api import Index
    from .pipeline.errors import MmindexError
    from .pipeline.fusion import Contribution, QueryPart
    from .pipeline.index.store import MmrParams
    from .pipeline.labels import LabelReport
    from .pipeline.query import QueryHit, SearchQuery, SearchResult
    from .pipeline.retriever import Passage, Retriever


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mmindex' has no attribute {name!r}")
