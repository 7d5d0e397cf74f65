"""What both adapters share: the metadata of a framework document, the check of a requested count."""

from __future__ import annotations

from typing import Any

from mmindex.pipeline.errors import ConfigError
from mmindex.pipeline.search.retriever import Passage


def checked_count(value: Any, name: str) -> int | None:
    """A number of passages asked through an adapter (None: the default); ``ConfigError`` otherwise."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{name} must be a whole number of at least 1, not {value!r}")
    return value


def passage_metadata(passage: Passage) -> dict[str, Any]:
    """Source, location and score of a passage, as flat metadata (JSON-serializable)."""
    metadata: dict[str, Any] = {
        "key": passage.key,
        "source": passage.source,
        "uri": passage.uri,
        "modality": passage.modality,
        "score": passage.score,
        "point_id": passage.point_id,
    }
    if passage.doc_key is not None:
        metadata.update(doc_key=passage.doc_key, chunk_index=passage.chunk_index, char_start=passage.char_start,
                        char_end=passage.char_end, heading_path=list(passage.heading_path))
    return metadata
