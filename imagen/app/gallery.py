"""Writing the gallery: a static site (index.html, thumbnails, the images and their sidecars).

The site is self-contained so it works from file:// and can be copied anywhere: each image is
hard-linked into `images/` (copied when the gallery is on another file system) under its sha256,
with its sidecar rendered from the ledger beside it, and a thumbnail is made once per sha256 in
`thumbs/`. The page holds prompts, so the directory is owner-only (0700) and every file 0600,
like the ledger; the page loads nothing from the network (a Content-Security-Policy says so).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagen.app.audit import file_sha256
from imagen.app.sidecars import render_sidecar
from imagen.core.job import JobState
from imagen.projections.gallery import entries
from imagen.projections.sidecar import sidecars
from imagen.runner.files import atomic_write

THUMB_SIZE = 320
FILE_MODE = 0o600
DIR_MODE = 0o700
_EXT = {"png": "png", "jpg": "jpg", "jpeg": "jpg", "webp": "webp"}


@dataclass(frozen=True)
class Built:
    index: Path
    entries: int
    jobs: int
    images: int
    thumbnails_made: int
    head: int


def make_dir(path: Path) -> None:
    """Create an owner-only directory; an existing one keeps its mode (it may be the user's)."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)


def site_dir_for(out: Path) -> None:
    make_dir(out)
    for sub in ("images", "thumbs"):
        make_dir(out / sub)


def link_image(source: Path, target: Path, sha256: str) -> str | None:
    """Put the job's image into the site under its sha256; None when done, else why not.

    Only bytes with the recorded sha256 are published: an image edited or replaced on disk
    after the job is shown as such, not silently swapped."""
    if target.is_file() and not target.is_symlink():
        # Published before, perhaps as a hard link to the job's image: an edit in place of
        # that image edits the published file too. Re-hashed whenever its stamp moved (see
        # `stamp`), and withdrawn when its bytes are no longer the recorded ones.
        if file_sha256(target) == sha256:
            return None
        target.unlink()
    if not source.is_file():
        return "image file missing"
    if file_sha256(source) != sha256:
        return "image file changed since it was made"
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)  # no copy, no extra space; the image's own mode is kept
    except OSError:
        shutil.copyfile(source, tmp)
        os.chmod(tmp, FILE_MODE)
    os.replace(tmp, target)
    return None


def stamp(path: Path) -> list[int] | None:
    """What changes when a file's bytes may have: size, inode, mtime and ctime (a ctime cannot
    be set back by the file's owner, so an edit that restores the mtime still shows)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]


def make_thumbnail(image: Path, thumb: Path) -> bool:
    """A JPEG thumbnail, made once (its name is the image's sha256); True when made now."""
    if thumb.is_file():
        return False
    from PIL import Image

    with Image.open(image) as img:
        img.draft("RGB", (THUMB_SIZE, THUMB_SIZE))  # JPEG sources decode at a reduced scale
        img.thumbnail((THUMB_SIZE, THUMB_SIZE), reducing_gap=2.0)
        if img.mode not in ("RGB", "L"):
            img = img.convert("RGB")
        import io

        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=80)
    atomic_write(thumb, buf.getvalue(), mode=FILE_MODE)
    return True


def _write_if_changed(path: Path, data: bytes) -> None:
    try:
        if path.read_bytes() == data:
            return
    except OSError:
        pass
    atomic_write(path, data, mode=FILE_MODE)


def _publish(out: Path, item: dict[str, Any], doc: dict[str, Any] | None) -> bool:
    """Link the image, write its own sidecar and thumbnail; fills the entry's site paths."""
    sha = item["sha256"]
    ext = _EXT.get(str(item.get("format") or "").lower(), "png")
    name = f"{sha}.{ext}"
    problem = link_image(Path(item["image_path"]), out / "images" / name, sha)
    if problem is not None:
        item["image_problem"] = problem
        return False
    item["image"] = f"images/{name}"
    if doc is not None:
        _write_if_changed(out / "images" / f"{name}.json", render_sidecar(doc))
        item["sidecar"] = f"images/{name}.json"
    thumb = out / "thumbs" / f"{sha}.jpg"
    try:
        made = make_thumbnail(out / "images" / name, thumb)
    except Exception as exc:  # Pillow: unreadable, truncated, a decompression bomb, not an image
        item["thumb_problem"] = f"no thumbnail ({type(exc).__name__})"
        return False
    item["thumb"] = f"thumbs/{sha}.jpg"
    return made


CACHE = ".entries.json"
_FINISHED = ("succeeded", "failed", "cancelled")


# Version 2: a list of entries per job (one per image); a version 1 cache (one entry per job)
# is ignored and costs one full rebuild. Version 3: `cost_usd` is the job's cost (a decimal
# string, projections/cost.py), no longer the per-image price.
CACHE_VERSION = 3


def _read_cache(out: Path) -> dict[str, Any]:
    """Entries of finished jobs from the last build, by job id, with the ledger position they
    were made at: a rebuild folds only the jobs that moved (a damaged cache is just ignored)."""
    try:
        data = json.loads((out / CACHE).read_bytes())
        return data["entries"] if data.get("version") == CACHE_VERSION else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _still_good(out: Path, cached: Any, row: dict[str, Any]) -> bool:
    if not isinstance(cached, dict) or cached.get("position") != row["last_position"]:
        return False
    found = cached.get("entries")
    if not isinstance(found, list) or not found or row["status"] not in _FINISHED:
        return False
    stamps = cached.get("stamps")
    if not isinstance(stamps, dict):
        return False
    return all(
        isinstance(item, dict)
        and all((out / item[k]).is_file() for k in ("image", "thumb") if item.get(k))
        # A published image whose file moved since its bytes were verified is checked again.
        and (not item.get("image") or stamps.get(item["image"]) == stamp(out / item["image"]))
        for item in found
    )


def build(
    out: Path,
    rows: Iterable[dict[str, Any]],
    load: Callable[[str], JobState],
    *,
    head: int,
    serve: bool = False,
    note: Callable[[str], None] | None = None,
) -> Built:
    """Write the site for these jobs-table rows (newest first, status with liveness applied);
    `load` folds a job from the ledger, called only for jobs not in the last build's cache."""
    site_dir_for(out)
    cache = _read_cache(out)
    items: list[dict[str, Any]] = []
    by_job: dict[str, list[dict[str, Any]]] = {}
    work: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
    positions: dict[str, int] = {}
    for row in rows:
        jid = row["job_id"]
        positions[jid] = row["last_position"]
        cached = cache.get(jid)
        if _still_good(out, cached, row):
            found = cached["entries"]
        else:
            state = load(jid)
            found = entries(state, row["status"])
            # Each image is published with its own sidecar, matched by index.
            docs = {d["index"]: d for d in sidecars(state)}
            work += [(i, docs.get(i["index"])) for i in found if i["sha256"]]
        by_job[jid] = found
        items += found
    if note is not None and len(work) >= 100:
        note(f"publishing {len(work)} image(s) and their thumbnails (made once, reused after)")
    # Pillow releases the GIL while decoding and resizing: threads make thumbnails in parallel.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        made = sum(pool.map(lambda w: _publish(out, w[0], w[1]), work))
    for item in items:
        item.pop("image_path", None)  # the site links its own copy; the path stays private
    index = out / "index.html"
    _write_if_changed(index, page(items, head=head, serve=serve).encode())
    # Every published image now is verified (by _publish, or unchanged since: _still_good).
    keep = {
        jid: {
            "position": positions[jid],
            "entries": found,
            "stamps": {i["image"]: stamp(out / i["image"]) for i in found if i.get("image")},
        }
        for jid, found in by_job.items()
        if found[0]["status"] in _FINISHED
    }
    _write_if_changed(out / CACHE, json.dumps({"version": CACHE_VERSION, "entries": keep}).encode())
    return Built(
        index=index,
        entries=len(items),
        jobs=len(by_job),
        images=sum(1 for i in items if i.get("image")),
        thumbnails_made=made,
        head=head,
    )


def embedded_json(data: Any) -> str:
    """JSON safe inside <script type="application/json">: no `<`, `>` or `&` can end the
    element or open a comment, and U+2028/2029 are escaped too."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    for raw, escaped in (
        ("&", "\\u0026"),
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, escaped)
    return text


CSP = "default-src 'self' 'unsafe-inline' data:"


def page(items: list[dict[str, Any]], *, head: int, serve: bool) -> str:
    data = embedded_json({"head": head, "serve": serve, "entries": items})
    return _TEMPLATE.replace("/*DATA*/", data)


_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'self' 'unsafe-inline' data:">
<meta name="referrer" content="no-referrer">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>imagen gallery</title>
<style>
:root { color-scheme: light dark; --fg: #1d1d1f; --bg: #f5f5f7; --card: #fff; --muted: #6e6e73;
  --line: #d2d2d7; --bad: #b3261e; --warn: #8a5a00; }
@media (prefers-color-scheme: dark) { :root { --fg: #f5f5f7; --bg: #161617; --card: #232325;
  --muted: #a1a1a6; --line: #3a3a3c; --bad: #ff8a80; --warn: #ffcc66; } }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
header { position: sticky; top: 0; z-index: 1; display: flex; flex-wrap: wrap; gap: 8px;
  align-items: center; padding: 10px 16px; background: var(--card);
  border-bottom: 1px solid var(--line); }
header h1 { font-size: 16px; margin: 0 12px 0 0; }
header input, header select { font: inherit; padding: 5px 8px; border: 1px solid var(--line);
  border-radius: 6px; background: var(--bg); color: var(--fg); }
header input[type=search] { flex: 1 1 220px; }
#count { color: var(--muted); margin-left: auto; }
main { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 14px;
  padding: 16px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
  overflow: hidden; display: flex; flex-direction: column; }
.thumb { display: block; aspect-ratio: 1 / 1; min-height: 0; overflow: hidden;
  background: var(--bg); }
.thumb img { width: 100%; height: 100%; object-fit: contain; display: block; }
.missing { display: flex; align-items: center; justify-content: center; aspect-ratio: 1 / 1;
  color: var(--muted); background: var(--bg); text-align: center; padding: 12px; }
.body { padding: 10px 12px 12px; display: flex; flex-direction: column; gap: 6px; }
.prompt { margin: 0; white-space: pre-wrap; overflow-wrap: anywhere; max-height: 8.4em;
  overflow: auto; }
dl { margin: 0; display: grid; grid-template-columns: auto 1fr; gap: 1px 10px;
  color: var(--muted); font-size: 12px; }
dt { font-weight: 600; } dd { margin: 0; overflow-wrap: anywhere; }
.status { font-weight: 600; text-transform: uppercase; font-size: 11px; letter-spacing: .04em; }
.status.failed, .status.cancelled { color: var(--bad); }
.status.interrupted, .status.running { color: var(--warn); }
.error { color: var(--bad); font-size: 12px; overflow-wrap: anywhere; }
.cmd { display: flex; gap: 6px; }
.cmd textarea { flex: 1; min-width: 0; font: 12px ui-monospace, monospace; padding: 4px 6px;
  resize: vertical; white-space: pre; overflow: hidden;
  border: 1px solid var(--line); border-radius: 5px; background: var(--bg); color: var(--fg); }
.cmd button { font: inherit; font-size: 12px; }
.links a { margin-right: 10px; font-size: 12px; }
#more { grid-column: 1 / -1; height: 1px; }
#empty { padding: 40px; text-align: center; color: var(--muted); }
</style>
</head>
<body>
<header>
  <h1>imagen gallery</h1>
  <input id="q" type="search" placeholder="Search prompts" aria-label="Search prompts">
  <select id="caller" aria-label="Caller"><option value="">every caller</option></select>
  <select id="backend" aria-label="Backend"><option value="">every backend</option></select>
  <select id="status" aria-label="Status"><option value="">every status</option></select>
  <span id="count" aria-live="polite"></span>
</header>
<main id="grid"></main>
<div id="empty" hidden>No job matches.</div>
<script type="application/json" id="data">/*DATA*/</script>
<script>
"use strict";
(function () {
  // Everything from the ledger is untrusted text: it is only ever set with textContent or as
  // an attribute value, never parsed as HTML.
  var DATA = JSON.parse(document.getElementById("data").textContent);
  var all = DATA.entries;
  var CHUNK = 120;
  var grid = document.getElementById("grid");
  var q = document.getElementById("q");
  var selCaller = document.getElementById("caller");
  var selBackend = document.getElementById("backend");
  var selStatus = document.getElementById("status");
  var count = document.getElementById("count");
  var empty = document.getElementById("empty");
  var shown = [];
  var rendered = 0;
  var sentinel = null;
  var observer = null;

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function fill(select, key) {
    var seen = {};
    all.forEach(function (e) { if (e[key]) seen[e[key]] = true; });
    Object.keys(seen).sort().forEach(function (v) {
      var o = el("option", null, v); o.value = v; select.appendChild(o);
    });
  }
  function jobs(list) {
    var seen = Object.create(null), n = 0;
    list.forEach(function (e) { if (!seen[e.job_id]) { seen[e.job_id] = true; n++; } });
    return n;
  }
  function money(v) {  // as `imagen jobs` shows it: three places unless more are needed
    if (v === null || v === undefined) return "-";
    var n = Number(v), s = n.toFixed(3);
    return "$" + (Number(s) === n ? s : String(v).replace(/0+$/, ""));
  }
  function secs(ms) { return ms === null || ms === undefined ? "-" : (ms / 1000).toFixed(1) + " s"; }
  function when(t) {  // the reader's own time zone
    if (!t) return "-";
    var d = new Date(t.slice(0, 19) + "Z");
    return isNaN(d.getTime()) ? t : d.toLocaleString();
  }
  function row(dl, name, value) {
    dl.appendChild(el("dt", null, name));
    dl.appendChild(el("dd", null, value === null || value === undefined ? "-" : value));
  }
  function card(e) {
    var c = el("article", "card");
    c.dataset.job = e.job_id;  // not unique: a job that made several images has a card for each
    if (e.index !== null && e.index !== undefined) c.dataset.index = e.index;
    if (e.thumb && e.image) {
      var a = el("a", "thumb"); a.href = e.image;
      var img = el("img"); img.loading = "lazy"; img.decoding = "async";
      img.src = e.thumb; img.alt = e.prompt;
      a.appendChild(img); c.appendChild(a);
    } else {
      c.appendChild(el("div", "missing",
        e.status === "succeeded" ? (e.image_problem || e.thumb_problem || "no image") : e.status));
    }
    var b = el("div", "body");
    b.appendChild(el("span", "status " + e.status, e.status));
    b.appendChild(el("p", "prompt", e.prompt));
    if (e.error) b.appendChild(el("div", "error", e.error));
    var dl = el("dl");
    row(dl, "seed", e.seed); row(dl, "size", e.size); row(dl, "model", e.model);
    row(dl, "backend", e.backend); row(dl, "caller", e.caller); row(dl, "cost", money(e.cost_usd));
    row(dl, "latency", secs(e.latency_ms)); row(dl, "date", when(e.created_at));
    row(dl, "job", e.job_id);
    if (e.count > 1) row(dl, "image", (e.index + 1) + " of " + e.count);
    b.appendChild(dl);
    if (e.command) {
      var cmd = el("div", "cmd");
      // A textarea, not an input: a prompt's newlines stay in the command shown.
      var input = el("textarea"); input.readOnly = true; input.rows = 1; input.value = e.command;
      input.spellcheck = false;
      input.setAttribute("aria-label", "command to make this image again");
      var btn = el("button", null, "Copy"); btn.type = "button";
      btn.addEventListener("click", function () {
        input.select();
        var done = function () { btn.textContent = "Copied"; };
        if (navigator.clipboard && navigator.clipboard.writeText) {
          navigator.clipboard.writeText(e.command).then(done, function () {
            document.execCommand("copy"); done();
          });
        } else { document.execCommand("copy"); done(); }
      });
      cmd.appendChild(input); cmd.appendChild(btn); b.appendChild(cmd);
    }
    if (e.image) {
      var links = el("div", "links");
      var full = el("a", null, "full image"); full.href = e.image; links.appendChild(full);
      if (e.sidecar) { var s = el("a", null, "sidecar"); s.href = e.sidecar; links.appendChild(s); }
      b.appendChild(links);
    }
    c.appendChild(b);
    return c;
  }
  function renderMore() {
    var stop = Math.min(shown.length, rendered + CHUNK);
    var frag = document.createDocumentFragment();
    for (; rendered < stop; rendered++) frag.appendChild(card(shown[rendered]));
    grid.insertBefore(frag, sentinel);
  }
  function apply() {
    var text = q.value.trim().toLowerCase();
    var caller = selCaller.value, backend = selBackend.value, status = selStatus.value;
    shown = all.filter(function (e) {
      return (!text || e.prompt.toLowerCase().indexOf(text) !== -1) &&
        (!caller || e.caller === caller) && (!backend || e.backend === backend) &&
        (!status || e.status === status);
    });
    grid.textContent = "";
    sentinel = el("div"); sentinel.id = "more"; grid.appendChild(sentinel);
    rendered = 0;
    renderMore();
    // Cards are images, not jobs: a job that made several images has several cards.
    var images = shown.filter(function (e) { return e.image; }).length;
    count.textContent = jobs(shown) + " of " + jobs(all) + " jobs, " + images +
      " image" + (images === 1 ? "" : "s");
    empty.hidden = shown.length !== 0;
    if (observer) observer.observe(sentinel);
    var state = new URLSearchParams();
    if (text) state.set("q", q.value); if (caller) state.set("caller", caller);
    if (backend) state.set("backend", backend); if (status) state.set("status", status);
    history.replaceState(null, "", "#" + state.toString());
  }
  fill(selCaller, "caller"); fill(selBackend, "backend"); fill(selStatus, "status");
  var saved = new URLSearchParams(location.hash.slice(1));
  q.value = saved.get("q") || "";
  [[selCaller, "caller"], [selBackend, "backend"], [selStatus, "status"]].forEach(function (p) {
    var v = saved.get(p[1]);
    if (v && Array.prototype.some.call(p[0].options, function (o) { return o.value === v; })) {
      p[0].value = v;
    }
  });
  if ("IntersectionObserver" in window) {
    observer = new IntersectionObserver(function (seen) {
      if (seen.some(function (s) { return s.isIntersecting; }) && rendered < shown.length) {
        renderMore();
      }
    }, { rootMargin: "800px" });
  } else { CHUNK = 1e9; }
  q.addEventListener("input", apply);
  [selCaller, selBackend, selStatus].forEach(function (s) { s.addEventListener("change", apply); });
  apply();
  if (DATA.serve && location.protocol.indexOf("http") === 0) {
    // Served by `imagen gallery --serve`: reload when the ledger has moved (filters are kept
    // in the URL's fragment).
    setInterval(function () {
      fetch("head.json", { cache: "no-store" }).then(function (r) { return r.json(); })
        .then(function (h) { if (h.head !== DATA.head) location.reload(); })
        .catch(function () {});
    }, 2000);
  }
})();
</script>
</body>
</html>
"""


def rows(
    reader: Any,
    env: Any,
    *,
    since: str | None = None,
    caller: str | None = None,
    backend: str | None = None,
) -> list[dict[str, Any]]:
    """The jobs to show, newest first, as jobs-table rows (status with liveness applied)."""
    from imagen.app.liveness import row_owner_alive
    from imagen.projections.jobs import query as jobs_query

    return list(
        jobs_query.query(
            reader,
            row_owner_alive(env),
            since=since,
            caller=caller,
            backend=backend,
            status=None,
            limit=None,
        )
    )
