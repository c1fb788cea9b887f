"""The PNG check (imagen/runner/images.py, check_png, standard library only) against Pillow's
verify() on the same bytes: intact PNGs of every colour type, and each damaged at many places
(truncated, a byte flipped, chunks dropped). Both must accept or refuse alike, and agree on the
size. Damage is deterministic (positions spread over the file), so a failure reproduces."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image, PngImagePlugin

from imagen.runner.images import InvalidImage, check, check_png
from imagen.testing.replicate import _render_image


def _pillow(data: bytes) -> tuple[int, int] | None:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
            return img.size
    except Exception:
        return None


def _ours(data: bytes) -> tuple[int, int] | None:
    try:
        return check_png(data)
    except InvalidImage:
        return None


def _png(mode: str, size: tuple[int, int], **save: object) -> bytes:
    img = Image.new(mode, size)
    bands = len(img.getbands())
    img.putdata(
        [
            (i * 37) % 256 if bands == 1 else tuple((i * k) % 256 for k in (3, 5, 7, 11)[:bands])
            for i in range(size[0] * size[1])
        ]
    )
    out = io.BytesIO()
    img.save(out, "PNG", **save)
    return out.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _samples() -> dict[str, bytes]:
    text = PngImagePlugin.PngInfo()
    text.add_text("prompt", "a fox")
    text.add_text("workflow", "{}" * 50, zip=True)
    samples = {
        "rgb": _png("RGB", (64, 48)),
        "rgba": _png("RGBA", (17, 9)),
        "grey": _png("L", (33, 20)),
        "grey16": _png("I;16", (8, 8)),
        "palette": _png("P", (40, 30)),
        "one-bit": _png("1", (70, 3)),
        "text-chunks": _png("RGB", (20, 20), pnginfo=text),
        "small-idats": b"",
    }
    # Image data split over many IDAT chunks, as some encoders write it.
    whole = samples["rgb"]
    pos, chunks = 8, []
    while pos < len(whole):
        (length,) = struct.unpack(">I", whole[pos : pos + 4])
        chunks.append((whole[pos + 4 : pos + 8], whole[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    idat = b"".join(body for kind, body in chunks if kind == b"IDAT")
    rebuilt = whole[:8]
    for kind, body in chunks:
        if kind == b"IDAT":
            rebuilt += b"".join(
                _chunk(b"IDAT", idat[i : i + 100]) for i in range(0, len(idat), 100)
            )
            idat = b""
        else:
            rebuilt += _chunk(kind, body)
    samples["small-idats"] = rebuilt
    # What the Replicate double serves for a FLUX schnell PNG.
    samples["replicate-double"] = _render_image(
        "black-forest-labs/flux-schnell", {"prompt": "a fox", "output_format": "png"}, 1, 0
    )
    return samples


SAMPLES = _samples()


def _damaged(data: bytes) -> list[tuple[str, bytes]]:
    out = []
    for n in range(0, len(data), max(1, len(data) // 40)):
        out.append((f"cut at {n}", data[:n]))
    for n in range(8, len(data), max(1, len(data) // 60)):
        flipped = bytearray(data)
        flipped[n] ^= 0x41
        out.append((f"flip at {n}", bytes(flipped)))
    out.append(("junk after IEND", data + b"trailing junk"))
    out.append(("last byte lost", data[:-1]))
    iend = data.rindex(b"IEND") - 4
    out.append(("no IEND", data[:iend]))
    return out


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_an_intact_png_passes_with_its_size(name: str) -> None:
    data = SAMPLES[name]
    assert _ours(data) == _pillow(data) is not None
    assert check(data, "png").width == _pillow(data)[0]  # type: ignore[index]


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_damaged_pngs_get_pillows_verdict(name: str) -> None:
    disagree = [
        (what, _ours(bad), _pillow(bad))
        for what, bad in _damaged(SAMPLES[name])
        if _ours(bad) != _pillow(bad)
    ]
    assert disagree == []


def test_a_header_claiming_too_many_pixels_is_refused_as_pillow_does() -> None:
    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"\0"))
        + _chunk(b"IEND", b"")
    )
    assert _pillow(data) is None
    with pytest.raises(InvalidImage, match="too many"):
        check_png(data)


def test_the_png_check_imports_no_pillow() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from imagen.runner.images import check; "
        f"print(check({SAMPLES['rgb']!r}, 'png').width, 'PIL' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["64", "False"]


def _png_of(width: int, height: int, raw: bytes, *, colour: int = 2, interlace: int = 0) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, interlace)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )


def _pillow_decodes(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return True
    except Exception:
        return False


@pytest.mark.parametrize(
    ("what", "data"),
    [
        ("garbage image data, valid CRCs", _png_of(4, 4, b"\x07" * 52)),
        (
            "image data that is not zlib",
            _png_of(4, 4, b"")[:33] + _chunk(b"IDAT", b"junk" * 8) + _chunk(b"IEND", b""),
        ),
    ],
)
def test_image_data_that_does_not_decode_is_refused(what: str, data: bytes) -> None:
    assert not _pillow_decodes(data), what
    with pytest.raises(InvalidImage, match="broken png image"):
        check_png(data)


def test_image_data_with_rows_missing_is_refused() -> None:
    # Pillow's load() leaves the missing rows blank; part of the image is not there.
    with pytest.raises(InvalidImage, match="incomplete"):
        check_png(_png_of(4, 4, b"\0" + b"\1" * 12))


def test_image_data_past_the_last_row_is_ignored_as_decoders_do() -> None:
    data = _png_of(4, 4, (b"\0" + b"\1" * 12) * 40)
    assert _pillow_decodes(data)
    assert check_png(data) == (4, 4)


def test_image_data_is_decoded_for_every_pass_of_an_interlaced_png() -> None:
    width, height = 10, 7
    raw = b""
    for x0, y0, dx, dy in (
        (0, 0, 8, 8),
        (4, 0, 8, 8),
        (0, 4, 4, 8),
        (2, 0, 4, 4),
        (0, 2, 2, 4),
        (1, 0, 2, 2),
        (0, 1, 1, 2),
    ):
        w, h = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if w > 0 and h > 0:
            raw += (b"\0" + b"\x80" * (3 * w)) * h
    good = _png_of(width, height, raw, interlace=1)
    assert _pillow_decodes(good)
    assert check_png(good) == (width, height)
    assert not _pillow_decodes(_png_of(width, height, raw[:-3], interlace=1))
    with pytest.raises(InvalidImage):
        check_png(_png_of(width, height, raw[:-3], interlace=1))
