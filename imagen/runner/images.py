"""Checking downloaded bytes are the image we expect (real magic, format, size, not truncated)."""

from __future__ import annotations

import base64
import binascii
import io
import re
import struct
import zlib
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
    if fmt == "png":
        width, height = check_png(data)
        return ImageInfo(fmt, width, height)
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # decoded in full: a truncated file fails
            return ImageInfo(fmt, img.width, img.height)
    except Exception as exc:  # Pillow raises many types for broken files
        raise InvalidImage(f"broken {fmt} image: {exc}") from None


# PNG colour types and the bit depths each allows (PNG spec, 11.2.2 IHDR).
_PNG_DEPTHS = {0: {1, 2, 4, 8, 16}, 2: {8, 16}, 3: {1, 2, 4, 8}, 4: {8, 16}, 6: {8, 16}}
# Pillow refuses images of more pixels than this as decompression bombs; so does check_png.
_MAX_PIXELS = 2 * (1024 * 1024 * 1024 // 4 // 3)


def check_png(data: bytes) -> tuple[int, int]:
    """A PNG's width and height, once its transfer is whole: the header (IHDR) valid, then every
    chunk complete with its CRC holding, up to IEND, with image data (IDAT) before it. This is
    what Pillow's verify() checks, without decompressing; done with the standard library
    because importing Pillow costs more CPU (~50 ms) than the rest of storing a PNG.
    tests/test_images.py holds it to Pillow's verdict on damaged files."""
    pos, size, seen_data = 8, len(data), False
    width = height = 0
    while True:
        if pos + 8 > size:
            raise InvalidImage(f"broken png image: truncated at byte {size}")
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if not re.fullmatch(rb"\w{4}", kind):
            raise InvalidImage(f"broken png image: no chunk at byte {pos} ({kind!r})")
        if kind == b"IEND" and pos != 8:
            if not seen_data:
                raise InvalidImage("broken png image: no image data (IDAT)")
            return width, height
        end = pos + 12 + length
        if end > size:
            raise InvalidImage(f"broken png image: truncated {kind!r} chunk at byte {pos}")
        body = data[pos + 8 : end - 4]
        if zlib.crc32(kind + body) != struct.unpack(">I", data[end - 4 : end])[0]:
            raise InvalidImage(f"broken png image: bad checksum in {kind!r} chunk at byte {pos}")
        if pos == 8:
            if kind != b"IHDR" or length != 13:
                raise InvalidImage("broken png image: it does not start with its header (IHDR)")
            width, height, depth, colour, _, filtering, interlace = struct.unpack(">IIBBBBB", body)
            if (
                not 0 < width < 2**31
                or not 0 < height < 2**31
                or depth not in _PNG_DEPTHS.get(colour, ())
                or filtering != 0
                or interlace not in (0, 1)
            ):
                raise InvalidImage("broken png image: its header (IHDR) is not valid")
            if width * height > _MAX_PIXELS:
                raise InvalidImage(f"broken png image: {width}x{height} pixels is too many")
        elif kind == b"IDAT":
            seen_data = True
        pos = end


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
