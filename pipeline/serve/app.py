"""The FastAPI app of ``mmindex serve``: routes over ``SearchService``, errors as JSON with their
status, the API key, the request-size limit, CORS (off unless origins are given) and the page.

Every endpoint but ``/health`` and the page's static files (which hold no data) needs the key
when one is set: ``Authorization: Bearer KEY``, compared in constant time and never logged.
Errors answer ``{"detail": "one line"}``: 400 a bad query (the CLI's parser and messages), 401 a
missing or wrong key, 404 an unknown collection or item, 413 a body or upload over the limit,
422 a body that does not match its model, 503 a store that is busy or unavailable.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mmindex.pipeline.errors import (
    CollectionNotFoundError,
    ItemNotFoundError,
    MmindexError,
    ModelUnavailableError,
    RequestTooLargeError,
    StoreUnavailableError,
)
from mmindex.pipeline.redact import redact_secrets
from mmindex.pipeline.serve.requests import EmbedRequest, RetrieveRequest, SearchRequest
from mmindex.pipeline.serve.service import ImageFiles, JsonObject, SearchService

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
# A body carries base64 (4 bytes per 3) of at most the upload limit, plus the rest of the query.
_BODY_SLACK_BYTES = 256 << 10
_PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "
                "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_STATUS: tuple[tuple[type[MmindexError], int], ...] = (
    (CollectionNotFoundError, 404),
    (ItemNotFoundError, 404),
    (RequestTooLargeError, 413),
    (StoreUnavailableError, 503),
    (ModelUnavailableError, 503),
)

CollectionParam = Annotated[str | None, Query(max_length=200, description="Collection (default: the first served).")]


class RedactedJSONResponse(JSONResponse):
    """JSON with the credentials inside URLs masked (userinfo, signatures and tokens in a query:
    ``pipeline/redact.py``), as ``mmindex ... --json`` prints it: a stored root, run record or
    payload ``uri`` never hands a key to whoever can query the server.

    Rendered by orjson (compact UTF-8, as Starlette's; a tenth of ``json.dumps``'s time on a page
    of hits), and only scanned for secrets when it holds an ``@`` or ``=`` at all."""

    def render(self, content: Any) -> bytes:
        rendered = orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)
        if b"@" not in rendered and b"=" not in rendered:
            return rendered
        return redact_secrets(rendered.decode("utf-8")).encode("utf-8")


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """How the app guards itself: the API key (None: open), CORS origins (none: CORS off)."""

    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()

    def __repr__(self) -> str:  # the key never reaches a log line
        return f"ServeOptions(api_key={'set' if self.api_key else None}, cors_origins={self.cors_origins!r})"


def status_of(exc: MmindexError) -> int:
    """The HTTP status of an error: its class's, else 400 (the request asked for something invalid)."""
    return next((status for kind, status in _STATUS if isinstance(exc, kind)), 400)


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` (declared or streamed) is answered 413."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._too_large(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise RequestTooLargeError(f"request body over the limit of {self.max_bytes} bytes")
            return message

        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except RequestTooLargeError:
            if started:
                raise
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse({"detail": f"request body over the limit of {self.max_bytes} bytes"}, status_code=413)
        await response(scope, receive, send)


def create_app(service: SearchService, options: ServeOptions | None = None) -> FastAPI:
    """The app over ``service`` (which it closes on shutdown)."""
    options = options or ServeOptions()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        service.close()

    app = FastAPI(title="mmindex", summary="Search mmindex collections: texts, images, stored items, RAG passages.",
                  version="1", lifespan=lifespan, default_response_class=RedactedJSONResponse)

    def require_key(request: Request) -> None:
        if options.api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), options.api_key.encode()):
            raise _UnauthorizedError

    guarded = [Depends(require_key)]

    @app.exception_handler(MmindexError)
    async def _mmindex_error(request: Request, exc: MmindexError) -> JSONResponse:
        status = status_of(exc)
        if status >= 500:
            logger.warning("%s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal server error (see the server's log)"}, status_code=500)

    @app.exception_handler(_UnauthorizedError)
    async def _unauthorized(request: Request, exc: _UnauthorizedError) -> JSONResponse:
        return JSONResponse({"detail": "missing or wrong API key (Authorization: Bearer KEY)"}, status_code=401,
                            headers={"WWW-Authenticate": "Bearer"})

    @app.middleware("http")
    async def _headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")  # the page's URL holds the query
        return response

    @app.get("/health", summary="Liveness: the app answers (no key needed).")
    def health() -> JsonObject:
        return {"status": "ok", "collections": service.names}

    @app.get("/collections", dependencies=guarded, summary="The served collections, as `mmindex info --json`.")
    def collections() -> JsonObject:
        return service.collections()

    # The query endpoints answer their hits as a response of their own: FastAPI's response-model
    # pass (validate, then serialize, every hit's payload as dict[str, Any]) would only copy them.
    hits_model: dict[str, Any] = {"response_model": list[JsonObject], "response_class": RedactedJSONResponse}

    @app.post("/search", dependencies=guarded, summary="Search: the query language of `mmindex query`.", **hits_model)
    def search(body: SearchRequest) -> Response:
        return RedactedJSONResponse(service.search(body))

    @app.post("/search/files", dependencies=guarded,
              summary="Search with image files: a multipart form of `query` (the /search body as JSON, without "
                      "images) and `image` / `not_image` files (each repeatable).", **hits_model)
    def search_files(
        query: Annotated[str, Form(max_length=1 << 20, description="The /search body as JSON.")] = "{}",
        image: Annotated[list[UploadFile] | None, File(description="Image files to search with.")] = None,
        not_image: Annotated[list[UploadFile] | None, File(description="Image files to search away from.")] = None,
    ) -> Response:
        try:
            body = SearchRequest.model_validate_json(query)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False)) from None
        files = ImageFiles([upload.file.read() for upload in image or []],
                           [upload.file.read() for upload in not_image or []])
        return RedactedJSONResponse(service.search(body, files))

    @app.post("/retrieve", dependencies=guarded, summary="RAG passages for a question.", **hits_model)
    def retrieve(body: RetrieveRequest) -> Response:
        return RedactedJSONResponse(service.retrieve(body))

    @app.get("/items/{point_id}", dependencies=guarded, summary="A stored item by point id.")
    def item(point_id: str, collection: CollectionParam = None) -> JsonObject:
        return service.item(point_id, collection)

    @app.get("/thumbnails/{point_id}", dependencies=guarded, summary="A small JPEG of a stored local image.",
             response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    def thumbnail(point_id: str, collection: CollectionParam = None) -> Response:
        return Response(service.thumbnail(point_id, collection), media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=3600"})

    @app.post("/embed", dependencies=guarded, summary="Texts or an image to vectors of the collection's space.")
    def embed(body: EmbedRequest) -> JsonObject:
        return service.embed(body)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Content-Security-Policy": _PAGE_POLICY,
                                                                "Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    if options.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(options.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    return app


def guarded_app(app: FastAPI, service: SearchService) -> Any:
    """``app`` behind the body-size limit (what uvicorn runs)."""
    return BodyLimit(app, service.limits.max_upload_bytes * 4 // 3 + _BODY_SLACK_BYTES)


class _UnauthorizedError(Exception):
    """Raised by the key check; answered 401."""

