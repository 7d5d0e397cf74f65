"""Bounded retries for the Qdrant server: an ``httpx`` transport under qdrant-client that retries
a request refused, reset or timed out on the way, and answers 429, 502, 503 and 504, with
exponential backoff (a 429's ``Retry-After`` honoured up to ``MAX_DELAY``), then gives the last
answer or error to qdrant-client (``ClientStore`` turns it into one ``StoreUnavailableError``).

Retrying is safe because every request mmindex sends is idempotent: points are upserted and
deleted by their deterministic ids, so an upsert the server applied before its answer was lost
is applied again to the same points, never duplicated."""

from __future__ import annotations

import logging
import time

import httpx

from mmindex.pipeline.redact import redact_secrets

logger = logging.getLogger(__name__)

ATTEMPTS = 4
BASE_DELAY = 0.25
MAX_DELAY = 5.0
RETRY_STATUSES = frozenset({429, 502, 503, 504})


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return None


class RetryingTransport(httpx.BaseTransport):
    """``httpx.HTTPTransport`` with ``attempts`` tries per request (see the module docstring)."""

    def __init__(self, attempts: int = ATTEMPTS, base_delay: float = BASE_DELAY, max_delay: float = MAX_DELAY,
                 inner: httpx.BaseTransport | None = None) -> None:
        self.attempts, self.base_delay, self.max_delay = max(1, attempts), base_delay, max_delay
        self.inner = inner or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(1, self.attempts):
            delay = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
            try:
                response = self.inner.handle_request(request)
            except httpx.TransportError as exc:  # refused, reset mid-request, timed out
                reason = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code not in RETRY_STATUSES:
                    return response
                reason = f"HTTP {response.status_code}"
                asked = _retry_after(response) if response.status_code == 429 else None
                delay = min(self.max_delay, asked) if asked is not None else delay
                response.read()
                response.close()
            logger.info("Qdrant %s %s: %s; retrying in %.2f s (attempt %d of %d)", request.method,
                           redact_secrets(str(request.url)), reason, delay, attempt + 1, self.attempts)
            time.sleep(delay)
        return self.inner.handle_request(request)  # the last attempt: its answer or error is the caller's

    def close(self) -> None:
        self.inner.close()
