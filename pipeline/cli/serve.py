"""``mmindex serve``: the HTTP search API and search page (``pipeline/serve``) under uvicorn."""

from __future__ import annotations

import ipaddress
import logging
from typing import Annotated

import typer

from mmindex.pipeline.cli.app import DeviceOpt, QdrantUrlOpt, RootOpt, command, load_cli_settings
from mmindex.pipeline.cli.terminal import err, markup
from mmindex.pipeline.errors import ConfigError
from mmindex.pipeline.serve.requests import DEFAULT_MAX_UPLOAD_BYTES

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is an address only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any address
        return False



@command()
def serve(
    collection: Annotated[
        list[str] | None,
        typer.Option("--collection", "-c", help="Collection to serve (repeatable; default: every one of the root).",
                     show_default=False),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (another than 127.0.0.1 exposes the index).")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", envvar="MMINDEX_API_KEY", show_envvar=True, show_default=False,
                     help="Require Authorization: Bearer KEY on every endpoint but /health (prefer the env variable)."),
    ] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option("--cors-origin", help="Allow browser pages of this origin to call the API (repeatable; default none).",
                     show_default=False),
    ] = None,
    max_upload_bytes: Annotated[
        int, typer.Option("--max-upload-bytes", min=1, help="Most bytes of images one request may carry (else 413).")
    ] = DEFAULT_MAX_UPLOAD_BYTES,
    root: RootOpt = None,
    device: DeviceOpt = None,
    qdrant_url: QdrantUrlOpt = None,
) -> None:
    """Serve collections over HTTP: a JSON search API (docs at /docs) and a search page at /.

    Models load once at start; the embedded store stays open between queries and is handed to an
    ingest that waits for it. Examples: mmindex serve -c photos;
    MMINDEX_API_KEY=... mmindex serve --host 0.0.0.0 --port 8080 -c photos -c docs
    """
    try:
        import uvicorn
    except ImportError:
        raise ConfigError("mmindex serve needs FastAPI and uvicorn: pip install 'mmindex[serve]'") from None

    from mmindex.pipeline.serve.app import ServeOptions, create_app, guarded_app
    from mmindex.pipeline.serve.service import SearchService, ServeLimits
    from mmindex.pipeline.store.open_store import open_store

    settings = load_cli_settings(root=root, device=device, qdrant_url=qdrant_url)
    store = open_store(settings, hold=True)
    try:
        service = SearchService(settings, collection or [], store, ServeLimits(max_upload_bytes))
        err.print(f"loading the models of {markup(', '.join(service.names))}…")
        service.warm()
    except BaseException:
        store.close()
        raise
    if not is_loopback(host) and not api_key:
        err.print(f"[yellow]warning:[/] listening on {markup(host)} without --api-key: anyone who reaches it can search")
    app = create_app(service, ServeOptions(api_key=api_key or None, cors_origins=tuple(cors_origin or ())))
    shown = f"[{host}]" if ":" in host else host
    err.print(f"[green]serving[/] {markup(', '.join(service.names))} at http://{markup(shown)}:{port} "
              f"(API docs: /docs{'; API key required' if api_key else ''})")
    uvicorn.run(guarded_app(app, service), host=host, port=port, log_level="warning", access_log=False,
                log_config=None)
