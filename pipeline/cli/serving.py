"""What ``mmindex schedule`` needs around Prefect's ``serve``: a configured, reachable Prefect
server before anything starts, and a quiet, prompt exit on SIGTERM or Ctrl-C."""

from __future__ import annotations

import logging
import signal
import warnings
from collections.abc import Callable
from types import FrameType

from mmindex.pipeline.cli.terminal import err
from mmindex.pipeline.errors import ConfigError

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 3.0
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


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def serve_until_stopped(serve: Callable[[], object]) -> None:
    """Run ``serve`` (blocking) until SIGTERM or Ctrl-C, then exit without a traceback.

    SIGTERM is turned into the KeyboardInterrupt that Prefect's runner already shuts down on, so
    both stop the same way; Prefect's client logs that a stopping process prints are silenced."""
    # Prefect's runner, interrupted, leaves a stop coroutine that the interpreter reports at exit.
    warnings.filterwarnings("ignore", message=r"coroutine '.*' was never awaited", category=RuntimeWarning)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        serve()
    except KeyboardInterrupt:
        pass
    finally:  # also when Prefect's runner ends the process with SystemExit on the signal
        signal.signal(signal.SIGTERM, previous)
        logging.getLogger("prefect").setLevel(logging.CRITICAL)
        err.print("mmindex schedule stopped")
