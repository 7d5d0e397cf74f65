"""deploy/: what an operator runs is locked down (ports on 127.0.0.1, secrets required, pinned
images and packages, one shard run per worker, a non-root GPU image)."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))


def _dockerfile() -> list[str]:
    return (DEPLOY / "Dockerfile.gpu").read_text(encoding="utf-8").splitlines()


def test_compose_publishes_on_loopback_only_and_requires_secrets() -> None:
    services = _compose()["services"]
    ports = [port for service in services.values() for port in service.get("ports", [])]
    assert ports and all(str(port).startswith("127.0.0.1:") for port in ports)
    assert "QDRANT_API_KEY:?" in services["qdrant"]["environment"]["QDRANT__SERVICE__API_KEY"]
    assert "PREFECT_AUTH:?" in services["prefect"]["environment"]["PREFECT_SERVER_API_AUTH_STRING"]
    for name in ("pools", "worker", "ingest-worker"):
        environment = services[name]["environment"]
        assert "PREFECT_AUTH:?" in environment["PREFECT_API_AUTH_STRING"] and "QDRANT_API_KEY" in environment


def test_images_are_pinned_and_prefect_matches_the_constraints() -> None:
    services = _compose()["services"]
    images = [service["image"] for service in services.values() if "image" in service]
    assert images and all(re.search(r":v?[0-9]+\.[0-9]+\.[0-9]+", image) for image in images), images
    pins = dict(line.split("==") for line in (DEPLOY / "constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    assert services["prefect"]["image"].startswith(f"prefecthq/prefect:{pins['prefect']}-")
    assert pins["prefect"] == version("prefect") and pins["torch"] == version("torch")
    (base,) = [line for line in _dockerfile() if line.startswith("FROM ")]
    assert re.search(r":[0-9]+\.[0-9]+\.[0-9]+-", base), base


def test_every_worker_takes_one_run_at_a_time() -> None:
    services = _compose()["services"]
    commands = [services[name]["command"] for name in ("worker", "ingest-worker")]
    (cmd,) = [line for line in _dockerfile() if line.startswith("CMD ")]
    commands.append(yaml.safe_load(cmd.removeprefix("CMD ")))
    assert all(command[:2] == ["worker", "start"] and command[-2:] == ["--limit", "1"] for command in commands)


def test_workers_poll_every_two_seconds_and_shard_runs_start_the_engine_directly() -> None:
    """The cuts of benchmarks/flow_overhead.py: a worker asks for the next queued shard run every
    2 s (not Prefect's 10 s), and a shard run starts no workspace supervisor process before its engine."""
    services = _compose()["services"]
    for name in ("worker", "ingest-worker"):
        assert services[name]["environment"]["PREFECT_WORKER_QUERY_SECONDS"] == "2"
    (env,) = [line for line in _dockerfile() if line.startswith("ENV MMINDEX_DEVICE")]
    assert "PREFECT_WORKER_QUERY_SECONDS=2" in env.split()
    deployments = yaml.safe_load((DEPLOY / "prefect.yaml").read_text(encoding="utf-8"))["deployments"]
    (embed,) = [d for d in deployments if d["name"] == "embed-shard"]
    assert embed["work_pool"]["job_variables"]["command"] == "python -m prefect.engine"
    assert "env" not in embed["work_pool"]["job_variables"]  # the worker's environment decides the device


def test_the_pull_step_finds_the_flows_without_importing_them() -> None:
    import subprocess
    import sys

    probe = ("import sys; from mmindex.flows.steps import check_installed; out = check_installed(); "
             "assert 'mmindex.flows.ingest' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules); "
             "print(out['mmindex_version'])")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == version("mmindex")
    from mmindex.flows.steps import check_installed

    with pytest.raises(RuntimeError, match="mmindex is not installed on this worker"):
        check_installed("mmindex.flows.no_such_module")
    with pytest.raises(RuntimeError, match="mmindex is not installed on this worker"):
        check_installed("no_such_package.flows")


def test_gpu_image_installs_pinned_with_pdf_and_runs_as_a_user() -> None:
    lines = _dockerfile()
    (install,) = [line for line in lines if "pip install" in line]
    assert "-c deploy/constraints.txt" in install and "pdf" in install
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")


def test_flow_paths_outside_the_workers_allow_list_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mmindex.flows.params import ALLOWED_PREFIXES_ENV, check_allowed
    from mmindex.pipeline.errors import ConfigError

    data = tmp_path / "data"
    (data / "photos").mkdir(parents=True)
    (data / "escape").symlink_to(Path.home())
    monkeypatch.setenv(ALLOWED_PREFIXES_ENV, f"{data}, s3://bucket/mmindex")
    check_allowed("source", str(data / "photos"))
    check_allowed("root", "s3://bucket/mmindex/photos")
    for hostile in ("/root", str(data / ".." / "etc"), str(data / "escape"), "s3://bucket/mmindex-other", "memory://x"):
        with pytest.raises(ConfigError, match="outside this worker's MMINDEX_ALLOWED_PREFIXES"):
            check_allowed("source", hostile)
    assert "MMINDEX_ALLOWED_PREFIXES" in _compose()["services"]["worker"]["environment"]


def test_an_ingest_flows_model_files_and_urls_are_checked_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A flow run's caller can name a model folder or checkpoint file (code the worker would load)
    and URLs Prefect would store: the model's files must be inside the allow-list, no URL may
    carry credentials."""
    from mmindex.flows.params import ALLOWED_PREFIXES_ENV, check_flow_options
    from mmindex.pipeline.errors import ConfigError
    from mmindex.pipeline.ingest.options import IndexOptions

    data = tmp_path / "data"
    (data / "photos").mkdir(parents=True)
    monkeypatch.setenv(ALLOWED_PREFIXES_ENV, str(data))
    inside = {"source": str(data / "photos"), "collection": "c", "root": str(data / "index")}
    check_flow_options(IndexOptions(**inside, model=f"local-dir:{data / 'models' / 'tuned'}"))
    check_flow_options(IndexOptions(**inside, model="ViT-B-32", pretrained="laion2b_s34b_b79k"))  # a tag, not a path
    for hostile, what in (({"model": "local-dir:/home/someone/untrusted"}, "model folder"),
                          ({"model": "ViT-B-32", "pretrained": "/tmp/evil.pt"}, "pretrained checkpoint"),
                          ({"model": "ViT-B-32", "pretrained": "../../evil.bin"}, "pretrained checkpoint")):
        with pytest.raises(ConfigError, match=f"{what} .* is outside this worker's"):
            check_flow_options(IndexOptions(**inside, **hostile))
    monkeypatch.delenv(ALLOWED_PREFIXES_ENV)
    for field, url in (("source", "https://user:s3cret@example.invalid/manifest.parquet"),
                       ("root", "s3://bucket/index?X-Amz-Signature=s3cret"),
                       ("qdrant_url", "http://admin:s3cret@127.0.0.1:6333")):
        with pytest.raises(ConfigError, match="carries credentials") as refused:
            check_flow_options(IndexOptions(**{**inside, field: url}))
        assert "s3cret" not in str(refused.value)
