"""The HTTP fetcher against a real server on 127.0.0.1: each hostile behaviour gives its exact
reason, promptly; the private-network guard refuses before connecting; only transient failures
are retried."""

from __future__ import annotations

import io
import socket
import time
from pathlib import Path

import pytest
from helpers import ImageServer, finishes_within
from PIL import Image

from mmindex.pipeline.errors import DecodeError
from mmindex.pipeline.sources.base import UNKNOWN_SIZE, ItemRef
from mmindex.pipeline.sources.fetch import HttpFetcher, Prefetcher, opt_out_directive
from mmindex.schemas.state import FetchOptions

LOCAL = ["127.0.0.1/32"]


def jpeg_bytes() -> bytes:
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.chelsea()).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server():
    with ImageServer() as running:
        running.add_image("flaky", jpeg_bytes())
        yield running


def fetcher(**options) -> tuple[HttpFetcher, list[float]]:
    slept: list[float] = []
    base = {"allow_networks": LOCAL, "timeout_s": 1.0, "retries": 0, "max_bytes": 1_000_000}
    return HttpFetcher(FetchOptions(**{**base, **options}), sleep=slept.append), slept


def reason(fetch: HttpFetcher, url: str, within: float = 10.0) -> str:
    def attempt() -> str:
        with pytest.raises(DecodeError) as failed:
            fetch.fetch(url)
        return str(failed.value)

    return str(finishes_within(within, attempt))


def test_good_jpeg_and_png_bodies(server: ImageServer) -> None:
    png = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(png, format="PNG")
    jpeg_url = server.add_image("cat.jpg", jpeg_bytes())
    png_url = server.add_image("red.png", png.getvalue(), "image/png")
    fetch, _ = fetcher()
    assert fetch.fetch(jpeg_url) == jpeg_bytes()
    assert fetch.fetch(png_url) == png.getvalue()


@pytest.mark.parametrize(
    ("path", "expected", "options"),
    [
        ("/missing.jpg", "http 404", {}),
        ("/trickle.jpg", "timed out after 1 s", {}),
        ("/endless.jpg", "body over 1000000 bytes", {}),
        ("/huge.jpg", "body over 1000000 bytes", {}),
        ("/to-file.jpg", "redirect to file: refused (scheme)", {}),
        ("/loop.jpg", "too many redirects", {}),
        ("/noai.jpg", "opted out: X-Robots-Tag noai", {}),
        ("/page.jpg", "not an image (text/html)", {}),
    ],
)
def test_hostile_responses_fail_with_their_reason(server: ImageServer, path: str, expected: str, options: dict) -> None:
    fetch, _ = fetcher(**options)
    started = time.monotonic()
    assert reason(fetch, server.url(path)) == expected
    assert time.monotonic() - started < 8  # the trickling server is cut off at its deadline, not after 40 s


def test_endless_body_is_cut_by_the_deadline_when_no_size_limit_is_reached(server: ImageServer) -> None:
    fetch, _ = fetcher(max_bytes=10**12, timeout_s=1.0)
    assert reason(fetch, server.url("/endless.jpg"), within=15) == "timed out after 1 s"


def test_other_schemes_fail_as_items() -> None:
    fetch, _ = fetcher()
    for url, scheme in (("file:///etc/passwd", "file"), ("ftp://example.org/x.jpg", "ftp"),
                        ("data:image/png;base64,AAAA", "data"), ("gopher://example.org/", "gopher")):
        assert reason(fetch, url) == f"scheme {scheme}: refused"


def test_only_transient_failures_are_retried_with_backoff(server: ImageServer) -> None:
    fetch, slept = fetcher(retries=2)
    before = dict(server.requests)
    assert fetch.fetch(server.url("/flaky.jpg")) == server.images["flaky"][0]  # 503, then 200
    assert server.requests["/flaky.jpg"] - before.get("/flaky.jpg", 0) == 2
    assert len(slept) == 1 and 0.25 <= slept[0] <= 0.75  # 0.5 s with jitter
    assert reason(fetch, server.url("/missing.jpg")) == "http 404"
    assert server.requests["/missing.jpg"] - before.get("/missing.jpg", 0) == 1  # a 404 is not retried
    assert len(slept) == 1


def test_429_honours_retry_after(server: ImageServer) -> None:
    fetch, slept = fetcher(retries=1)
    assert fetch.fetch(server.url("/busy.jpg")) == server.images["flaky"][0]
    assert slept and slept[0] >= 1.0


def test_guard_refuses_loopback_without_the_flag(server: ImageServer) -> None:
    before = sum(server.requests.values())
    fetch, _ = fetcher(allow_networks=[])
    assert reason(fetch, server.add_image("guarded.jpg", jpeg_bytes())) == "private address 127.0.0.1 refused"
    assert sum(server.requests.values()) == before  # no request reached the server
    allowed, _ = fetcher(allow_networks=[], allow_private_network=True)
    assert allowed.fetch(server.url("/img/guarded.jpg")) == jpeg_bytes()


def test_redirect_from_an_allowed_host_to_a_private_one_is_refused(server: ImageServer) -> None:
    fetch, _ = fetcher()  # --allow-network 127.0.0.1/32
    assert reason(fetch, server.url(f"/to-other/{server.port}")) == "private address 127.0.0.2 refused"


@pytest.mark.parametrize("address", ["10.0.0.3", "169.254.169.254", "::1", "::ffff:10.0.0.3", "224.0.0.1"])
def test_guard_refuses_private_addresses_without_connecting(monkeypatch: pytest.MonkeyPatch, address: str) -> None:
    connects: list[object] = []

    def no_connect(*args: object, **kwargs: object) -> socket.socket:
        connects.append(args)
        raise AssertionError("the guard must refuse before connecting")

    monkeypatch.setattr(socket, "create_connection", no_connect)
    fetch = HttpFetcher(FetchOptions(retries=0), resolver=lambda host, port: [address])
    shown = address.removeprefix("::ffff:")
    assert reason(fetch, "http://images.example.test/cat.jpg").startswith("private address ")
    assert shown in reason(fetch, "https://images.example.test/cat.jpg")
    assert connects == []


def test_every_resolved_address_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    fetch = HttpFetcher(FetchOptions(retries=0), resolver=lambda host, port: ["93.184.215.14", "10.0.0.3"])
    assert reason(fetch, "http://mixed.example.test/cat.jpg") == "private address 10.0.0.3 refused"


def test_the_connection_goes_to_the_validated_address(server: ImageServer) -> None:
    """The host is resolved once, by the guard's resolver, and the request goes to that address
    with the URL's host in the Host header (pinned: a second lookup cannot rebind it)."""
    lookups: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    fetch = HttpFetcher(FetchOptions(allow_networks=LOCAL, retries=0), resolver=resolver)
    url = f"http://cdn.example.test:{server.port}/img/flaky"
    assert fetch.fetch(url) == server.images["flaky"][0]
    assert lookups == ["cdn.example.test"]
    assert server.hosts[-1] == f"cdn.example.test:{server.port}"


def test_opt_out_directives_follow_img2dataset() -> None:
    assert opt_out_directive(["noai"], None) == "noai"
    assert opt_out_directive(["noindex, nofollow"], None) == "noindex"
    assert opt_out_directive(["otherbot: noai"], None) is None
    assert opt_out_directive(["mybot: noimageai"], "mybot") == "noimageai"
    assert opt_out_directive(["nofollow"], None) is None


def test_prefetcher_reads_each_item_once_in_any_order(server: ImageServer, tmp_path: Path) -> None:
    urls = [server.add_image(f"p{n}.jpg", jpeg_bytes()) for n in range(6)]
    refs = [ItemRef(key=f"m/{n}", source_id="m", uri=url, path=str(n), ext="jpg", modality="image",
                    size=UNKNOWN_SIZE, mtime_ns=0) for n, url in enumerate(urls)]
    before = server.bodies_sent()
    fetch, _ = fetcher(concurrency=2)
    reader = Prefetcher(fetch, refs)
    try:
        assert [reader.read(ref, 10**7) for ref in reversed(refs)] == [jpeg_bytes()] * 6
    finally:
        reader.close()
    assert server.bodies_sent() - before == 6


def test_revalidation_costs_no_body_until_the_content_changes(server: ImageServer) -> None:
    from mmindex.pipeline.sources.fetch import Validators

    url = server.add_image("revalidated.jpg", jpeg_bytes())
    fetch, _ = fetcher()
    first = fetch.revalidate(url, Validators())  # nothing known yet: an ordinary GET
    assert first.body == jpeg_bytes() and first.validators.etag
    sent = server.bodies_sent()
    unchanged = fetch.revalidate(url, first.validators)
    assert unchanged.not_modified and unchanged.validators == first.validators
    assert server.bodies_sent() == sent  # the 304 carried no body
    other = io.BytesIO()
    Image.new("RGB", (8, 8), "blue").save(other, format="JPEG")
    server.add_image("revalidated.jpg", other.getvalue())
    changed = fetch.revalidate(url, first.validators)
    assert changed.body == other.getvalue() and changed.validators.etag != first.validators.etag
    assert server.bodies_sent() == sent + 1
    fetch.close()
