"""``mmindex schedule``: one line and no serving without a Prefect server (unset or unreachable
PREFECT_API_URL), and a quiet exit on SIGTERM while serving against a real server, which leaves the
deployment's schedule paused."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("prefect")

STOP_WAIT_S = 30  # a hang guard: past its stop deadline (15 s) the process leaves at once


def _env(**updates: str | None) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    for name, value in updates.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def _schedule(corpus: Path, root: Path, name: str) -> list[str]:
    return [sys.executable, "-m", "mmindex.pipeline.cli", "schedule", str(corpus), "-c", "sched", "--root", str(root),
            "--interval", "3600", "--name", name]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again when the block ends: nothing listens there


@pytest.mark.parametrize("api_url", [None, "unreachable"])
def test_schedule_without_a_server_fails_in_one_line(tmp_path: Path, photo_corpus: Path, api_url: str | None) -> None:
    url = None if api_url is None else f"http://127.0.0.1:{_closed_port()}/api"
    done = subprocess.run(_schedule(photo_corpus, tmp_path / "root", "no-server"), capture_output=True, text=True,
                          timeout=120, env=_env(PREFECT_API_URL=url, PREFECT_HOME=str(tmp_path / "prefect-home")))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    assert ("not set" in lines[0]) if url is None else ("does not answer" in lines[0])
    assert "Traceback" not in done.stdout + done.stderr


def test_schedule_stops_quietly_on_sigterm(prefect_api: str, tmp_path: Path, photo_corpus: Path) -> None:
    log = tmp_path / "schedule.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(_schedule(photo_corpus, tmp_path / "root", "sigterm-test"), stdout=sink,
                                   stderr=subprocess.STDOUT, env=_env(PREFECT_API_URL=prefect_api))
    try:
        deadline = time.monotonic() + 120
        while "is being served" not in log.read_text(errors="replace"):
            assert process.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "schedule did not start serving"
            time.sleep(0.5)  # polling the log; the loop waits on the condition, not the clock
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=STOP_WAIT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    output = log.read_text(errors="replace")
    assert code == 0, output[-3000:]
    assert "Traceback" not in output and "mmindex schedule stopped" in output
    assert "did not finish stopping" not in output, output[-3000:]  # stopped in time, not cut off

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("mmindex-ingest/sigterm-test")
    assert deployment.paused  # a stopped schedule makes no runs that nobody serves
