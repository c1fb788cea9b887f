"""Checking downloaded bytes are the image we expect (real magic, format, size, not truncated)."""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass

MAGIC = {
    b"\x89PNG\r\n\x1a\n": "png",
    b"\xff\xd8\xff": "jpg",
    b"GIF87a": "gif",
    b"GIF89a": "gif",
}


class InvalidImage(ValueError):
    pass


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int


def sniff(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for magic, fmt in MAGIC.items():
        if data.startswith(magic):
            return fmt
    return None


def check(data: bytes, expected_format: str | None) -> ImageInfo:
    fmt = sniff(data)
    if fmt is None:
        raise InvalidImage(f"not an image ({len(data)} bytes, starting {data[:8]!r})")
    expected = {"jpeg": "jpg"}.get(expected_format or "", expected_format)
    if expected and fmt != expected:
        raise InvalidImage(f"expected a {expected} image, got {fmt}")
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            # PNG: verify() walks every chunk and its CRC (a truncated file fails) without
            # decompressing, 10x cheaper than load(); other formats are decoded in full.
            img.verify() if fmt == "png" else img.load()
            return ImageInfo(fmt, img.width, img.height)
    except Exception as exc:  # Pillow raises many types for broken files
        raise InvalidImage(f"broken {fmt} image: {exc}") from None


def decode_data_uri(uri: str) -> bytes:
    header, _, payload = uri.partition(",")
    if not header.startswith("data:") or not payload:
        raise InvalidImage("malformed data: URI")
    try:
        return (
            base64.b64decode(payload, validate=True)
            if header.endswith(";base64")
            else payload.encode()
        )
    except binascii.Error as exc:
        raise InvalidImage(f"malformed base64 in data: URI: {exc}") from None
