"""`imagen gallery` over 2,000 images (1024x1024 PNGs), beside a bare Pillow loop making the
same 2,000 thumbnails in the same run; then a rebuild (thumbnails reused) and the page in
headless Chromium (until every card's first chunk is shown and the count reads 2000).

The ledger is generated directly with sqlite3 (tests/benchmarks/bench_jobs.py's writer), each
job pointing at a real image file with its real sha256.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from tests.benchmarks.bench_jobs import _job_events, build
from tests.benchmarks.report import line

IMAGES = int(os.environ.get("IMAGEN_BENCH_GALLERY", "2000"))
SIZE = int(os.environ.get("IMAGEN_BENCH_GALLERY_SIZE", "1024"))
ROOT = Path(__file__).resolve().parents[2]


def _images(folder: Path) -> list[tuple[Path, str, int]]:
    """Distinct PNGs (a gradient tinted per image: cheap to make, realistic to decode)."""
    assert IMAGES <= 65536
    base = Image.linear_gradient("L").resize((SIZE, SIZE))
    out = []
    for i in range(IMAGES):
        tint = Image.new("RGB", (SIZE, SIZE), (i * 37 % 256, i * 91 % 256, i * 13 % 256))
        img = Image.merge("RGB", (base, tint.getchannel(1), base.rotate(90)))
        img.putpixel((0, 0), (i % 256, i // 256 % 256, 0))  # every image distinct (sha256)
        buf = io.BytesIO()
        img.save(buf, "PNG", compress_level=1)
        data = buf.getvalue()
        path = folder / f"img{i:05d}.png"
        path.write_bytes(data)
        out.append((path, hashlib.sha256(data).hexdigest(), len(data)))
    return out


def _events(images: list[tuple[Path, str, int]]):  # type: ignore[no-untyped-def]
    def events(i: int) -> list[tuple[str, dict]]:
        path, sha, size = images[i]
        evs = _job_events(i)
        for typ, data in evs:
            if typ == "ImageStored":
                data.update(path=str(path), sha256=sha, bytes=size, width=SIZE, height=SIZE)
        return evs

    return events


def _bare_thumbnails(images: list[tuple[Path, str, int]], folder: Path) -> None:
    folder.mkdir()
    for path, sha, _ in images:
        with Image.open(path) as img:
            img.thumbnail((320, 320))
            img.save(folder / f"{sha}.jpg", "JPEG", quality=80)


def _gallery(env: dict[str, str], out: Path) -> float:
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "imagen", "gallery", "--output", str(out)],
        env=env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - t


def _page_seconds(index: Path) -> float | None:
    try:
        from playwright.sync_api import sync_playwright

        from tests.test_gallery import CHROMIUM, CHROMIUM_ARGS
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        page = context.new_page()
        page.goto("about:blank")
        t = time.perf_counter()
        page.goto(index.as_uri())
        page.wait_for_function(
            "n => document.getElementById('count').textContent.startsWith(n + ' of')",
            arg=IMAGES,
        )
        seconds = time.perf_counter() - t
        context.close()
    return seconds


def run() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "images").mkdir()
        t = time.perf_counter()
        images = _images(root / "images")
        db = root / "ledger.db"
        build(db, IMAGES, _events(images))
        print(f"made {IMAGES:,} {SIZE}px images and their ledger in {time.perf_counter() - t:.1f}s")
        env = {
            **os.environ,
            "IMAGEN_LEDGER_URL": f"sqlite:///{db}",
            "IMAGEN_CONFIG": "",
            "PYTHONPATH": str(ROOT),
            "XDG_CONFIG_HOME": tmp,
        }
        t = time.perf_counter()
        _bare_thumbnails(images, root / "bare")
        bare = time.perf_counter() - t
        cold = _gallery(env, root / "site")
        line(f"gallery of {IMAGES:,}, first build (s)", cold, bare, "s", higher_is_better=False)
        warm = _gallery(env, root / "site")
        line(f"gallery of {IMAGES:,}, rebuild (s)", warm, bare, "s", higher_is_better=False)
        page = _page_seconds(root / "site" / "index.html")
        if page is not None:
            print(f"page of {IMAGES:,} jobs in headless Chromium, load to first cards: {page:.2f}s")
