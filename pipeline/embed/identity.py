"""Embedder identity: which embedding space a vector lives in (docs/ARCHITECTURE.md §2)."""

from __future__ import annotations

LOCAL_DIR_PREFIX = "local-dir:"

# Bump when decoding/preprocessing changes in a way that changes embeddings.
PREPROCESS_VERSION = 1


def embedder_id(model_name: str, weights_id: str) -> str:
    """Architecture, weights and preprocessing version; computable without loading the model."""
    arch = "local-dir" if model_name.startswith(LOCAL_DIR_PREFIX) else model_name
    return f"{arch}@{weights_id}+pp{PREPROCESS_VERSION}"


def expected_embedder_id(model_name: str, pretrained: str | None) -> str:
    """The embedder id a model spec will have, resolving its weights but not loading them."""
    from mmindex.pipeline.embed.weights import resolve_weights

    return embedder_id(model_name, resolve_weights(model_name, pretrained).weights_id)
