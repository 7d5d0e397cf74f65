"""Which collection version a run writes to (docs/ARCHITECTURE.md §2).

A collection's name maps to its current version; a version is one embedder (CLIP model, weights,
preprocessing, and the text model and sparse encoder of RAG collections). A run writes to the
current version unless the user asked for another model: then it builds (or goes on building) a
new version from every source the collection has seen, and the name switches to it when the run
completes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from mmindex.pipeline.embed.chunking import CONTEXT_NONE
from mmindex.pipeline.embed.model import Embedder, ModelSpec
from mmindex.pipeline.errors import MmindexError
from mmindex.pipeline.io.state_file import edit_state
from mmindex.pipeline.store.open_store import physical_collection_name
from mmindex.schemas.config import Settings
from mmindex.schemas.state import CollectionState, CollectionVersion

if TYPE_CHECKING:
    from mmindex.pipeline.embed.text_model import TextModelInfo

log = logging.getLogger(__name__)


def requested_model(
    explicit: ModelSpec | None, settings: Settings, existing: CollectionState | None, embedder: Embedder | None
) -> tuple[ModelSpec, ModelSpec | None]:
    """The model this run uses, and the one the user asked for explicitly (None: the collection's own).

    ``explicit`` is the request's model; without one, ``--model``/``--pretrained`` given in the
    settings count as asked for. A ready model passed in is the run's model and counts as asked.
    """
    if explicit is None and {"model", "pretrained"} & settings.model_fields_set:
        explicit = ModelSpec(settings.model, settings.pretrained)
    spec = explicit or (ModelSpec(existing.current.model, existing.current.pretrained) if existing else None) \
        or ModelSpec(settings.model, settings.pretrained)
    if embedder is not None:
        spec = embedder.spec
        explicit = explicit or spec
    return spec, explicit


def run_text_model(settings: Settings, existing: CollectionState | None, collection: str) -> str | None:
    """The text model of the run: the collection's own, or the configured one for a new collection.

    Asking an existing collection for another text model (or none) is refused: vectors of two
    text models must never be mixed in one collection (``text_model.ensure_text_model``).
    """
    from mmindex.pipeline.embed.text_model import ensure_text_model, wants_text_model

    if existing is None:
        return settings.text_model if wants_text_model(settings.text_model) else None
    asked = settings.text_model if "text_model" in settings.model_fields_set else None
    current = existing.current
    ensure_text_model(current.text_model, current.text_embedder_id, asked, collection)
    return current.text_model if current.text_embedder_id else None


def new_version(
    collection: str, embedder: Embedder, text_model: str | None, chunk_context: str | None = None
) -> CollectionVersion:
    """A version named after its embedder ids (CLIP, and the text model, its chunk context scheme
    (``chunk_context``, default ``chunking.DEFAULT_CONTEXT``) and the sparse encoder if any)."""
    text: TextModelInfo | None = None
    if text_model is not None:
        from mmindex.pipeline.embed.text_model import text_model_info

        text = text_model_info(text_model)
    version = CollectionVersion(
        physical_name=physical_collection_name(collection, embedder.embedder_id), embedder_id=embedder.embedder_id,
        model=embedder.spec.name, pretrained=embedder.spec.weights_tag, dim=embedder.dim, created_at=datetime.now(UTC),
        tag_weights_sha256=embedder.tag_weights_sha256,
    )
    if text is None:
        return version
    from mmindex.pipeline.embed.chunking import CONTEXT_NONE, DEFAULT_CONTEXT, context_label
    from mmindex.pipeline.embed.sparse import SPARSE_ENCODER_ID

    scheme = chunk_context or DEFAULT_CONTEXT
    context_label(scheme, None, ())  # refuses an unknown scheme
    identity = f"{embedder.embedder_id}|{text.embedder_id}|{SPARSE_ENCODER_ID}"
    if scheme != CONTEXT_NONE:  # a bare-chunk version keeps the name it had before schemes existed
        identity += f"|ctx:{scheme}"
    return version.model_copy(update={
        "physical_name": physical_collection_name(collection, identity), "text_model": text.name,
        "text_embedder_id": text.embedder_id, "text_dim": text.dim, "sparse_encoder_id": SPARSE_ENCODER_ID,
        "chunk_context": scheme,
    })


def is_current_model(spec: ModelSpec, version: CollectionVersion) -> bool:
    """Whether ``spec`` names the model ``version`` was built with (its tag, or its embedder id)."""
    from mmindex.pipeline.embed.identity import expected_embedder_id

    return _same_tagged_model(spec, version) or expected_embedder_id(spec.name, spec.pretrained) == version.embedder_id


def _same_tagged_model(spec: ModelSpec, version: CollectionVersion) -> bool:
    """Same architecture and weights tag as the version (a tag names fixed weights; files may change)."""
    from mmindex.pipeline.embed.identity import LOCAL_DIR_PREFIX

    is_file = spec.pretrained is not None and Path(spec.pretrained).expanduser().exists()
    return (
        not spec.name.startswith(LOCAL_DIR_PREFIX) and not is_file
        and (spec.name, spec.pretrained) == (version.model, version.pretrained)
    )


def _weights_of(embedder_id: str) -> str:
    """The weights part of an embedder id (``arch@WEIGHTS+ppN``)."""
    return embedder_id.partition("@")[2].rpartition("+pp")[0]


def _same_weights(current: CollectionVersion, asked: ModelSpec, wanted: str) -> bool:
    """Whether ``asked`` loads the very weights of the current version under another model name:
    the same weights id, or a checkpoint file identical to the current ``local-dir:`` model's."""
    from mmindex.pipeline.embed.identity import LOCAL_DIR_PREFIX
    from mmindex.pipeline.embed.weights import file_sha256, resolve_weights

    if _weights_of(wanted) == _weights_of(current.embedder_id):
        return True
    if not current.model.startswith(LOCAL_DIR_PREFIX) or not asked.pretrained:
        return False
    file = Path(asked.pretrained).expanduser()
    try:
        checkpoint = resolve_weights(current.model, None).checkpoint
        return file.is_file() and checkpoint is not None and file_sha256(checkpoint) == file_sha256(file)
    except (MmindexError, OSError):  # the current model's folder is gone: nothing to compare with
        return False


def migration_notice(collection: str, current: CollectionVersion, asked: ModelSpec, wanted: str) -> str:
    """What a run says before it starts migrating a collection to another model (a whole re-embed)."""
    notice = (f"collection {collection!r} was built with {current.embedder_id}; --model {asked.name} is another "
              f"embedder ({wanted}): building a new version from every source the collection has seen (every item "
              "is embedded again; queries use the current version until the new one is complete)")
    if _same_weights(current, asked, wanted):
        notice += (f". The weights are the same file as the current version's under another model name; to keep "
                   f"the collection as it is, give --model {current.model}")
    return notice


def target_version(
    settings: Settings,
    collection: str,
    existing: CollectionState | None,
    explicit: ModelSpec | None,
    embedder: Callable[[], Embedder],
    text_model: str | None,
    chunk_context: str | None = None,
) -> tuple[CollectionState, CollectionVersion, bool]:
    """The collection's entry, the version this run writes to, and whether it is a migration (not
    yet the current version). A new collection, or a new version, is recorded in the state here;
    ``embedder`` is called only then (a version is named after its model).

    ``chunk_context``: the chunk context scheme asked for (None: a new collection gets the
    default, an existing one keeps its own); asking a text-model collection for another scheme
    than its own is a migration too (the same models, its chunks embedded with the new context)."""
    from mmindex.pipeline.embed.identity import expected_embedder_id

    if existing is None:
        version = new_version(collection, embedder(), text_model, chunk_context)
        with edit_state(settings.root) as state:
            entry = state.collections.setdefault(collection, CollectionState(name=collection, current=version))
        return entry, entry.current, False
    current = existing.current
    new_context = text_model is not None and chunk_context is not None \
        and chunk_context != (current.chunk_context or CONTEXT_NONE)
    same_model = explicit is None or is_current_model(explicit, current)
    if same_model and not new_context:
        return existing, current, False
    wanted = current.embedder_id if explicit is None else expected_embedder_id(explicit.name, explicit.pretrained)
    wanted_context = chunk_context if new_context else current.chunk_context
    building = existing.building
    if building is not None and building.embedder_id == wanted and building.chunk_context == wanted_context:
        return existing, building, True
    if not same_model and explicit is not None:
        log.warning("%s", migration_notice(collection, current, explicit, wanted))
    version = new_version(collection, embedder(), text_model, wanted_context or CONTEXT_NONE)
    with edit_state(settings.root) as state:
        entry = state.collections[collection]
        entry.building = entry.version(version.physical_name) or version
        entry.previous = [old for old in entry.previous if old.physical_name != version.physical_name]
    return entry, entry.building, True
