"""Run configuration: flags > ``MMINDEX_*`` environment > config file > defaults.

The config file is TOML (``MMINDEX_CONFIG`` or ``<user config dir>/mmindex/config.toml``) with
the same keys as the fields below, e.g. ``root = "/data/mmindex"`` (or an fsspec URL such as
``root = "s3://bucket/mmindex"``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from platformdirs import user_config_path, user_data_path
from pydantic import AliasChoices, Field, PlainSerializer, PlainValidator, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from mmindex.schemas.root import StoragePath, parse_root

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
# The sentence-embedding model of text chunks in new collections (``none``: CLIP vector only).
DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"
# A document (text, Markdown, HTML, PDF) bigger than this fails with a reason instead of being read.
DEFAULT_MAX_DOCUMENT_BYTES = 256 * 1024 * 1024
# An image whose header gives more pixels than this is a decompression bomb (Pillow's own limit).
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
# The memory one image's decode may take (its pixels at the scale it is decoded, in Pillow's
# storage, plus the RGB copy): a decode runs in every loader worker at once.
DEFAULT_MAX_DECODE_MB = 256

Device = Literal["auto", "cpu", "cuda"]
# auto: fp16 autocast on CUDA, bf16 on CPUs with AMX / AVX-512 BF16, else fp32 (pipeline/embed/precision.py).
Precision = Literal["auto", "fp32", "bf16", "fp16"]
# A local directory (``Path``, ``~`` expanded) or an fsspec URL (``s3://bucket/prefix``: a ``RemotePath``).
IndexRoot = Annotated[StoragePath, PlainValidator(parse_root), PlainSerializer(str, return_type=str)]


def default_root() -> Path:
    """Per-user data directory that holds indexes when no root is given."""
    return user_data_path("mmindex", appauthor=False)


def config_file_path() -> Path:
    """Where the optional TOML config file is read from."""
    explicit = os.environ.get("MMINDEX_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    return user_config_path("mmindex", appauthor=False) / "config.toml"


@dataclass(frozen=True, slots=True)
class ImageLimits:
    """What one image may cost: the pixels its header gives, and the memory its decode takes."""

    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_decode_bytes: int = DEFAULT_MAX_DECODE_MB << 20


class Settings(BaseSettings):
    """Settings shared by every command; CLI flags override them field by field."""

    model_config = SettingsConfigDict(env_prefix="MMINDEX_", extra="ignore", populate_by_name=True)

    root: IndexRoot = Field(default_factory=default_root)
    model: str = DEFAULT_MODEL
    pretrained: str | None = DEFAULT_PRETRAINED
    text_model: str = DEFAULT_TEXT_MODEL
    device: Device = "auto"
    precision: Precision = "auto"
    batch_size: int = Field(default=64, ge=1, le=4096)
    workers: int | None = Field(default=None, ge=0, le=64)
    shard_size: int = Field(default=1024, ge=1, le=65536)
    max_image_pixels: int = Field(default=DEFAULT_MAX_IMAGE_PIXELS, ge=1)
    max_decode_mb: int = Field(default=DEFAULT_MAX_DECODE_MB, ge=1)
    max_document_bytes: int = Field(default=DEFAULT_MAX_DOCUMENT_BYTES, ge=1)
    qdrant_url: str | None = Field(default=None, validation_alias=AliasChoices("MMINDEX_QDRANT_URL", "QDRANT_URL", "qdrant_url"))
    qdrant_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("MMINDEX_QDRANT_API_KEY", "QDRANT_API_KEY", "qdrant_api_key")
    )

    @property
    def image_limits(self) -> ImageLimits:
        """The per-image limits every decode of these settings applies."""
        return ImageLimits(self.max_image_pixels, self.max_decode_mb << 20)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_file_path())
        return (init_settings, env_settings, toml)


def load_settings(**overrides: Any) -> Settings:
    """Settings with the given flag values on top; ``None`` means "flag not given"."""
    given = {name: value for name, value in overrides.items() if value is not None}
    return Settings(**given)
