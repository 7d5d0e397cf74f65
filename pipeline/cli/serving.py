"""What ``mmindex schedule`` needs around Prefect's runner: a configured, reachable Prefect server
before anything starts, and a quiet exit on SIGTERM or Ctrl-C within a bounded time.

Prefect's own ``Flow.serve`` installs a SIGTERM handler that blocks in the signal handler until
the runner has stopped, and its shutdown (cancelling runs, pausing the schedule over the API,
draining the event loop's executor) has no deadline: on a loaded machine a stop could take
minutes. So the runner runs in a thread of its own (where Prefect installs no handler), this
process's main thread waits for a signal, asks the runner to stop on its own loop, and waits at
most ``STOP_DEADLINE_S`` for it."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING

from mmindex.pipeline.cli.terminal import err
from mmindex.pipeline.errors import ConfigError

if TYPE_CHECKING:
    from prefect.runner import Runner

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 3.0
POLL_S = 0.2  # how often the main thread looks at the runner while it waits for a signal
STOP_DEADLINE_S = 15.0  # what a stop may take: cancelling a run in flight and pausing the schedule
START_SERVER = "start one with `prefect server start` and export PREFECT_API_URL=http://127.0.0.1:4200/api"


def require_prefect_api() -> str:
    """The configured Prefect API URL, checked to answer; ``ConfigError`` when it is unset (Prefect
    would otherwise start a temporary server that dies with this process) or does not answer."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise ConfigError(f"mmindex schedule needs a Prefect server and PREFECT_API_URL is not set: {START_SERVER}")
    health = f"{str(url).rstrip('/')}/health"
    try:
        response = httpx.get(health, timeout=HEALTH_TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise ConfigError(f"the Prefect server at PREFECT_API_URL={url} does not answer ({type(exc).__name__}): "
                          f"{START_SERVER}") from None
    if response.status_code != 200:
        raise ConfigError(f"the Prefect server at PREFECT_API_URL={url} answered {response.status_code} on /health")
    return str(url)


@dataclass
class _RunnerThread:
    """Prefect's runner on an event loop in a daemon thread, and what the main thread needs to stop it."""

    runner: Runner
    finished: threading.Event = field(default_factory=threading.Event)
    loop: asyncio.AbstractEventLoop | None = None
    task: asyncio.Task[None] | None = None
    failure: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except asyncio.CancelledError:
            pass  # stopped before the runner had started
        except Exception as exc:  # noqa: BLE001 - handed to the main thread, which raises it
            self.failure = exc
        finally:
            self.finished.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        await self.runner.start()

    def request_stop(self, deadline: float) -> None:
        """Ask the runner to stop, on its own loop: cancel runs in flight, pause the schedule and end
        its polling. A runner still starting is given until ``deadline`` (monotonic) to start, so
        that its schedule is paused too; one that does not start by then has its start cancelled."""
        while not self.runner.started and not self.finished.is_set() and time.monotonic() < deadline:
            time.sleep(POLL_S)  # waiting on the runner's own flag: it offers no event to wait on
        loop, task = self.loop, self.task
        if loop is None or task is None or loop.is_closed() or self.finished.is_set():
            return
        if self.runner.started:
            asyncio.run_coroutine_threadsafe(self.runner.astop(), loop)
        else:
            loop.call_soon_threadsafe(task.cancel)


def serve_until_stopped(runner: Runner, started_line: str) -> None:
    """Run ``runner`` until SIGTERM or Ctrl-C, then stop it and exit without a traceback.

    The stop waits at most ``STOP_DEADLINE_S``; past it (or on a second signal) the process exits
    at once, saying what may be left (a schedule not paused). An error of the runner itself is raised."""
    # Prefect's runner, stopped, can leave a coroutine unawaited that the interpreter reports at exit.
    warnings.filterwarnings("ignore", message=r"coroutine '.*' was never awaited", category=RuntimeWarning)
    signalled = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        if signalled.is_set():
            _exit_now("stopped again before Prefect's runner had finished stopping")
        signalled.set()

    handled = (signal.SIGTERM, signal.SIGINT)
    previous = {number: signal.signal(number, _on_signal) for number in handled}
    worker = _RunnerThread(runner)
    thread = threading.Thread(target=worker.run, name="prefect-runner", daemon=True)
    try:
        thread.start()
        announced = False
        while not signalled.wait(timeout=POLL_S) and not worker.finished.is_set():
            if runner.started and not announced:  # serving now: its schedule is registered and polled
                err.print(started_line)
                announced = True
        if signalled.is_set():
            logging.getLogger("prefect").setLevel(logging.CRITICAL)  # its shutdown logs say nothing useful here
            deadline = time.monotonic() + STOP_DEADLINE_S
            worker.request_stop(deadline)
            if not worker.finished.wait(timeout=max(0.0, deadline - time.monotonic())):
                _exit_now(f"Prefect's runner did not finish stopping within {STOP_DEADLINE_S:.0f} s")
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if worker.failure is not None:
        raise worker.failure
    err.print("mmindex schedule stopped")


def _exit_now(why: str) -> None:
    """Leave the process at once (Prefect's runner thread and its exit handlers are not waited for)."""
    err.print(f"mmindex schedule stopped: {why}; the deployment may still show as not paused "
              "(`prefect deployment inspect NAME`) until it is served again")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
