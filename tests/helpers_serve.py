"""``mmindex serve`` as its own process on 127.0.0.1, for the tests that talk to it over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from helpers import PRECISION, WAIT_S, free_port


@dataclass
class Server:
    url: str
    process: subprocess.Popen[str]
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def start_server(root: Path, log: Path, *args: str, env: dict[str, str] | None = None) -> Server:
    """``mmindex serve`` in its own process on a free port, answering /health (bounded wait)."""
    port = free_port()
    handle = log.open("w", encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-m", "mmindex.pipeline.cli", "serve", "--root", str(root), "--port", str(port),
         "--device", "cpu", *args],
        stdout=handle, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "MMINDEX_PRECISION": PRECISION, **(env or {})},
    )
    handle.close()
    server = Server(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited {process.returncode}: {server.output()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop_server(server)
    raise AssertionError(f"server did not answer within {WAIT_S}s: {server.output()}")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=30)
