"""What a source yields: references to items, never their bytes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Modality = Literal["image", "text"]

IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"})
TEXT_EXTENSIONS = frozenset({"txt", "md", "html", "htm", "pdf"})


@dataclass(frozen=True, slots=True)
class ItemRef:
    """One crawled item: where it is, what it is, and its cheap change signals (size, mtime).

    ``key`` is the stable item key (docs/ARCHITECTURE.md §2); ``uri`` is what a reader opens (a local path
    for local sources). ``caption_path``/``metadata_path`` point at sidecar files of an image
    (``photo.txt`` / ``photo.json`` beside ``photo.jpg``); ``sidecar_sig`` changes whenever either sidecar does.
    """

    key: str
    source_id: str
    uri: str
    path: str
    ext: str
    modality: Modality
    size: int
    mtime_ns: int
    caption_path: str | None = None
    metadata_path: str | None = None
    sidecar_sig: str | None = None
