"""A corpus of real broken files: every bad file becomes a failed row with a reason, every good
file is indexed, nothing hangs, and `mmindex info --failed` lists the failures."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

import pytest
from helpers import run_cli


def _jpeg_bytes() -> bytes:
    from PIL import Image
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _png_bomb(width: int, height: int) -> bytes:
    """A real, valid-CRC PNG whose header claims width x height pixels (a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 64, 9)  # only a few rows: the header is what matters
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@pytest.fixture
def broken_corpus(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Good files plus broken ones; maps each broken relative path to a word its reason contains."""
    root = tmp_path / "broken"
    root.mkdir()
    jpeg = _jpeg_bytes()
    (root / "good.jpg").write_bytes(jpeg)
    (root / "notes.txt").write_text("A perfectly fine note about cats.", encoding="utf-8")
    (root / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "empty.jpg").write_bytes(b"")
    (root / "text-named.jpg").write_text("I am text, not a JPEG", encoding="utf-8")
    (root / "random.png").write_bytes(os.urandom(4096))
    (root / "bomb.png").write_bytes(_png_bomb(30000, 30000))
    (root / "huge.png").write_bytes(_png_bomb(9000, 9000))  # under the pixel limit, over the decode budget
    (root / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (root / "binary.md").write_bytes(b"\x00\x01\x02binary\x00")
    (root / "blank.txt").write_bytes(b"")
    os.mkfifo(root / "pipe.jpg")
    (root / "dangling.jpg").symlink_to(root / "missing-target.jpg")
    expected = {
        "truncated.jpg": "truncated",
        "empty.jpg": "",
        "text-named.jpg": "not an image",
        "random.png": "",
        "bomb.png": "decompression bomb",
        "huge.png": "image too large to decode",
        "latin1.txt": "undecodable",
        "binary.md": "undecodable",
        "blank.txt": "empty",
        "pipe.jpg": "not a regular file",
        "dangling.jpg": "",
    }
    return root, expected


def test_broken_files_become_failed_rows(tmp_path: Path, broken_corpus: tuple[Path, dict[str, str]], tiny_local_dir: Path) -> None:
    root_dir, expected = broken_corpus
    flags = ["--root", str(tmp_path / "root")]
    result = run_cli("index", str(root_dir), "-c", "broken", "--model", f"local-dir:{tiny_local_dir}", "--workers", "2",
                     "--json", *flags)
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["images"] == 1 and report["text_chunks"] == 1
    assert report["failed"] == len(expected)

    listed = run_cli("info", "-c", "broken", "--failed", "--json", *flags)
    assert listed.code == 0, listed.stderr
    reasons = {item["path"]: item["error"] for item in json.loads(listed.stdout)}
    assert set(reasons) == set(expected)
    for path, word in expected.items():
        assert reasons[path], f"{path} has no reason"
        assert word in reasons[path], f"{path}: {reasons[path]!r}"

    info = json.loads(run_cli("info", "-c", "broken", "--json", *flags).stdout)["collections"][0]
    assert info["points"] == 2 and info["failed"] == len(expected)
