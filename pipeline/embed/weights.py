"""Finding model weights without hanging: local checkpoints, the hub cache, then the network.

open_clip downloads tagged weights through huggingface_hub, which retries for ~50 s when the
hub is unreachable. We look in the local cache first, then probe the hub with a short timeout,
so a machine without network gets one clear line in seconds instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from platformdirs import user_cache_path

from mmindex.pipeline.embed.identity import LOCAL_DIR_PREFIX
from mmindex.pipeline.errors import ModelUnavailableError
from mmindex.pipeline.io.atomic import write_atomic

log = logging.getLogger(__name__)

NETWORK_PROBE_SECONDS = 3.0


@dataclass(frozen=True, slots=True)
class ResolvedWeights:
    """Where the weights of a model spec come from.

    ``checkpoint`` is a local file to load (None: let open_clip download ``tag``);
    ``weights_id`` names the weights in embedder ids (a tag, or ``sha256:<16 hex>`` of a file);
    ``preprocess`` carries the tag's preprocessing overrides (mean/std/interpolation/resize).
    """

    checkpoint: Path | None
    weights_id: str
    tag: str | None = None
    preprocess: dict[str, object] | None = None
    quick_gelu: bool = False


def offline_hint(model: str) -> str:
    """How to run without network, named in every weights error."""
    return (
        f"pass a local checkpoint: --model {model} --pretrained /path/to/open_clip_pytorch_model.bin, "
        "or --model local-dir:/path/to/folder (open_clip_config.json + weights)"
    )


def file_sha256(path: Path) -> str:
    """sha256 of a checkpoint file, cached by (real path, size, mtime) so big files hash once."""
    real = path.resolve()
    stat = real.stat()
    cache_file = user_cache_path("mmindex", appauthor=False) / "checkpoint-sha256.json"
    cache_key = f"{real}|{stat.st_size}|{stat.st_mtime_ns}"
    cache: dict[str, str] = {}
    try:
        cache = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    if cache_key in cache:
        return cache[cache_key]
    with real.open("rb") as handle:
        cache[cache_key] = hashlib.file_digest(handle, "sha256").hexdigest()
    try:
        write_atomic(cache_file, json.dumps(cache).encode("utf-8"), durable=False)
    except OSError as exc:
        log.debug("could not write checkpoint hash cache %s: %s", cache_file, exc)
    return cache[cache_key]


def host_reachable(url: str, timeout: float = NETWORK_PROBE_SECONDS) -> bool:
    """Whether a TCP connection to the URL's host opens within ``timeout`` (DNS included)."""
    parsed = urlparse(url)
    host = parsed.hostname
    if not host:
        return False
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    outcome: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(True)
        except OSError:
            outcome.append(False)

    worker = threading.Thread(target=probe, name="mmindex-network-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(outcome and outcome[0])


# open_clip's own preference among the weights files of a local-dir folder.
_LOCAL_DIR_WEIGHTS = (
    "open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth", "model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth",
)


def _find_local_dir_checkpoint(directory: Path) -> Path | None:
    """The weights file open_clip would load from a local-dir folder (without importing it)."""
    for name in _LOCAL_DIR_WEIGHTS:
        if (directory / name).is_file():
            return directory / name
    found = sorted(directory.glob("*.safetensors")) or sorted([*directory.glob("*.bin"), *directory.glob("*.pth")])
    return found[0] if found else None


def warn_if_pickled(checkpoint: Path) -> None:
    """Log a warning for a pickle-based checkpoint (anything but ``*.safetensors``): torch.load
    reads it with ``weights_only=True``, but a pickle is still code from whoever made the file."""
    if checkpoint.suffix.lower() != ".safetensors":
        log.warning(
            "%s is a pickle-based checkpoint (%s): it is read with torch.load(weights_only=True); load only files "
            "you trust, and prefer a .safetensors file", checkpoint, checkpoint.suffix or "no suffix",
        )


def _local_dir_weights(directory: Path) -> ResolvedWeights:
    if not directory.is_dir():
        raise ModelUnavailableError(f"model folder not found: {directory} (expected local-dir:/path/to/folder)")
    config = directory / "open_clip_config.json"
    if not config.is_file():
        raise ModelUnavailableError(f"model folder {directory} has no open_clip_config.json")
    checkpoint = _find_local_dir_checkpoint(directory)
    if checkpoint is None:
        # open_clip would only warn and carry on with random weights: never do that.
        raise ModelUnavailableError(f"model folder {directory} has no weights (*.safetensors, *.bin or *.pth)")
    combined = hashlib.sha256(config.read_bytes())
    combined.update(file_sha256(checkpoint).encode())
    return ResolvedWeights(checkpoint=checkpoint, weights_id=f"sha256:{combined.hexdigest()[:16]}")


def _cached_tag_file(tag_cfg: dict[str, object]) -> Path | None:
    """The tag's weights if a previous download left them in the hub or URL cache."""
    from open_clip.constants import HF_WEIGHTS_NAME
    from open_clip.pretrained import _get_safe_alternatives

    hub = str(tag_cfg.get("hf_hub") or "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo_id, filename = os.path.split(hub)
        filename = filename or HF_WEIGHTS_NAME
        for candidate in (*_get_safe_alternatives(filename), filename):
            found = try_to_load_from_cache(repo_id, candidate)
            if isinstance(found, str) and Path(found).is_file():
                return Path(found)
    url = str(tag_cfg.get("url") or "")
    if url:
        cached = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        if cached.is_file():
            return cached
    return None


def tag_weights_file(model: str, tag: str) -> Path | None:
    """Where open_clip keeps the weights of ``model``'s tag once downloaded (None: not there)."""
    import open_clip

    tag_cfg = open_clip.get_pretrained_cfg(model, tag)
    return _cached_tag_file(tag_cfg) if tag_cfg else None


def _download_endpoint(tag_cfg: dict[str, object]) -> str:
    if tag_cfg.get("hf_hub"):
        from huggingface_hub import constants

        return str(constants.ENDPOINT)
    return str(tag_cfg.get("url") or "")


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def resolve_weights(model: str, pretrained: str | None) -> ResolvedWeights:
    """Decide where the weights come from, failing fast with one line when they can't be had."""
    if model.startswith(LOCAL_DIR_PREFIX):
        return _local_dir_weights(Path(model[len(LOCAL_DIR_PREFIX) :]).expanduser())
    if pretrained and Path(pretrained).expanduser().is_file():
        # A checkpoint file: identified by its hash; the architecture is checked when it loads.
        path = Path(pretrained).expanduser()
        return ResolvedWeights(checkpoint=path, weights_id=f"sha256:{file_sha256(path)[:16]}")
    import open_clip

    if model not in open_clip.list_models():
        raise ModelUnavailableError(f"unknown model {model!r}; `mmindex models` lists the architectures")
    if not pretrained:
        raise ModelUnavailableError(
            f"model {model} needs weights: --pretrained TAG (see `mmindex models`) or {offline_hint(model)}"
        )
    tag_cfg = open_clip.get_pretrained_cfg(model, pretrained)
    if not tag_cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model)) or "none"
        raise ModelUnavailableError(
            f"--pretrained {pretrained!r} is neither a checkpoint file nor a tag of {model} (tags: {tags})"
        )
    preprocess = {name: tag_cfg[name] for name in ("mean", "std", "interpolation", "resize_mode") if name in tag_cfg}
    quick_gelu = bool(tag_cfg.get("quick_gelu", False))
    cached = _cached_tag_file(tag_cfg)
    if cached is not None:
        return ResolvedWeights(cached, pretrained, pretrained, preprocess, quick_gelu)
    endpoint = _download_endpoint(tag_cfg)
    if _hub_offline() or not host_reachable(endpoint):
        where = "HF_HUB_OFFLINE is set" if _hub_offline() else f"cannot reach {urlparse(endpoint).hostname}"
        raise ModelUnavailableError(
            f"weights {model}/{pretrained} are not downloaded and {where}; {offline_hint(model)}"
        )
    return ResolvedWeights(None, pretrained, pretrained, preprocess, quick_gelu)
