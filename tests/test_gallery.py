"""`imagen gallery`: images made through the real CLI against the ComfyUI double, the page opened
in a real headless Chromium (Debian's chromium, driven by Playwright) and checked for what a
person sees: the cards, a prompt, the filters, an image that loads, the command to make it again.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import signal
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from imagen.app.gallery import embedded_json
from imagen.core.events import JobRequested
from imagen.core.job import JobState
from imagen.projections.gallery import regenerate_command
from imagen.testing.comfyui import ComfyUIDouble
from tests.support.cli import Sandbox

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HOSTILE = "</script><img src=x onerror=\"document.title='pwned'\"> & <!-- \u2028 fox\nline two"


def _config(box: Sandbox, url: str) -> None:
    opts = f'url = "{url}"\npoll_interval_s = 0.05\nretry_base_s = 0.01\n'
    box.write_config(
        'default_backend = "studio"\n'
        f'[backends.studio]\ntype = "comfyui"\n{opts}'
        f'[backends.attic]\ntype = "comfyui"\n{opts}'
        f'[output]\ndirectory = "{box.root / "out"}"\n'
    )


def _generate(box: Sandbox, caller: str, *args: str) -> Any:
    return box.run("generate", *args, "--size", "512x512", env={"MAI_FROM_ID": caller})


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory, module_comfy: ComfyUIDouble) -> Sandbox:
    """Five jobs: three of one image (two backends, two callers, one hostile prompt), one of two
    images (a ComfyUI batch) and a failure."""
    box = Sandbox(tmp_path_factory.mktemp("gallery"))
    _config(box, module_comfy.url)
    for caller, args in [
        ("alice", ("a red fox in the snow", "--seed", "7")),
        ("bob", (HOSTILE, "--seed", "8")),
        ("bob", ("a lighthouse at dusk", "--seed", "9", "-b", "attic")),
        ("erin", ("two owls on a branch", "--seed", "12", "--per-job", "2")),
    ]:
        result = _generate(box, caller, *args)
        assert result.returncode == 0, result.stderr
    module_comfy.execution_error(
        message="CUDA out of memory", exception_type="torch.OutOfMemoryError"
    )
    assert _generate(box, "alice", "a broken dream", "--seed", "10").returncode == 1
    return box


@pytest.fixture(scope="module")
def site(made: Sandbox) -> dict[str, Any]:
    result = made.run("gallery", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")  # empty: nothing of anyone's browser
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield context
        context.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    page = browser.new_page()
    page.requests = []  # type: ignore[attr-defined]
    page.on("request", lambda r: page.requests.append(r.url))
    yield page
    page.close()


def cards(page: Any) -> int:
    return page.locator("article.card").count()


def test_the_page_shows_every_job_as_a_person_sees_it(page: Any, site: dict[str, Any]) -> None:
    assert site["job_count"] == 5 and site["image_count"] == 5 and len(site["jobs"]) == 5
    page.goto(Path(site["index"]).as_uri())
    assert cards(page) == 6  # one card per image, one for the failed job
    assert page.locator("#count").inner_text() == "5 of 5 jobs, 5 images"
    owls = page.locator("article.card", has_text="two owls on a branch")
    assert owls.count() == 2
    assert [owls.nth(i).get_attribute("data-index") for i in range(2)] == ["0", "1"]
    fox = page.locator("article.card", has_text="a red fox in the snow")
    assert fox.locator(".prompt").inner_text() == "a red fox in the snow"
    details = fox.locator("dl").inner_text()
    for shown in ("512x512", "alice", "studio", "7"):
        assert shown in details
    # The hostile prompt is shown as text: no element made of it, no script run.
    hostile = page.locator("article.card", has_text="pwned").locator(".prompt")
    assert hostile.inner_text() == HOSTILE
    assert page.title() == "imagen gallery"
    assert page.locator("img[src='x']").count() == 0
    failed = page.locator("article.card", has_text="a broken dream")
    assert failed.locator(".status").inner_text().lower() == "failed"
    assert "CUDA out of memory" in failed.locator(".error").inner_text()
    assert failed.locator("img").count() == 0
    # Newest first.
    assert "a broken dream" in page.locator("article.card").first.inner_text()


def test_search_and_filters_narrow_the_list(page: Any, site: dict[str, Any]) -> None:
    page.goto(Path(site["index"]).as_uri())
    page.fill("#q", "LIGHTHOUSE")
    assert cards(page) == 1 and page.locator("#count").inner_text().startswith("1 of 5")
    page.fill("#q", "")
    page.select_option("#caller", "bob")
    assert cards(page) == 2
    page.select_option("#backend", "attic")
    assert cards(page) == 1
    assert "a lighthouse at dusk" in page.locator("article.card").inner_text()
    page.select_option("#caller", "")
    page.select_option("#backend", "")
    page.select_option("#status", "failed")
    assert cards(page) == 1
    # The filters live in the URL's fragment: a reload keeps them.
    page.reload()
    assert page.locator("#status").input_value() == "failed" and cards(page) == 1


def test_images_and_sidecars_load_from_the_site_itself(page: Any, site: dict[str, Any]) -> None:
    page.goto(Path(site["index"]).as_uri())
    fox = page.locator("article.card", has_text="a red fox in the snow")
    full = fox.locator("a", has_text="full image").get_attribute("href")
    assert full is not None and full.startswith("images/")
    width = page.evaluate(
        """href => new Promise((ok, bad) => {
             const img = new Image(); img.onload = () => ok(img.naturalWidth);
             img.onerror = () => bad(new Error("image did not load")); img.src = href; })""",
        full,
    )
    assert width == 512
    thumb = fox.locator("img")
    thumb.scroll_into_view_if_needed()
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=thumb.element_handle()
    )
    # The sidecar link opens the sidecar rendered from the ledger, for this very image.
    sidecar = fox.locator("a", has_text="sidecar").get_attribute("href")
    data = json.loads((Path(site["directory"]) / sidecar).read_text())
    image_bytes = (Path(site["directory"]) / full).read_bytes()
    assert data["image"]["sha256"] == hashlib.sha256(image_bytes).hexdigest()
    assert data["prompt"] == "a red fox in the snow"
    # Nothing but the site's own files was requested.
    assert page.requests and all(u.startswith(("file://", "data:")) for u in page.requests)


def test_the_copied_command_makes_the_same_image(
    page: Any, site: dict[str, Any], made: Sandbox, tmp_path: Path
) -> None:
    page.goto(Path(site["index"]).as_uri())
    card = page.locator("article.card", has_text="pwned")
    command = card.locator(".cmd textarea").input_value()
    argv = shlex.split(command)
    assert argv[:3] == ["imagen", "generate", HOSTILE]
    again = tmp_path / "again.png"
    result = made.run(*argv[1:], "--output", str(again), env={"MAI_FROM_ID": "bob"})
    assert result.returncode == 0, result.stderr
    original = card.locator("a", has_text="full image").get_attribute("href")
    # Same pixels (ComfyUI's PNG text chunks name the new prompt's id, so not the same bytes).
    with Image.open(again) as a, Image.open(Path(site["directory"]) / original) as b:
        assert a.size == b.size and a.tobytes() == b.tobytes()


def _embedded(site: dict[str, Any]) -> dict[str, Any]:
    """The data the page renders, read from index.html without a browser."""
    text = Path(site["index"]).read_text()
    start = text.index('<script type="application/json" id="data">') + len(
        '<script type="application/json" id="data">'
    )
    return json.loads(text[start : text.index("</script>", start)])


def test_a_job_of_several_images_has_a_card_per_image_each_with_its_own_sidecar(
    made: Sandbox, site: dict[str, Any]
) -> None:
    root = Path(site["directory"])
    owls = [e for e in _embedded(site)["entries"] if e["prompt"] == "two owls on a branch"]
    assert [e["index"] for e in owls] == [0, 1] and {e["count"] for e in owls} == {2}
    assert len({e["job_id"] for e in owls}) == 1
    assert len({e["sha256"] for e in owls}) == 2 and len({e["image"] for e in owls}) == 2
    stored = {
        e.data["index"]: e.data for e in made.events(owls[0]["job_id"]) if e.type == "ImageStored"
    }
    for e in owls:
        image = (root / e["image"]).read_bytes()
        assert hashlib.sha256(image).hexdigest() == e["sha256"]
        doc = json.loads((root / e["sidecar"]).read_text())
        assert doc["index"] == e["index"] and doc["count"] == 2
        assert doc["image"]["sha256"] == e["sha256"]
        assert (e["width"], e["height"], e["format"]) == (512, 512, "png")
        assert (root / e["thumb"]).is_file() and "image_path" not in e
    # The ledger's record of each image, not just the files agreeing with each other.
    assert [stored[i]["sha256"] for i in (0, 1)] == [e["sha256"] for e in owls]
    failed = [e for e in _embedded(site)["entries"] if e["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["index"] is None and "image" not in failed[0]


def test_the_site_is_owner_only_and_thumbnails_are_made_once(
    made: Sandbox, site: dict[str, Any]
) -> None:
    root = Path(site["directory"])
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    for sub in ("images", "thumbs"):
        assert stat.S_IMODE((root / sub).stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "index.html").stat().st_mode) == 0o600
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in (root / "thumbs").iterdir())
    text = (root / "index.html").read_text()
    assert "http://" not in text and "https://" not in text
    assert "default-src 'self' 'unsafe-inline' data:" in text
    made.run("gallery")  # catches up with any image made since
    thumbs = {p: p.stat().st_mtime_ns for p in (root / "thumbs").iterdir()}
    again = made.run("gallery", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["thumbnails_made"] == 0
    assert {p: p.stat().st_mtime_ns for p in (root / "thumbs").iterdir()} == thumbs
    # What the last build remembers is checked, not trusted: a thumbnail deleted is made again,
    # and a damaged cache only costs a full rebuild.
    gone = next(iter(thumbs))
    gone.unlink()
    (root / ".entries.json").write_text("{not json")
    again = made.run("gallery", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["thumbnails_made"] == 1 and gone.is_file()
    alice = made.run("gallery", "--caller", "alice", "--json", "--output", str(made.root / "a"))
    assert json.loads(alice.stdout)["job_count"] == 2  # the fox and the failure


def test_served_gallery_refreshes_when_an_image_lands(
    page: Any, made: Sandbox, module_comfy: ComfyUIDouble, tmp_path: Path
) -> None:
    server = made.popen("gallery", "--serve", "--output", str(tmp_path / "served"))
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/")
        page.goto(url)
        before = cards(page)
        assert before >= 4
        page.fill("#q", "fox")  # a filter set by the person survives the refresh
        foxes = cards(page)
        result = _generate(made, "carol", "a second fox", "--seed", "11")
        assert result.returncode == 0, result.stderr
        page.wait_for_function(
            "n => document.querySelectorAll('article.card').length === n",
            arg=foxes + 1,
            timeout=20_000,
        )
        assert page.locator("#q").input_value() == "fox"
        assert page.locator("article.card", has_text="a second fox").count() == 1
        # Only under the server's random path: the root answers nothing.
        root = url.split("/", 3)
        assert page.request.get(f"{root[0]}//{root[2]}/index.html").status == 404
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=30)
    assert server.returncode == 0


def _state(prompt: str, **params: Any) -> JobState:
    request = JobRequested(
        backend="my backend",
        backend_type="replicate",
        model="m",
        prompt=prompt,
        params={"seed": 1, "width": 512, "height": 512, **params},
        backend_config={},
        output_path="/x.png",
    )
    return JobState(job_id="j", request=request)


def test_regenerate_command_quotes_everything_and_pipes_option_like_prompts() -> None:
    cmd = regenerate_command(
        _state("it's $HOME `x`", steps=4, aspect_ratio="16:9", extra={"guidance": 3.5, "s": "a b"})
    )
    assert cmd is not None
    assert shlex.split(cmd) == [
        "imagen", "generate", "it's $HOME `x`", "--seed", "1", "--backend", "my backend",
        "--aspect", "16:9", "--steps", "4", "-o", "guidance=3.5", "-o", "s=a b",
    ]  # fmt: skip
    piped = regenerate_command(_state("--verbose", aspect_ratio="1:1", megapixels="0.25"))
    assert (
        piped
        == "printf '%s\\n' --verbose | imagen generate - --seed 1 --backend 'my backend' --size 512x512"
    )


def test_embedded_json_cannot_end_the_script_element() -> None:
    text = embedded_json({"p": HOSTILE})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"p": HOSTILE}


def test_an_image_changed_on_disk_is_shown_as_such_not_published(
    tmp_path: Path, module_comfy: ComfyUIDouble
) -> None:
    box = Sandbox(tmp_path)
    _config(box, module_comfy.url)
    image = Path(_generate(box, "dana", "a quiet harbour", "--seed", "3").stdout.strip())
    image.write_bytes(image.read_bytes()[:-1] + b"\0")
    result = box.run("gallery", "--json", "--output", str(tmp_path / "site"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["image_count"] == 0
    assert list((tmp_path / "site" / "images").iterdir()) == []
    text = (tmp_path / "site" / "index.html").read_text()
    assert "image file changed since it was made" in text


def test_an_image_edited_in_place_after_it_was_published_is_withdrawn(
    tmp_path: Path, module_comfy: ComfyUIDouble
) -> None:
    box = Sandbox(tmp_path)
    _config(box, module_comfy.url)
    image = Path(_generate(box, "dana", "a quiet harbour", "--seed", "3").stdout.strip())
    site = tmp_path / "site"
    first = box.run("gallery", "--json", "--output", str(site))
    assert json.loads(first.stdout)["image_count"] == 1, first.stderr
    published = next(p for p in (site / "images").iterdir() if p.suffix == ".png")
    # Edited in place (same size, same inode): the published file is a hard link to it.
    with image.open("r+b") as fh:
        fh.seek(-1, 2)
        fh.write(b"\1")
    again = box.run("gallery", "--json", "--output", str(site))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["image_count"] == 0
    assert not published.exists()
    assert "image file changed since it was made" in (site / "index.html").read_text()


def test_bad_options_are_one_line_errors(tmp_path: Path) -> None:
    box = Sandbox(tmp_path)
    box.write_config(f'[output]\ndirectory = "{tmp_path / "out"}"\n')
    (tmp_path / "file").write_text("x")
    for args, says in [
        (("--port", "8000"), "--port goes with --serve"),
        (("--serve", "--open"), "--open is for the written page"),
        (("--serve", "--port", "70000"), "--port 70000"),
        (("--output", str(tmp_path / "file")), "not a directory"),
        (("--since", "yesterday-ish"), "--since"),
    ]:
        result = box.run("gallery", *args)
        assert result.returncode != 0 and result.stderr.count("\n") == 1, (args, result.stderr)
        assert result.stderr.startswith("imagen: error: ") and says in result.stderr
    # No ledger yet: an empty gallery, and reading did not create a ledger.
    empty = box.run("gallery", "--json")
    assert empty.returncode == 0, empty.stderr
    assert json.loads(empty.stdout)["job_count"] == 0 and not (tmp_path / "ledger.db").exists()
    # --open with no desktop to open it on: the site is written, a warning says why not opened.
    opened = box.run("gallery", "--open", env={"DISPLAY": "", "WAYLAND_DISPLAY": ""})
    assert opened.returncode == 0 and (tmp_path / "out" / "gallery" / "index.html").is_file()
    assert "imagen: warning: the gallery is written but could not be opened" in opened.stderr
