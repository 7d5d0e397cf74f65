"""``IndexOptions``: the options of ``mmindex index``, defined once.

The CLI's ``index`` and ``schedule`` take them as flags (``pipeline/cli/options.py`` turns each
field into one, its description the help), and the Prefect ingest flow takes them as one
parameter (``flows/ingest.py``: Prefect validates a pydantic model parameter and shows its
schema). A field that is ``None`` was not given: the setting then comes from the environment
(``MMINDEX_*``), the config file or its default (``schemas/config.py``); a source option then
takes its default in ``sources/resolve.py`` / ``schemas/state.py: FetchOptions``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from mmindex.pipeline.embed.precision import Precision

if TYPE_CHECKING:
    from mmindex.pipeline.ingest.run import IndexRequest
    from mmindex.pipeline.sources.resolve import SourceOptions
    from mmindex.schemas.config import Settings

# The fields that are settings (flags > environment > config file > defaults); the rest say what to index.
SETTINGS_FIELDS = (
    "root", "model", "pretrained", "device", "precision", "batch_size", "workers", "qdrant_url", "text_model",
    "shard_size", "max_document_bytes",
)
# The fields that say how to read SOURCE beyond its name (``sources/resolve.py: source_options``).
SOURCE_FIELDS = (
    "format", "url_column", "caption_column", "key_column", "fetch_timeout", "max_bytes", "fetch_concurrency",
    "fetch_per_host", "fetch_retries", "allow_private_network", "allow_network", "user_agent_token",
    "follow_links_outside",
)


class IndexOptions(BaseModel):
    """What ``mmindex index SOURCE --collection NAME [flags]`` was asked to do."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(
        description="Folder of images (jpg png webp gif bmp tiff) and documents (txt md html pdf); a URL manifest "
        "(.csv .tsv .jsonl .json .parquet, optionally .gz); an object-storage prefix (s3://bucket/photos/); "
        "WebDataset tars (x.tar, shards/{000000..000099}.tar). Paths or fsspec URLs.",
    )
    collection: str = Field(description="Collection name (alias users query).")
    root: str | None = Field(
        default=None,
        description="Index root (Parquet shards, embedded Qdrant, state): a folder or an fsspec URL "
        "(s3://bucket/prefix). Env: MMINDEX_ROOT.",
    )
    model: str | None = Field(default=None, description="open_clip architecture, or local-dir:/path (config + weights).")
    pretrained: str | None = Field(default=None, description="Weights tag (e.g. laion2b_s34b_b79k) or checkpoint file.")
    device: str | None = Field(default=None, description="auto | cpu | cuda (auto: CUDA when present).")
    precision: Precision | None = Field(
        default=None,
        description="auto | fp32 | bf16 | fp16 (auto: fp16 on CUDA, bf16 on CPUs with AMX/AVX-512 BF16, else fp32).",
    )
    batch_size: int | None = Field(default=None, ge=1, description="Images per forward pass (default 64).")
    workers: int | None = Field(
        default=None, ge=0,
        description="Decode worker processes (default: decode threads between forward passes on CPU, spare cores on GPU).",
    )
    qdrant_url: str | None = Field(
        default=None, description="Qdrant server/cluster URL (else embedded). Env: QDRANT_URL (+ QDRANT_API_KEY)."
    )
    include: list[str] = Field(default_factory=list, description="Glob on relative paths to include (repeatable).")
    exclude: list[str] = Field(default_factory=list, description="Glob on relative paths to exclude (repeatable).")
    hidden: bool = Field(default=False, description="Also index hidden files and folders.")
    source_id: str | None = Field(
        default=None, description="Stable source name for item keys (default: the folder's absolute path)."
    )
    dry_run: bool = Field(
        default=False,
        description="Print the plan (new/changed/renamed/deleted/unchanged, the first 10 items of each) and change nothing.",
    )
    retry_failed: bool = Field(
        default=False, description="Retry items that failed before even if their files did not change."
    )
    recheck: bool = Field(
        default=False,
        description="Revalidate the URLs of unchanged manifest rows with conditional requests (ETag / Last-Modified: "
        "a 304 costs no body) and re-embed only items whose content hash changed.",
    )
    no_delete: bool = Field(default=False, description="Keep items whose files are gone (default: remove them).")
    labels: str | None = Field(
        default=None, description="Zero-shot label images with these comma-separated labels (see `mmindex label`)."
    )
    label_template: list[str] = Field(
        default_factory=list, description="Prompt template for --labels (repeatable), default 'a photo of a {}.'."
    )
    label_threshold: float | None = Field(default=None, description="Score a label needs (softmax default 0.5).")
    text_model: str | None = Field(
        default=None,
        description="Text model of a new collection's chunks (RAG): all-MiniLM-L6-v2 (default), a sentence-transformers "
        "folder, or none. Env: MMINDEX_TEXT_MODEL.",
    )
    chunk_context: str | None = Field(
        default=None,
        description="What the text model embeds ahead of each chunk: title-path-v1 (the document's title and heading "
        "path; default), title-path-merged-v1 (the same, adjacent short sections merged into one chunk), title-v1 "
        "(the title) or none. Another scheme than a collection's own builds a new version.",
    )
    max_document_bytes: int | None = Field(
        default=None, ge=1,
        description="Fail documents bigger than this with a reason (default 256 MiB). Env: MMINDEX_MAX_DOCUMENT_BYTES.",
    )
    shard_size: int | None = Field(
        default=None, ge=1, le=65536,
        description="Items per shard, the unit of work, retry and (with Prefect workers) distribution (default 1024). "
        "Env: MMINDEX_SHARD_SIZE.",
    )
    # -- how to read SOURCE beyond its name (SOURCE_FIELDS): its kind, a manifest's columns, fetching --
    format: str | None = Field(
        default=None, description="Force the kind of SOURCE: folder, manifest, prefix (fsspec URL) or webdataset."
    )
    url_column: str | None = Field(default=None, description="Manifest column of URLs (default: url, URL or image_url).")
    caption_column: str | None = Field(
        default=None, description="Manifest column of captions (default: caption, TEXT or text)."
    )
    key_column: str | None = Field(default=None, description="Manifest column of item keys (default: the normalized URL).")
    fetch_timeout: float | None = Field(
        default=None, description="Total seconds per fetched item, body included (default 30)."
    )
    max_bytes: int | None = Field(default=None, description="Largest body fetched, in bytes (default 50000000).")
    fetch_concurrency: int | None = Field(default=None, description="Fetches in flight (default 16).")
    fetch_per_host: int | None = Field(default=None, description="Fetches in flight per host (default 8).")
    fetch_retries: int | None = Field(default=None, description="Retries of transient failures (default 2).")
    allow_private_network: bool = Field(
        default=False, description="Let manifest URLs reach loopback/private/link-local addresses."
    )
    allow_network: list[str] = Field(default_factory=list, description="Let manifest URLs reach this CIDR (repeatable).")
    user_agent_token: str | None = Field(default=None, description="Our name in X-Robots-Tag opt-outs (`NAME: noai`).")
    follow_links_outside: bool = Field(
        default=False, description="Also follow links that leave the folder (default: skip them)."
    )

    def settings(self) -> Settings:
        """The run's settings: these options over the environment, the config file and the defaults.
        (A bad value raises pydantic's ``ValidationError``; the CLI turns it into one line.)"""
        from mmindex.schemas.config import load_settings

        return load_settings(**{name: getattr(self, name) for name in SETTINGS_FIELDS})

    def source_options(self) -> SourceOptions:
        """How to read SOURCE (a bad value is a one-line ``ConfigError``)."""
        from mmindex.pipeline.sources.resolve import source_options

        return source_options(**{name: getattr(self, name) for name in SOURCE_FIELDS})

    def request(self) -> IndexRequest:
        """What to index: the source, the collection and the crawl, plan, label and source options
        (every value checked: a bad one is a one-line ``ConfigError``)."""
        from mmindex.pipeline.ingest.run import IndexRequest, label_config  # the ingest stack, only when a run starts

        return IndexRequest(
            source=self.source,
            collection=self.collection,
            include=tuple(self.include),
            exclude=tuple(self.exclude),
            include_hidden=self.hidden,
            source_id=self.source_id,
            dry_run=self.dry_run,
            retry_failed=self.retry_failed,
            recheck=self.recheck,
            delete_missing=not self.no_delete,
            labels=label_config(self.labels, self.label_template, self.label_threshold),
            source_options=self.source_options(),
            chunk_context=self.chunk_context,
        )

    def given(self) -> dict[str, object]:
        """The options that were given (not ``None``, not empty, not false), JSON-ready: what a
        schedule stores as its deployment's parameters."""
        data = self.model_dump(mode="json")
        return {name: value for name, value in data.items() if value not in (None, [], False)}
