"""``mmindex serve`` against a real server process on 127.0.0.1: every endpoint, every error status,
the API key, the limits, the page's safety headers. The tiny random-weight model serves the photo
corpus on the embedded store; rankings are checked against brute force over the Parquet shards."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from fake_qdrant import FakeQdrant
from helpers import COLLECTION, PRECISION, SCORE_TOL, WAIT_S, Indexed, free_port, image_vector, index_corpus, run_cli
from helpers_serve import Server, start_server, stop_server
from PIL import Image

KEY = "s3cret-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def edge_index(tmp_path_factory: pytest.TempPathFactory, photo_corpus: Path, tiny_local_dir: Path) -> Indexed:
    return index_corpus("edge", tmp_path_factory.mktemp("serve"), photo_corpus, tiny_local_dir)


@pytest.fixture(scope="module")
def server(edge_index: Indexed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The photo corpus served with an API key (from the environment) and a small upload limit."""
    log = tmp_path_factory.mktemp("serve-log") / "server.log"
    started = start_server(edge_index.root, log, "-c", COLLECTION, "--max-upload-bytes", "400000",
                           env={"MMINDEX_API_KEY": KEY})
    yield started
    stop_server(started)
    assert KEY not in started.output()


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as session:
        yield session


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG_BYTES = png_bytes()


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def keys(hits: list[dict]) -> list[str]:
    return [hit["key"] for hit in hits]


# -- auth --------------------------------------------------------------------------------------


def test_health_needs_no_key_and_every_other_endpoint_does(server: Server) -> None:
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok", "collections": [COLLECTION]}
    for method, path in (("GET", "/collections"), ("POST", "/search"), ("POST", "/search/files"), ("POST", "/retrieve"),
                         ("POST", "/embed"), ("GET", f"/items/{'0' * 8}-0000-0000-0000-{'0' * 12}"),
                         ("GET", "/thumbnails/x")):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
            if path == "/search/files":  # a well-formed multipart query: refused for the key alone
                response = httpx.post(f"{server.url}{path}", headers=headers, data={"query": '{"limit": 2}'},
                                      files=[("image", ("cat.png", PNG_BYTES, "image/png"))])
            else:
                response = httpx.request(method, f"{server.url}{path}", headers=headers, json={"text": "a cat"})
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            assert "API key" in response.json()["detail"]


def test_collections_shows_what_info_json_shows(client: httpx.Client, edge_index: Indexed) -> None:
    body = client.get("/collections").json()
    assert body["root"] == str(edge_index.root)
    (info,) = body["collections"]
    assert info["name"] == COLLECTION
    assert info["points"] == len(edge_index.reference.keys)
    assert info["backend"] == "embedded qdrant-edge"


# -- search ------------------------------------------------------------------------------------


def test_image_upload_search_ranks_as_brute_force(client: httpx.Client, edge_index: Indexed, tiny_embedder) -> None:
    cat = edge_index.corpus / "animals" / "cat.png"
    hits = client.post("/search", json={"image": b64(cat), "where": ["modality=image"], "limit": 3}).json()
    reference = edge_index.reference
    expected = reference.ranking(image_vector(tiny_embedder, cat), lambda i: reference.modality[i] == "image")[:3]
    assert keys(hits) == [key for key, _ in expected]
    assert [hit["score"] for hit in hits] == pytest.approx([score for _, score in expected], abs=SCORE_TOL)
    first = hits[0]
    assert first["point_id"] == first["id"] and first["score_kind"] == "cosine"
    assert first["payload"]["modality"] == "image"
    assert sum(term["contribution"] for term in first["contributions"]) == pytest.approx(first["score"], abs=SCORE_TOL)


def test_image_files_search_as_their_base64(client: httpx.Client, edge_index: Indexed) -> None:
    """POST /search/files: the same query with its images as multipart files answers as /search."""
    cat, astronaut = edge_index.corpus / "animals" / "cat.png", edge_index.corpus / "people" / "astronaut.jpg"
    query = {"where": ["modality=image"], "limit": 3}
    as_base64 = client.post("/search", json={**query, "image": b64(cat), "not_image": b64(astronaut)}).json()
    as_files = client.post("/search/files", data={"query": json.dumps(query)},
                           files=[("image", ("cat.png", cat.read_bytes(), "image/png")),
                                  ("not_image", ("astronaut.jpg", astronaut.read_bytes(), "image/jpeg"))])
    assert as_files.status_code == 200, as_files.text
    assert keys(as_files.json()) == keys(as_base64)
    assert [hit["score"] for hit in as_files.json()] == pytest.approx([hit["score"] for hit in as_base64], abs=SCORE_TOL)
    both = client.post("/search/files", data={"query": json.dumps({"image": b64(cat)})},
                       files=[("image", ("cat.png", cat.read_bytes(), "image/png"))])
    assert both.status_code == 400 and "not both" in both.json()["detail"]
    bad = client.post("/search/files", data={"query": '{"limit": 0}'}, files=[("image", ("c.png", b"x", "image/png"))])
    assert bad.status_code == 422
    big = client.post("/search/files", files=[("image", ("a.bin", os.urandom(250_000), "image/png")),
                                              ("image", ("b.bin", os.urandom(250_000), "image/png"))])
    assert big.status_code == 413 and "limit" in big.json()["detail"]


def test_like_excludes_the_item_and_offset_pages(client: httpx.Client, edge_index: Indexed) -> None:
    reference = edge_index.reference
    cat_key = next(key for key in reference.keys if key.endswith("cat.png"))
    whole = client.post("/search", json={"like": cat_key, "limit": 4}).json()
    expected = [key for key, _ in reference.ranking(reference.vector(cat_key)) if key != cat_key][:4]
    assert keys(whole) == expected
    page = client.post("/search", json={"like": cat_key, "limit": 2, "offset": 2}).json()
    assert keys(page) == expected[2:4]
    # mmindex query --offset pages the same way; the server hands its open shard over to it
    assert [hit["key"] for hit in edge_index.query("--like", cat_key, "--limit", "2", "--offset", "2")] == expected[2:4]
    assert keys(client.post("/search", json={"like": cat_key, "limit": 4}).json()) == expected  # and re-opens it


def test_fused_text_query_with_negative_and_weights(client: httpx.Client, edge_index: Indexed) -> None:
    hits = client.post("/search", json={"text": ["a cat", "a rug"], "not_text": "a rocket", "weights": [1, 0.5, 0.5],
                                        "limit": 3, "mode": "clip"}).json()
    assert len(hits) == 3
    terms = hits[0]["contributions"]
    assert [(term["kind"], term["weight"], term["sign"]) for term in terms] == [("text", 1, 1), ("text", 0.5, 1), ("text", 0.5, -1)]
    assert [term["value"] for term in terms] == ["a cat", "a rug", "a rocket"]


def test_a_vector_query_answers_as_its_text(client: httpx.Client) -> None:
    vector = client.post("/embed", json={"text": "a cat"}).json()["vectors"][0]
    by_vector = client.post("/search", json={"vector": vector, "where": ["modality=image"], "limit": 4}).json()
    by_text = client.post("/search", json={"text": "a cat", "where": ["modality=image"], "limit": 4, "mode": "clip"}).json()
    assert keys(by_vector) == keys(by_text)
    assert by_vector[0]["contributions"][0]["kind"] == "vector"
    assert client.post("/search", json={"vector": [0.1, 0.2]}).status_code == 400  # wrong dimension


def test_bad_filter_is_400_with_the_cli_message(client: httpx.Client, edge_index: Indexed) -> None:
    from helpers import run_cli

    response = client.post("/search", json={"text": "a cat", "where": ["year>>2"]})
    assert response.status_code == 400
    cli = run_cli("query", "a cat", "-c", COLLECTION, "--where", "year>>2", "--root", str(edge_index.root))
    assert response.json()["detail"] in cli.stderr.replace("\n", " ")


@pytest.mark.parametrize(("body", "status"), [
    ({"text": "a cat", "collection": "nope"}, 404),
    ({"like": "no-such-item"}, 400),
    ({"text": "a cat", "limit": 0}, 422),
    ({"text": "a cat", "limit": 100_000}, 422),
    ({"text": "a cat", "bogus": 1}, 422),
    ({"image": "not base64!"}, 400),
    ({"image": base64.b64encode(b"not an image").decode()}, 400),
    ({}, 400),
])
def test_error_statuses(client: httpx.Client, body: dict, status: int) -> None:
    response = client.post("/search", json=body)
    assert response.status_code == status, response.text
    assert response.json()["detail"]


def test_uploads_over_the_limit_are_413(client: httpx.Client) -> None:
    big = base64.b64encode(os.urandom(250_000)).decode()
    response = client.post("/search", json={"image": [big, big]})  # 500 kB decoded, the limit 400 kB
    assert response.status_code == 413 and "limit" in response.json()["detail"]
    huge = b"{" + b" " * 2_000_000 + b"}"  # a body over the limit, refused before it is read
    response = client.post("/search", content=huge, headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and "limit" in response.json()["detail"]


# -- retrieve, items, thumbnails, embed --------------------------------------------------------


def test_retrieve_answers_text_passages(client: httpx.Client) -> None:
    passages = client.post("/retrieve", json={"question": "a rocket launch", "k": 2}).json()
    assert 1 <= len(passages) <= 2
    assert all(p["modality"] == "text" and p["text"] and p["score_kind"] == "cosine" for p in passages)
    assert client.post("/retrieve", json={"question": "x", "mode": "dense"}).status_code == 400  # no text model


def test_items_and_thumbnails(client: httpx.Client, edge_index: Indexed) -> None:
    hits = client.post("/search", json={"text": "a photo", "limit": 20, "mode": "clip"}).json()
    image = next(hit for hit in hits if hit["payload"]["modality"] == "image")
    text = next(hit for hit in hits if hit["payload"]["modality"] == "text")
    item = client.get(f"/items/{image['point_id']}", params={"collection": COLLECTION}).json()
    assert item == {"key": image["key"], "point_id": image["point_id"], "payload": image["payload"]}
    thumb = client.get(f"/thumbnails/{image['point_id']}")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    decoded = Image.open(io.BytesIO(thumb.content))
    assert decoded.format == "JPEG" and max(decoded.size) <= 256
    assert client.get(f"/thumbnails/{image['point_id']}").content == thumb.content  # cached
    assert client.get(f"/thumbnails/{text['point_id']}").status_code == 404
    assert client.get("/items/00000000-0000-0000-0000-000000000000").status_code == 404
    assert client.get("/items/..%2F..%2Fetc%2Fpasswd").status_code == 404
    assert client.get(f"/items/{image['point_id']}", params={"collection": "nope"}).status_code == 404


def test_embed_matches_the_model(client: httpx.Client, edge_index: Indexed, tiny_embedder) -> None:
    body = client.post("/embed", json={"text": ["a cat", "a dog"]}).json()
    assert body["dim"] == 32 and body["embedder_id"] == tiny_embedder.embedder_id
    np.testing.assert_allclose(body["vectors"], tiny_embedder.encode_texts(["a cat", "a dog"]), atol=1e-5)
    cat = edge_index.corpus / "animals" / "cat.png"
    vector = client.post("/embed", json={"image": b64(cat)}).json()["vectors"][0]
    np.testing.assert_allclose(vector, image_vector(tiny_embedder, cat), atol=1e-4)
    assert client.post("/embed", json={"text": "a", "image": b64(cat)}).status_code == 400


# -- the page ----------------------------------------------------------------------------------


def test_page_and_static_files_are_served_safely(server: Server) -> None:
    page = httpx.get(f"{server.url}/?collection=photos&q=%3Cscript%3E")
    assert page.status_code == 200 and "<script>" not in page.text.split("</head>")[1]
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert page.headers["referrer-policy"] == "no-referrer"
    assert httpx.get(f"{server.url}/static/app.js").status_code == 200
    assert httpx.get(f"{server.url}/static/..%2Fapp.py").status_code == 404
    assert httpx.get(f"{server.url}/static/%2E%2E/service.py").status_code == 404
    assert "access-control-allow-origin" not in httpx.get(f"{server.url}/health", headers={"Origin": "http://evil"}).headers
    assert httpx.get(f"{server.url}/docs").status_code == 200


# -- CORS and the bind warning ----------------------------------------------------------------------

ORIGIN = "http://app.example"
PREFLIGHT = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization,content-type"}


def test_cors_is_off_unless_an_origin_is_given(server: Server, edge_index: Indexed, tmp_path: Path) -> None:
    off = httpx.options(f"{server.url}/search", headers=PREFLIGHT)
    assert off.status_code == 405 and not any(name.startswith("access-control-") for name in off.headers)
    answered = httpx.post(f"{server.url}/search", headers={**AUTH, "Origin": ORIGIN}, json={"text": "a cat", "limit": 1})
    assert answered.status_code == 200 and "access-control-allow-origin" not in answered.headers
    cors = start_server(edge_index.root, tmp_path / "cors.log", "-c", COLLECTION, "--cors-origin", ORIGIN,
                        env={"MMINDEX_API_KEY": KEY})
    try:
        preflight = httpx.options(f"{cors.url}/search", headers=PREFLIGHT)
        assert preflight.status_code == 200, preflight.text
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-credentials" not in preflight.headers  # a bearer key, never cookies
        hits = httpx.post(f"{cors.url}/search", headers={**AUTH, "Origin": ORIGIN}, json={"text": "a cat", "limit": 1},
                          timeout=WAIT_S)
        assert hits.status_code == 200 and hits.headers["access-control-allow-origin"] == ORIGIN
        refused = httpx.post(f"{cors.url}/search", headers={"Origin": ORIGIN}, json={"text": "a cat"})
        assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ORIGIN
        other = {**PREFLIGHT, "Origin": "http://evil.example"}
        denied = httpx.options(f"{cors.url}/search", headers=other)
        assert denied.status_code == 400 and "access-control-allow-origin" not in denied.headers
        elsewhere = httpx.post(f"{cors.url}/search", headers={**AUTH, "Origin": "http://evil.example"},
                               json={"text": "a cat", "limit": 1}, timeout=WAIT_S)
        assert elsewhere.status_code == 200 and "access-control-allow-origin" not in elsewhere.headers
    finally:
        stop_server(cors)
    assert KEY not in cors.output()


def test_only_loopback_addresses_count_as_local() -> None:
    from mmindex.pipeline.cli.serve import is_loopback

    assert all(is_loopback(host) for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost", "LOCALHOST"))
    assert not any(is_loopback(host) for host in ("0.0.0.0", "::", "192.0.2.1", "10.0.0.1", "example.org", ""))


@pytest.mark.parametrize("key", [None, KEY])
def test_binding_beyond_loopback_without_a_key_warns(edge_index: Indexed, key: str | None) -> None:
    """192.0.2.1 (TEST-NET-1) is no address of this machine: the warning (or none, with a key) is
    printed after the models load, then binding fails and the server exits: nothing listens."""
    env = {k: v for k, v in os.environ.items() if k != "MMINDEX_API_KEY"}
    done = subprocess.run(
        [sys.executable, "-m", "mmindex.pipeline.cli", "serve", "--root", str(edge_index.root), "-c", COLLECTION,
         "--host", "192.0.2.1", "--port", str(free_port()), "--device", "cpu"],
        capture_output=True, text=True, timeout=WAIT_S,
        env={**env, "MMINDEX_PRECISION": PRECISION, **({"MMINDEX_API_KEY": key} if key else {})},
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    warned = "listening on 192.0.2.1 without --api-key: anyone who reaches it can search"
    assert (warned in " ".join(output.split())) is (key is None), output
    assert KEY not in output


# -- queries while an ingest runs in another process; no key --------------------------------------


def test_queries_answer_while_an_ingest_runs_in_another_process(
    tmp_path_factory: pytest.TempPathFactory, photo_corpus: Path, tiny_local_dir: Path
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from skimage import data

    base = tmp_path_factory.mktemp("serve-ingest")
    indexed = index_corpus("edge", base, photo_corpus, tiny_local_dir)
    more = base / "more"
    more.mkdir()
    for index, array in enumerate((data.coins(), data.moon(), data.horse(), data.clock(), data.page())):
        Image.fromarray(array if array.dtype == np.uint8 else (array * 255).astype(np.uint8)).save(more / f"m{index}.png")
    server = start_server(indexed.root, base / "server.log", "-c", COLLECTION)
    try:
        with httpx.Client(base_url=server.url, timeout=WAIT_S) as client:  # no key set: open
            before = client.get("/collections").json()["collections"][0]["points"]
            assert before == len(indexed.reference.keys)
            ingest = subprocess.Popen(
                [sys.executable, "-m", "mmindex.pipeline.cli", "index", str(more), "-c", COLLECTION, "--root",
                 str(indexed.root), "--model", f"local-dir:{tiny_local_dir}", "--workers", "0", "--json"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                env={**os.environ, "MMINDEX_PRECISION": PRECISION},
            )

            cat_key = next(key for key in indexed.reference.keys if key.endswith("cat.png"))

            def query_until_done(_worker: int) -> list[int]:  # like queries: no encode, the store's work only
                statuses, counts = [], []
                while ingest.poll() is None or not statuses:
                    response = client.post("/search", json={"like": cat_key, "limit": 50})
                    statuses.append(response.status_code)
                    counts.append(len(response.json()))
                assert set(counts) <= {before - 1, before + 4}, counts  # before or after the commit, never torn
                return statuses

            with ThreadPoolExecutor(2) as pool:
                statuses = [status for result in pool.map(query_until_done, range(2)) for status in result]
            stdout, stderr = ingest.communicate(timeout=WAIT_S)
            assert ingest.returncode == 0, stderr
            assert set(statuses) == {200}, statuses
            assert client.get("/collections").json()["collections"][0]["points"] == before + 5
            assert len(client.post("/search", json={"text": "a photo", "limit": 50, "mode": "clip"}).json()) == before + 5
    finally:
        stop_server(server)


# -- the page in a real browser (Chromium over the DevTools protocol) ---------------------------------

CHROMIUM = next((found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None)


class DevTools:
    """One Chromium page driven over the DevTools protocol (a websocket on 127.0.0.1)."""

    def __init__(self, websocket_url: str) -> None:
        from websockets.sync.client import connect

        self.socket = connect(websocket_url, max_size=None, open_timeout=WAIT_S)
        self.next_id = 0

    def call(self, method: str, **params: object) -> dict:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:  # events arrive between the answers; the answer carries our id
            message = json.loads(self.socket.recv(timeout=WAIT_S))
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message["result"]

    def evaluate(self, expression: str) -> object:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def wait_for(self, expression: str) -> object:
        """Poll ``expression`` until it is truthy (bounded)."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"page never satisfied {expression}: {self.evaluate('document.body.innerText')}")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[DevTools]:
    if CHROMIUM is None:
        pytest.skip("no chromium binary on PATH (Debian: apt-get install -y chromium)")
    port = free_port()
    process = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         f"--remote-debugging-port={port}", "--remote-debugging-address=127.0.0.1",
         f"--user-data-dir={tmp_path / 'profile'}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + WAIT_S
        pages: list[dict] = []
        while not pages and time.monotonic() < deadline:
            try:
                pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=2).json() if t["type"] == "page"]
            except httpx.TransportError:
                time.sleep(0.2)
        assert pages, "chromium did not open its DevTools port"
        tools = DevTools(pages[0]["webSocketDebuggerUrl"])
        yield tools
        tools.socket.close()
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_page_searches_shares_its_url_and_more_like_this_excludes_the_item(server: Server, browser: DevTools) -> None:
    browser.call("Page.navigate", url=f"{server.url}/")
    browser.wait_for("document.readyState === 'complete' && document.getElementById('collection').options.length > 0")
    browser.evaluate(f"sessionStorage.setItem('mmindex-key', {json.dumps(KEY)})")
    browser.evaluate("document.getElementById('q').value = 'a photo of a cat'; "
                     "document.querySelector('#search button[type=submit]').click()")
    browser.wait_for("document.querySelectorAll('.card').length > 0")
    assert browser.evaluate("location.search") == "?collection=photos&q=a+photo+of+a+cat"
    first = browser.evaluate("document.querySelector('.card').dataset.key")
    # images render as thumbnails fetched with the key
    browser.wait_for("[...document.querySelectorAll('.card img')].some((img) => img.complete && img.naturalWidth > 0)")
    browser.evaluate("document.querySelector('.card .more-like-this').click()")
    browser.wait_for("location.search.includes('like=') && document.querySelectorAll('.card').length > 0 && "
                     "!document.getElementById('status').textContent.startsWith('searching')")
    shown = browser.evaluate("[...document.querySelectorAll('.card')].map((card) => card.dataset.key)")
    assert first not in shown and len(shown) > 0
    # a shared URL opens with its results; user text is shown as text, never run as markup
    hostile = "<img src=x onerror=window.pwned=1>"
    browser.call("Page.navigate", url=f"{server.url}/?collection=photos&q={quote(hostile)}&mode=clip")
    browser.wait_for("document.querySelectorAll('.card').length > 0")
    assert browser.evaluate("document.getElementById('q').value") == hostile
    assert browser.evaluate("window.pwned === undefined && document.querySelectorAll('img[src=x]').length === 0")


def test_serving_an_unknown_collection_is_a_one_line_error(edge_index: Indexed) -> None:
    from helpers import assert_one_line_error, run_cli

    result = run_cli("serve", "-c", "nope", "--root", str(edge_index.root), "--port", str(free_port()))
    assert_one_line_error(result, "no collection 'nope'", code=2)


def test_serving_a_collection_on_a_qdrant_server_answers_as_the_cli(
    tmp_path: Path, photo_corpus: Path, tiny_local_dir: Path
) -> None:
    """The server backend under `mmindex serve` (the fake Qdrant of tests/fake_qdrant.py): the same
    hits as `mmindex query --json` on it, items read back, and the store's key never printed."""
    with FakeQdrant(api_key="fake-qdrant-key") as fake:
        env = {"QDRANT_URL": fake.url, "QDRANT_API_KEY": "fake-qdrant-key", "MMINDEX_PRECISION": PRECISION}
        root = tmp_path / "root"
        done = run_cli("index", str(photo_corpus), "-c", COLLECTION, "--root", str(root), "--model",
                       f"local-dir:{tiny_local_dir}", "--text-model", "none", env=env)
        assert done.code == 0, done.stderr
        cli = run_cli("query", "a cat on a sofa", "-c", COLLECTION, "--root", str(root), "--json", "--limit", "4", env=env)
        assert cli.code == 0, cli.stderr
        queried = fake.count("POST /points/query")
        server = start_server(root, tmp_path / "server.log", "-c", COLLECTION, env=env)
        try:
            hits = httpx.post(f"{server.url}/search", json={"text": "a cat on a sofa", "limit": 4}, timeout=60).json()
            assert keys(hits) == [hit["key"] for hit in json.loads(cli.stdout)]
            assert [hit["score"] for hit in hits] == pytest.approx([hit["score"] for hit in json.loads(cli.stdout)],
                                                                   abs=SCORE_TOL)
            assert fake.count("POST /points/query") > queried  # answered by the server, not a local copy
            item = httpx.get(f"{server.url}/items/{hits[0]['point_id']}", timeout=60).json()
            assert item["key"] == hits[0]["key"]
            (info,) = httpx.get(f"{server.url}/collections", timeout=60).json()["collections"]
            (expected,) = json.loads(run_cli("info", "-c", COLLECTION, "--root", str(root), "--json",
                                             env=env).stdout)["collections"]
            assert info["points"] == expected["points"] > 0 and info["backend"] == expected["backend"] != "embedded qdrant-edge"
        finally:
            stop_server(server)
        assert "fake-qdrant-key" not in server.output()


def test_responses_mask_credentials_inside_urls() -> None:
    """Every JSON answer of the app masks keys inside URLs (a payload uri signed for a bucket, a
    root with userinfo), as the CLI's --json does; the rest of the body is unchanged JSON."""
    from mmindex.pipeline.serve.app import RedactedJSONResponse

    body = {"uri": "https://bucket.example/a.jpg?X-Amz-Signature=s3cret&size=2", "root": "s3://key:s3cret@bucket/i",
            "key": "notes/[b].txt", "score": 0.5}
    rendered = json.loads(RedactedJSONResponse(body).body)
    assert "s3cret" not in json.dumps(rendered)
    assert rendered["uri"].startswith("https://bucket.example/a.jpg?X-Amz-Signature=") and rendered["uri"].endswith("&size=2")
    assert rendered["key"] == body["key"] and rendered["score"] == 0.5
