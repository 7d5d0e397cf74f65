"""What both adapters put in a framework document's metadata."""

from __future__ import annotations

from typing import Any

from mmindex.pipeline.search.retriever import Passage


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
