"""A fake Qdrant server for the server path's fault tests: a real HTTP server on 127.0.0.1 that
speaks the REST routes mmindex uses, backed by qdrant-client's local mode (in memory), with
faults injected in front of it (a reset connection before or after the request is applied, an
HTTP status such as 503 or 429, a response slower than the client's timeout). It counts the
requests per route and checks the API key. Every loop it runs is bounded.

``FakeQdrant.fail(route, kind, times=..., after=...)`` schedules a fault: ``route`` is
``"METHOD /path-suffix"`` matched against the end of the path (``"PUT /points"`` is every
upsert), ``kind`` is ``"reset"`` (close the connection without an answer, the request not
applied), ``"reset-after"`` (applied, then closed: the answer is lost), ``"503"``, ``"429"`` (with
``Retry-After: 0``) or ``"slow"`` (answer after ``slow_seconds``); ``after`` matching requests
pass first, then ``times`` fail.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from helpers import LoopbackServer
from qdrant_client import QdrantClient, models

_ROUTE = re.compile(r"^/collections(?:/(?P<name>[^/]+)(?P<rest>/.*)?)?$")


@dataclass
class Fault:
    route: str
    kind: str
    times: int
    after: int
    seen: int = 0


class FakeQdrant(LoopbackServer):
    """The fake server (a context manager); ``url`` is its address."""

    def __init__(self, api_key: str | None = None, slow_seconds: float = 3.0) -> None:
        self.local = QdrantClient(location=":memory:")
        self.api_key = api_key
        self.slow_seconds = slow_seconds
        self.faults: list[Fault] = []
        self.requests: dict[str, int] = {}
        self.lock = threading.Lock()
        self.store_lock = threading.Lock()
        self._listen()
        self.url = f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self.local.close()

    def fail(self, route: str, kind: str, times: int = 1, after: int = 0) -> None:
        with self.lock:
            self.faults.append(Fault(route, kind, times, after))

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def count(self, route: str) -> int:
        with self.lock:
            return sum(n for key, n in self.requests.items() if key.startswith(route.split(" ")[0] + " ")
                       and key.endswith(route.split(" ", 1)[1]))

    def _fault_for(self, method: str, path: str) -> str | None:
        with self.lock:
            self.requests[f"{method} {path}"] = self.requests.get(f"{method} {path}", 0) + 1
            firing = None
            for fault in self.faults:  # every fault counts every matching request
                fault_method, suffix = fault.route.split(" ", 1)
                if fault_method == method and path.endswith(suffix):
                    fault.seen += 1
                    if firing is None and fault.after < fault.seen <= fault.after + fault.times:
                        firing = fault.kind
        return firing

    # -- the REST routes mmindex uses, on the local client --------------------------------

    def _apply(self, method: str, path: str, query: str, body: dict[str, Any]) -> Any:
        if path == "/aliases" and method == "GET":
            return self.local.get_aliases().model_dump(mode="json")
        if path == "/collections/aliases" and method == "POST":
            change = models.ChangeAliasesOperation.model_validate(body)
            return self.local.update_collection_aliases(change.actions)
        found = _ROUTE.match(path)
        if found is None:
            raise KeyError(path)
        name, rest = found["name"], found["rest"] or ""
        local = self.local
        if name is None:
            return local.get_collections().model_dump(mode="json")
        if rest == "/exists":
            return {"exists": local.collection_exists(name)}
        if rest == "" and method == "GET":
            return local.get_collection(name).model_dump(mode="json")
        if rest == "" and method == "PUT":
            create = models.CreateCollection.model_validate(body)
            return local.create_collection(name, vectors_config=create.vectors,
                                           sparse_vectors_config=create.sparse_vectors)
        if rest == "" and method == "DELETE":
            return local.delete_collection(name)
        if rest == "" and method == "PATCH":
            return True  # optimizer settings: nothing to change in local mode
        if rest == "/index" and method == "PUT":
            index = models.CreateFieldIndex.model_validate(body)
            return local.create_payload_index(name, index.field_name, index.field_schema).model_dump(mode="json")
        if rest == "/points" and method == "PUT":
            points = models.PointsList.model_validate(body)
            return local.upsert(name, points.points).model_dump(mode="json")
        if rest == "/points" and method == "POST":
            request = models.PointRequest.model_validate(body)
            records = local.retrieve(name, request.ids, with_payload=request.with_payload or False,
                                     with_vectors=request.with_vector or False)
            return [record.model_dump(mode="json") for record in records]
        if rest == "/points/delete":
            selector: Any = (models.PointIdsList.model_validate(body) if "points" in body
                             else models.FilterSelector.model_validate(body))
            return local.delete(name, selector).model_dump(mode="json")
        if rest == "/points/count":
            request_count = models.CountRequest.model_validate(body)
            return local.count(name, count_filter=request_count.filter).model_dump(mode="json")
        if rest == "/points/scroll":
            scroll = models.ScrollRequest.model_validate(body)
            records, offset = local.scroll(name, scroll_filter=scroll.filter, limit=scroll.limit or 10,
                                           offset=scroll.offset, with_payload=scroll.with_payload or False,
                                           with_vectors=scroll.with_vector or False)
            return {"points": [record.model_dump(mode="json") for record in records], "next_page_offset": offset}
        if rest == "/points/query":
            request_query = models.QueryRequest.model_validate(body)
            response = local.query_points(
                name, query=request_query.query, using=request_query.using, prefetch=request_query.prefetch,
                query_filter=request_query.filter, limit=request_query.limit or 10,
                with_payload=request_query.with_payload or False, with_vectors=request_query.with_vector or False,
                score_threshold=request_query.score_threshold)
            return response.model_dump(mode="json")
        raise KeyError(f"{method} {path}")

    def _handler(self) -> type:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return None

            def _answer(self, code: int, payload: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _reset(self) -> None:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                self.close_connection = True
                self.connection.close()

            def _serve(self) -> None:
                path, _, query = self.path.partition("?")
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if fake.api_key is not None and self.headers.get("api-key") != fake.api_key:
                    self._answer(401, {"status": {"error": "Unauthorized"}})
                    return
                fault = fake._fault_for(self.command, path)
                if fault == "reset":
                    self._reset()
                    return
                if fault in ("503", "429"):
                    headers = {"Retry-After": "0"} if fault == "429" else {}
                    self._answer(int(fault), {"status": {"error": "injected"}}, headers)
                    return
                if fault == "slow":
                    time.sleep(fake.slow_seconds)
                try:
                    with fake.store_lock:
                        result = fake._apply(self.command, path, query, json.loads(raw) if raw else {})
                except KeyError as exc:
                    self._answer(404, {"status": {"error": f"Not found: {exc}"}})
                    return
                except ValueError as exc:
                    self._answer(400, {"status": {"error": str(exc)}})
                    return
                if fault == "reset-after":
                    self._reset()
                    return
                self._answer(200, {"result": result, "status": "ok", "time": 0.0})

            def do_GET(self) -> None:
                self._serve_safely()

            do_PUT = do_POST = do_DELETE = do_PATCH = do_GET

            def _serve_safely(self) -> None:
                try:
                    self._serve()
                except (BrokenPipeError, ConnectionResetError, OSError):
                    return

        return Handler
