"""Choose a source from what the user typed: ``mmindex index SOURCE [--format KIND]``.

SOURCE is a string, never a ``Path`` (``Path("s3://b/p")`` is ``s3:/b/p``): a local folder is a
folder, a file (or URL) whose name ends in a manifest extension is a manifest; ``--format``
forces the kind.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from mmindex.pipeline.errors import ConfigError
from mmindex.pipeline.sources.base import Source
from mmindex.schemas.state import FetchOptions, ManifestColumns, SourceKind, SourceSpec

MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
SOURCE_KINDS: tuple[SourceKind, ...] = ("folder", "manifest", "prefix", "webdataset")


@dataclass(frozen=True, slots=True)
class SourceOptions:
    """How to read SOURCE beyond its name: the forced kind, a manifest's columns, how to fetch."""

    kind: SourceKind | None = None
    columns: ManifestColumns = field(default_factory=ManifestColumns)
    fetch: FetchOptions = field(default_factory=FetchOptions)
    follow_links_outside: bool = False


def source_options(
    *,
    format: str | None = None,
    url_column: str | None = None,
    caption_column: str | None = None,
    key_column: str | None = None,
    fetch_timeout: float | None = None,
    max_bytes: int | None = None,
    fetch_concurrency: int | None = None,
    fetch_per_host: int | None = None,
    fetch_retries: int | None = None,
    allow_private_network: bool = False,
    allow_network: list[str] | None = None,
    user_agent_token: str | None = None,
    follow_links_outside: bool = False,
) -> SourceOptions:
    """``mmindex index``'s source flags (and the flow's parameters of the same names) as options;
    a bad value is a one-line ``ConfigError``."""
    if format is not None and format not in SOURCE_KINDS:
        raise ConfigError(f"--format must be one of: {', '.join(SOURCE_KINDS)} (got {format!r})")
    for cidr in allow_network or ():
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ConfigError(f"--allow-network {cidr!r} is not a network (e.g. 10.0.0.0/8)") from None
    given = {"timeout_s": fetch_timeout, "max_bytes": max_bytes, "concurrency": fetch_concurrency,
             "per_host": fetch_per_host, "retries": fetch_retries, "user_agent_token": user_agent_token}
    try:
        fetch = FetchOptions.model_validate({
            "allow_private_network": allow_private_network, "allow_networks": list(allow_network or ()),
            **{name: value for name, value in given.items() if value is not None},
        })
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"bad fetch option {first['loc'][0]}: {first['msg']}") from None
    kind = next((known for known in SOURCE_KINDS if known == format), None)
    columns = ManifestColumns(url=url_column, caption=caption_column, key=key_column)
    return SourceOptions(kind, columns, fetch, follow_links_outside)


def is_url(source: str) -> bool:
    """Whether SOURCE names an fsspec URL (``scheme://...``) rather than a local path."""
    scheme, sep, _ = source.partition("://")
    return bool(sep) and scheme.isascii() and scheme.replace("+", "").isalnum()


def is_manifest_name(name: str) -> bool:
    """A manifest file name: ``.csv .tsv .jsonl .json .parquet``, optionally ``.gz``."""
    lowered = name.lower().removesuffix(".gz")
    return lowered.endswith(MANIFEST_SUFFIXES)


def source_spec(
    source: str,
    options: SourceOptions | None = None,
    *,
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    include_hidden: bool = False,
) -> SourceSpec:
    """The spec of SOURCE: its kind (chosen from the name unless ``options.kind`` is given) and a
    normalized location (a local path resolved to an absolute POSIX path, a URL as typed).

    Raises:
        SourceError: the kind cannot be chosen, or is not one this version knows.
    """
    options = options or SourceOptions()
    kind = options.kind
    remote = is_url(source) and not source.startswith("file://")
    location = source if remote else _local(source.removeprefix("file://"))
    if kind is None:
        from mmindex.pipeline.sources.webdataset import is_webdataset_name

        if is_manifest_name(location.rstrip("/")) and (remote or Path(location).is_file()):
            kind = "manifest"
        elif is_webdataset_name(location):
            kind = "webdataset"
        elif not remote:
            kind = "folder"
        else:
            kind = "prefix"
    return SourceSpec(path=location, kind=kind, include=list(include), exclude=list(exclude),
                      include_hidden=include_hidden, follow_links_outside=options.follow_links_outside,
                      columns=options.columns, fetch=options.fetch)


def _local(path: str) -> str:
    """A local path as an absolute POSIX path (a brace pattern's folder resolved, the pattern kept)."""
    head, brace, tail = path.partition("{")
    if not brace:
        return Path(path).expanduser().resolve().as_posix()
    folder, _, start = head.rpartition("/")
    return f"{Path(folder or '.').expanduser().resolve().as_posix()}/{start}{brace}{tail}"


def open_source(spec: SourceSpec, source_id: str) -> Source:
    """The ``Source`` a remembered spec stands for."""
    if spec.kind == "webdataset":
        from mmindex.pipeline.sources.webdataset import WebDatasetSource

        return WebDatasetSource(source_id, spec)
    if spec.kind == "prefix":
        from mmindex.pipeline.sources.prefix import PrefixSource

        return PrefixSource(source_id, spec)
    if spec.kind == "manifest":
        from mmindex.pipeline.sources.manifest import ManifestSource

        return ManifestSource(source_id, spec)
    from mmindex.pipeline.sources.folder import FolderSource

    return FolderSource(source_id, spec)
