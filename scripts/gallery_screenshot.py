"""Make docs/gallery.png: a gallery of images from the ComfyUI double, in headless Chromium.

python scripts/gallery_screenshot.py    # needs Debian's chromium and playwright ([test] extra)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imagen.testing.comfyui import ComfyUIDouble  # noqa: E402
from tests.support.cli import Sandbox  # noqa: E402
from tests.test_gallery import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

JOBS = [
    ("claude-1", "studio", "a lighthouse at dusk, oil painting", "1024x576", 11),
    ("claude-2", "studio", "a red fox in fresh snow, morning light", "768x768", 7),
    ("dev", "attic", "isometric tiny greenhouse, soft pastel", "768x768", 42),
    ("claude-1", "studio", "a paper boat on a puddle, macro photo", "768x1024", 3),
    ("claude-2", "attic", "a city of towers made of books", "768x768", 19),
    ("dev", "studio", "a brass telescope on a windowsill", "1024x768", 5),
]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, ComfyUIDouble() as comfy:
        box = Sandbox(Path(tmp))
        opts = f'url = "{comfy.url}"\npoll_interval_s = 0.05\n'
        box.write_config(
            'default_backend = "studio"\n'
            f'[backends.studio]\ntype = "comfyui"\n{opts}'
            f'[backends.attic]\ntype = "comfyui"\n{opts}'
            f'[output]\ndirectory = "{box.root / "out"}"\n'
        )
        for caller, backend, prompt, size, seed in JOBS:
            box.run(
                "generate", prompt, "-b", backend, "--size", size, "--seed", str(seed),
                env={"MAI_FROM_ID": caller},
            )  # fmt: skip
        comfy.execution_error(message="CUDA out of memory", exception_type="torch.OutOfMemoryError")
        box.run("generate", "a whale in a teacup", "--seed", "8", env={"MAI_FROM_ID": "claude-3"})
        index = box.root / "out" / "gallery" / "index.html"
        assert box.run("gallery").returncode == 0

        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                str(box.root / "profile"),
                executable_path=CHROMIUM,
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1280, "height": 900},
                color_scheme="light",
            )
            page = context.new_page()
            page.goto(index.as_uri())
            page.wait_for_function(
                "() => [...document.images].every(i => i.complete && i.naturalWidth > 0)"
            )
            page.screenshot(path=str(ROOT / "docs" / "gallery.png"))
            context.close()


if __name__ == "__main__":
    main()
