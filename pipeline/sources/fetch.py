"""Fetch items over HTTP(S), safely: what a URL manifest's rows point at.

Every fetch has a total deadline (``FetchOptions.timeout_s``: connect, headers and the whole body;
a server that trickles bytes is cut off), a size limit checked against Content-Length and again
while streaming, a few redirects (http/https only), and a private-network guard: the host is
resolved, every address is validated, and the connection goes to the validated address itself
(the URL's host rides in the Host header and TLS SNI), so DNS rebinding cannot slip past. Only
transient failures are retried (connect errors, timeouts, 429 honouring Retry-After, 5xx), with
exponential backoff and jitter. Opt-outs in ``X-Robots-Tag`` (img2dataset's default set) fail an
item before its body is read.

Every failure is a ``DecodeError`` whose message is the item's reason, worded for scripts to match:
``http 404``, ``timed out after 5 s``, ``body over 20000000 bytes``, ``redirect to file: refused
(scheme)``, ``scheme file: refused``, ``too many redirects``, ``private address 10.0.0.3 refused``,
``opted out: X-Robots-Tag noai``, ``not an image (text/html)``, ``cannot connect: ...``.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Protocol
from urllib.parse import urljoin

import httpx

from mmindex.pipeline.errors import DecodeError
from mmindex.pipeline.redact import redact_secrets
from mmindex.pipeline.sources.base import ItemRef, Validators
from mmindex.schemas.state import FetchOptions

log = logging.getLogger(__name__)

Resolver = Callable[[str, int], list[str]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

OPT_OUT_DIRECTIVES = frozenset({"noai", "noimageai", "noindex", "noimageindex"})
_SCHEMES = frozenset({"http", "https"})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_BACKOFF_BASE_S = 0.5
_BACKOFF_CAP_S = 8.0
_MAX_RETRY_AFTER_S = 60.0
_USER_AGENT = "mmindex (+https://github.com/mmindex/mmindex)"


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the OS resolver)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


class _Transient(Exception):
    """A failure worth retrying: its reason and, for a 429, how long the server asked us to wait."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason, self.retry_after = reason, retry_after


def opt_out_directive(values: Sequence[str], user_agent_token: str | None) -> str | None:
    """The ``X-Robots-Tag`` directive that opts this item out, if any (img2dataset's rule: a value
    ``token: a, b`` applies only to the user agent ``token``; a value without one to everyone)."""
    token = user_agent_token.lower() if user_agent_token else None
    for value in values:
        parts = value.split(":", 1)
        ua = parts[0].strip().lower() if len(parts) == 2 else None
        if ua is not None and ua != token:
            continue
        for directive in (part.strip().lower() for part in parts[-1].split(",")):
            if directive in OPT_OUT_DIRECTIVES:
                return directive
    return None


def _retry_after_seconds(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (a number or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _unmapped(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address (``::ffff:10.0.0.3``) as the IPv4 address it stands for."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(slots=True)
class NetworkGuard:
    """Which addresses a URL taken from data may reach."""

    allow_private: bool = False
    allowed: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def from_options(cls, options: FetchOptions) -> NetworkGuard:
        return cls(options.allow_private_network,
                   tuple(ipaddress.ip_network(cidr, strict=False) for cidr in options.allow_networks))

    def refuses(self, address: IPAddress) -> bool:
        """Loopback, private, link-local, multicast, reserved and other non-global addresses are refused."""
        address = _unmapped(address)
        if self.allow_private or any(address in network for network in self.allowed):
            return False
        return not address.is_global or address.is_multicast


@dataclass(slots=True)
class HttpFetcher:
    """Fetches URLs under ``FetchOptions``; thread-safe (one pooled client, per-host slots)."""

    options: FetchOptions
    resolver: Resolver = system_resolver
    sleep: Callable[[float], None] = time.sleep
    guard: NetworkGuard = field(init=False)
    _client: httpx.Client | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _hosts: dict[str, threading.BoundedSemaphore] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.guard = NetworkGuard.from_options(self.options)

    @property
    def concurrency(self) -> int:
        return self.options.concurrency

    def client(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                agent = _USER_AGENT if not self.options.user_agent_token else f"{_USER_AGENT} {self.options.user_agent_token}"
                self._client = httpx.Client(
                    follow_redirects=False, trust_env=False, headers={"User-Agent": agent},
                    limits=httpx.Limits(max_connections=self.options.concurrency,
                                        max_keepalive_connections=self.options.concurrency),
                )
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def fetch(self, url: str) -> bytes:
        """The body at ``url``, or a ``DecodeError`` with the reason (after the retries it deserves)."""
        return self.fetch_item(url).body

    def fetch_item(self, url: str) -> Fetched:
        """The body at ``url`` and the validators it came with (``fetch``'s checks and failures)."""
        hop = self._retrying(url, None)
        if hop.body is None:  # only a conditional request is answered without a body
            raise DecodeError("http 304")
        return Fetched(hop.body, hop.validators)

    def revalidate(self, url: str, validators: Validators) -> Revalidated:
        """A conditional GET (``If-None-Match`` / ``If-Modified-Since`` from ``validators``): a 304
        costs no body (``body`` None; the validators stay, updated by any the 304 sent); otherwise
        the new body and the validators it came with (none: ``Validators()``). Every check of
        ``fetch`` applies; a failure is a ``DecodeError`` with the reason."""
        hop = self._retrying(url, validators if validators.known else None)
        if hop.body is None:
            sent = hop.validators or Validators()
            return Revalidated(None, Validators(sent.etag or validators.etag,
                                                sent.last_modified or validators.last_modified))
        return Revalidated(hop.body, hop.validators or Validators())

    def _retrying(self, url: str, conditional: Validators | None) -> _Hop:
        attempt = 0
        while True:
            try:
                return self._follow(url, conditional)
            except _Transient as exc:
                if attempt >= self.options.retries:
                    raise DecodeError(exc.reason) from None
                if exc.retry_after is not None and exc.retry_after > _MAX_RETRY_AFTER_S:
                    raise DecodeError(f"{exc.reason} (retry after {exc.retry_after:.0f} s)") from None
                delay = min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2**attempt) * random.uniform(0.5, 1.5)  # noqa: S311 (jitter, not a secret)
                if exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                log.debug("retrying %s in %.2f s: %s", redact_secrets(url), delay, exc.reason)
                self.sleep(delay)
                attempt += 1

    def _follow(self, url: str, conditional: Validators | None) -> _Hop:
        """One attempt: the request and its redirects, each hop checked, under one deadline."""
        deadline = time.monotonic() + self.options.timeout_s
        current = url
        for hop in range(self.options.max_redirects + 1):
            result = self._get(self._checked(current, redirected=hop > 0), deadline, conditional)
            if result.location is None:
                return result
            current = urljoin(current, result.location)
        raise DecodeError("too many redirects")

    def _checked(self, url: str, *, redirected: bool) -> httpx.URL:
        """The URL, if its scheme and host pass (raises the refusal otherwise)."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, ValueError) as exc:
            raise DecodeError(f"invalid URL: {exc}") from None
        scheme = parsed.scheme.lower() or "(none)"
        if scheme not in _SCHEMES:
            raise DecodeError(f"redirect to {scheme}: refused (scheme)" if redirected else f"scheme {scheme}: refused")
        if not parsed.host:
            raise DecodeError("invalid URL: no host")
        return parsed

    def _pinned_address(self, host: str, port: int) -> str:
        """Resolve ``host``, validate every address, and give the one to connect to."""
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            try:
                addresses = [ipaddress.ip_address(address.split("%", 1)[0]) for address in self.resolver(host, port)]
            except OSError as exc:
                raise _Transient(f"cannot resolve {host}: {exc.strerror or exc}") from None
        if not addresses:
            raise _Transient(f"cannot resolve {host}")
        addresses = [_unmapped(address) for address in addresses]
        for address in addresses:
            if self.guard.refuses(address):
                raise DecodeError(f"private address {address} refused")
        return str(addresses[0])

    def _get(self, url: httpx.URL, deadline: float, conditional: Validators | None = None) -> _Hop:
        """GET one hop: a redirect's Location, the body, or (asked ``conditional``ly) a 304."""
        port = url.port or (443 if url.scheme == "https" else 80)
        address = self._pinned_address(url.host, port)
        pinned = url.copy_with(host=address)
        host_header = url.host if url.port is None else f"{url.host}:{url.port}"
        extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
        slot = self._host_slot(url.host)
        remaining = deadline - time.monotonic()
        timed_out = f"timed out after {self.options.timeout_s:g} s"
        if remaining <= 0:
            raise _Transient(timed_out)
        with slot:
            try:
                headers = {"Host": host_header, **(conditional.request_headers() if conditional else {})}
                with self.client().stream("GET", pinned, headers=headers, extensions=extensions,
                                          timeout=httpx.Timeout(remaining)) as response:
                    location = self._redirect(response)
                    if location is not None:
                        return _Hop(location=location)
                    validators = Validators.of(response.headers)
                    if conditional is not None and response.status_code == 304:
                        return _Hop(validators=validators)
                    self._check_headers(response)
                    return _Hop(body=self._read_body(response, deadline, timed_out), validators=validators)
            except httpx.TimeoutException:
                raise _Transient(timed_out) from None
            except httpx.TransportError as exc:
                raise _Transient(f"cannot connect: {str(exc) or exc.__class__.__name__}") from None

    def _host_slot(self, host: str) -> threading.BoundedSemaphore:
        with self._lock:
            return self._hosts.setdefault(host, threading.BoundedSemaphore(self.options.per_host))

    @staticmethod
    def _redirect(response: httpx.Response) -> str | None:
        if response.status_code in _REDIRECTS:
            location = response.headers.get("Location")
            if location:
                return location
        return None

    def _check_headers(self, response: httpx.Response) -> None:
        """Fail the item from its status and headers, before any of the body is read."""
        code = response.status_code
        if code == 429:
            raise _Transient("http 429", _retry_after_seconds(response.headers.get("Retry-After")))
        if code >= 500:
            raise _Transient(f"http {code}")
        if code != 200:
            raise DecodeError(f"http {code}")
        if self.options.respect_opt_outs:
            directive = opt_out_directive(response.headers.get_list("X-Robots-Tag"), self.options.user_agent_token)
            if directive is not None:
                raise DecodeError(f"opted out: X-Robots-Tag {directive}")
        content_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if content_type and not content_type.startswith("image/") and content_type != "application/octet-stream":
            raise DecodeError(f"not an image ({content_type})")
        length = response.headers.get("Content-Length")
        if length is not None and length.strip().isdigit() and int(length) > self.options.max_bytes:
            raise DecodeError(f"body over {self.options.max_bytes} bytes")

    def _read_body(self, response: httpx.Response, deadline: float, timed_out: str) -> bytes:
        """The whole body, cut off at the size limit and at the deadline."""
        chunks: list[bytes] = []
        total = 0
        for chunk in response.iter_bytes():
            total += len(chunk)
            if total > self.options.max_bytes:
                raise DecodeError(f"body over {self.options.max_bytes} bytes")
            if time.monotonic() > deadline:
                raise _Transient(timed_out)
            chunks.append(chunk)
        return b"".join(chunks)


@dataclass(frozen=True, slots=True)
class _Hop:
    """What one request gave: where it redirects to, or the body (None with a 304) and its validators."""

    location: str | None = None
    body: bytes | None = None
    validators: Validators | None = None


@dataclass(frozen=True, slots=True)
class Fetched:
    """A fetched body and, from an HTTP server, the validators it came with."""

    body: bytes
    validators: Validators | None = None


@dataclass(frozen=True, slots=True)
class Revalidated:
    """What a conditional GET found: ``body`` None when the server answered 304 (not modified)."""

    body: bytes | None
    validators: Validators

    @property
    def not_modified(self) -> bool:
        return self.body is None


class Fetcher(Protocol):
    """What a ``Prefetcher`` reads with: a remote item's bytes by URI (``DecodeError`` on failure)."""

    @property
    def concurrency(self) -> int: ...

    def fetch_item(self, uri: str) -> Fetched: ...

    def close(self) -> None: ...


class Prefetcher:
    """Reads the items of a work unit from a remote source, fetching ahead of the decoder (a
    window of ``4 x concurrency`` items in flight), so the encoder does not wait for the network."""

    def __init__(self, fetcher: Fetcher, refs: Sequence[ItemRef]) -> None:
        self.fetcher = fetcher
        self._refs = list(refs)
        self._index = {ref.key: index for index, ref in enumerate(self._refs)}
        self._window = 4 * fetcher.concurrency
        self._pool = ThreadPoolExecutor(fetcher.concurrency, thread_name_prefix="mmindex-fetch")
        self._futures: dict[int, Future[Fetched]] = {}
        self._validators: dict[str, Validators] = {}
        self._submitted = 0
        self._lock = threading.Lock()
        self._fill(0)

    def _fill(self, through: int) -> None:
        with self._lock:
            while self._submitted < len(self._refs) and self._submitted <= through + self._window:
                ref = self._refs[self._submitted]
                self._futures[self._submitted] = self._pool.submit(self.fetcher.fetch_item, ref.uri)
                self._submitted += 1

    def read(self, ref: ItemRef, max_bytes: int) -> bytes:
        """The item's body (waiting for its fetch), or a ``DecodeError`` with the reason."""
        index = self._index.get(ref.key)
        if index is None:
            fetched = self.fetcher.fetch_item(ref.uri)
        else:
            self._fill(index)
            with self._lock:
                future = self._futures.pop(index, None)
            fetched = future.result() if future is not None else self.fetcher.fetch_item(ref.uri)
        if len(fetched.body) > max_bytes:
            raise DecodeError(f"body over {max_bytes} bytes")
        if fetched.validators is not None:
            with self._lock:
                self._validators[ref.key] = fetched.validators
        return fetched.body

    def validators(self, ref: ItemRef) -> Validators | None:
        """The validators of the body ``read`` gave for ``ref`` (asked once)."""
        with self._lock:
            return self._validators.pop(ref.key, None)

    def close(self) -> None:
        """Stop fetching (pending fetches are cancelled) and close the connections."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.fetcher.close()
