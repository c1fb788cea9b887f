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
    frames: int = 1  # an animated PNG (APNG), WebP or GIF has more than one


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
        return ImageInfo(fmt, *_read_png(data))
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # decoded in full: a truncated file fails
            frames = int(getattr(img, "n_frames", 1))
            if frames > 1:
                img.seek(frames - 1)  # the last frame too: an animation cut short fails
                img.load()
            return ImageInfo(fmt, img.width, img.height, frames)
    except Exception as exc:  # Pillow raises many types for broken files
        raise InvalidImage(f"broken {fmt} image: {exc}") from None


# PNG colour types and the bit depths each allows (PNG spec, 11.2.2 IHDR).
_PNG_DEPTHS = {0: {1, 2, 4, 8, 16}, 2: {8, 16}, 3: {1, 2, 4, 8}, 4: {8, 16}, 6: {8, 16}}
# Pillow refuses images of more pixels than this as decompression bombs; so does check_png.
_MAX_PIXELS = 2 * (1024 * 1024 * 1024 // 4 // 3)


def check_png(data: bytes) -> tuple[int, int]:
    """A PNG's width and height (see _read_png)."""
    width, height, _frames = _read_png(data)
    return width, height


def _read_png(data: bytes) -> tuple[int, int, int]:
    """A PNG's width, height and frames (an APNG's acTL count, else 1), once its transfer is whole: the header (IHDR) valid, then every
    chunk complete with its CRC holding, up to IEND, with image data (IDAT) before it (what
    Pillow's verify() checks), and that data decoding to exactly the scanlines the header
    promises (what Pillow's load() would find: garbage with valid CRCs is no image). Done with
    the standard library because importing Pillow costs more CPU (~50 ms) than the rest of
    storing a PNG.
    tests/test_images.py holds it to Pillow's verdict on damaged files."""
    pos, size, seen_data, frames = 8, len(data), False, 1
    width = height = depth = colour = interlace = 0
    idat: list[bytes] = []
    while True:
        if pos + 8 > size:
            raise InvalidImage(f"broken png image: truncated at byte {size}")
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if not re.fullmatch(rb"\w{4}", kind):
            raise InvalidImage(f"broken png image: no chunk at byte {pos} ({kind!r})")
        if kind == b"IEND" and pos != 8:
            if not seen_data:
                raise InvalidImage("broken png image: no image data (IDAT)")
            _check_png_data(idat, width, height, depth, colour, interlace)
            return width, height, frames
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
            idat.append(body)
        elif kind == b"acTL" and length == 8:
            frames = max(struct.unpack(">I", body[:4])[0], 1)
        pos = end


_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# Adam7 passes: (first column, first row, column step, row step).
_ADAM7 = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)


def _scanlines(width: int, height: int, bits: int, interlace: int) -> list[tuple[int, int]]:
    """(rows, bytes per row after its filter byte) of each pass, empty passes left out."""
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    out = []
    for x0, y0, dx, dy in passes:
        w, h = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if w > 0 and h > 0:
            out.append((h, (w * bits + 7) // 8))
    return out


def _check_png_data(
    idat: list[bytes], width: int, height: int, depth: int, colour: int, interlace: int
) -> None:
    """The image data inflates to at least the scanlines of the header, each starting with a
    known filter type (0-4). Inflated a megabyte at a time: memory stays flat for any size;
    data past the last scanline is not read (decoders ignore it, and an image a viewer shows
    is never refused: a paid image refused is a paid image lost)."""
    lines = _scanlines(width, height, depth * _CHANNELS[colour], interlace)
    expected = sum(rows * (1 + row) for rows, row in lines)
    starts = ((1 + row) for rows, row in lines for _ in range(rows))  # distance to next line
    next_line, produced = 0, 0
    inflate = zlib.decompressobj()
    pending = b"".join(idat)
    try:
        while True:
            out = inflate.decompress(pending, 1 << 20)
            pending = inflate.unconsumed_tail
            while next_line < produced + len(out):
                if out[next_line - produced] > 4:
                    raise InvalidImage(
                        f"broken png image: unknown filter type at byte {next_line} of its data"
                    )
                next_line += next(starts, expected + 1)
            produced += len(out)
            if produced >= expected or (not out and not pending):
                break  # data past the last scanline is ignored, as decoders do
    except zlib.error as exc:
        raise InvalidImage(f"broken png image: its image data does not inflate ({exc})") from None
    if produced < expected:
        raise InvalidImage(
            f"broken png image: image data for {width}x{height} pixels is incomplete"
        )


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
