"""ComfyUI resilience figures (issue 11), each beside a baseline measured in the same run:

- ledger events of a 300-step job killed half-way and resumed once (target <= 60), beside the
  same job run without interruption;
- time from the end of a 3-second network blip to the image on disk (target <= 2 s), beside
  the time from the prompt finishing to the image on disk without a blip;
- issue 25: time from the end of a half-open drop (imagen's side cut, imagen reconnected, the
  server's side reset 2 s later, the prompt still running) to the image on disk (target
  <= 5 s), and from a ComfyUI restart mid-job to the resubmitted image, each beside the same
  scenario driven by the imagen this branch started from (IMAGEN_BENCH_BASELINE_ROOT, or the
  merge base with main, extracted with git archive). That imagen waits for its deadline after
  a half-open drop: the scenario gives it HALF_OPEN_DEADLINE_S (300 s by default).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from imagen.testing.comfyui import ComfyUIDouble
from ledger import open_store
from tests.benchmarks.report import line

ROOT = Path(__file__).resolve().parents[2]
HALF_OPEN_DEADLINE_S = 20
STEPS = 300
BLIP_S = 3.0
RUNS = 3


def _setup(
    root: Path, url: str, workflow: Path | None = None, code: Path = ROOT, timeout_s: int = 0
) -> dict[str, str]:
    extra = f'workflow = "{workflow}"\n' if workflow else ""
    extra += f"timeout_s = {timeout_s}\n" if timeout_s else ""
    (root / "config.toml").write_text(
        f'default_backend = "local"\n[backends.local]\ntype = "comfyui"\nurl = "{url}"\n{extra}'
        f'[output]\ndirectory = "{root / "out"}"\n'
    )
    return {
        **os.environ,
        "IMAGEN_CONFIG": str(root / "config.toml"),
        "PYTHONPATH": str(code),
        "IMAGEN_LEDGER_URL": f"sqlite:///{root / 'ledger.db'}",
        "IMAGEN_PREVIEW": "off",
    }


def _imagen(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "imagen", *args],
        env=env,
        cwd=env["PYTHONPATH"],  # `-m` puts the working directory first: the imagen measured
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _is_png(path: Path) -> bool:
    """The image is on disk (imagen may reserve the name with an empty file first)."""
    try:
        with path.open("rb") as fh:
            return fh.read(8) == b"\x89PNG\r\n\x1a\n"
    except OSError:
        return False


def _events(root: Path) -> list[str]:
    store = open_store(f"sqlite:///{root / 'ledger.db'}")
    try:
        return [e.type for e in store.read_all()]
    finally:
        store.close()


def _long_workflow(root: Path) -> Path:
    from imagen.backends.comfyui import flux_schnell_graph

    graph = flux_schnell_graph(
        "{{prompt}}", {"width": 256, "height": 256, "seed": "{{seed}}", "steps": STEPS}, {}, "x"
    )
    path = root / "steps300.json"
    path.write_text(json.dumps(graph))
    return path


def events_resumed_once() -> None:
    counts: dict[str, int] = {}
    for mode in ("uninterrupted", "resumed once"):
        with ComfyUIDouble(step_time=0.005) as comfy, tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            env = _setup(root, comfy.url, _long_workflow(root))
            if mode == "uninterrupted":
                proc = _imagen(env, "generate", "long", "--size", "256x256")
                proc.communicate(timeout=120)
            else:
                comfy.hold_at_step(STEPS // 2)
                proc = _imagen(env, "generate", "long", "--size", "256x256")
                comfy.wait_until(lambda c: c.held is not None, timeout=60)
                proc.kill()
                proc.communicate(timeout=30)
                job = json.loads(
                    subprocess.run(
                        [sys.executable, "-m", "imagen", "jobs", "--json"],
                        env=env,
                        capture_output=True,
                        text=True,
                        check=True,
                    ).stdout
                )[0]["job_id"]
                resume = _imagen(env, "resume", job)
                comfy.wait_until(lambda c: ("GET", "/queue") in c.requests, timeout=60)
                comfy.release()
                resume.communicate(timeout=120)
            types = _events(root)
            assert types[-1] == "JobSucceeded", types
            counts[mode] = len(types)
    line(
        f"ledger events, {STEPS}-step job resumed once",
        counts["resumed once"],
        counts["uninterrupted"],
        "events",
        higher_is_better=False,
        target="<= 60",
    )
    # A 10-minute job adds one RunnerRenewed per 40 s of lease (15), nothing per step.
    print(
        f"  (a 10-minute job: about {counts['resumed once'] + 15} events, "
        f"the lease renewed every 40 s; polling every 0.5 s recorded 2,400)",
        flush=True,
    )


def blip_to_image() -> None:
    blip, plain = [], []
    for i in range(RUNS * 2):
        with_blip = i % 2 == 0
        with ComfyUIDouble(step_time=0.02) as comfy, tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            env = _setup(root, comfy.url)
            out = root / "img.png"
            proc = _imagen(
                env,
                "generate",
                f"blip {i}",
                "--steps",
                "40",
                "--size",
                "256x256",
                "--output",
                str(out),
            )
            comfy.wait_until(lambda c: c.running is not None, timeout=60)
            running = comfy.running
            assert running is not None
            if with_blip:
                comfy.wait_until(
                    lambda c, r=running: any(k == "progress" for k, _ in c.events_for(r))
                )
                comfy.go_offline()
                started = time.monotonic()
                comfy.wait_until(lambda c, r=running: c.history(r) is not None, timeout=60)
                time.sleep(max(0.0, BLIP_S - (time.monotonic() - started)))
                comfy.go_online()
                mark = time.monotonic()
            else:
                comfy.wait_until(lambda c, r=running: c.history(r) is not None, timeout=60)
                mark = time.monotonic()
            while not _is_png(out):
                if proc.poll() is not None:
                    raise RuntimeError(proc.stderr.read() if proc.stderr else "imagen failed")
                time.sleep(0.005)
            (blip if with_blip else plain).append(time.monotonic() - mark)
            proc.communicate(timeout=60)
    line(
        f"{BLIP_S:g} s blip ended -> image on disk (median of {RUNS})",
        statistics.median(blip),
        statistics.median(plain),
        "s",
        higher_is_better=False,
        target="<= 2 s; baseline: prompt done -> image, no blip",
    )


def _baseline_root(tmp: Path) -> Path:
    given = os.environ.get("IMAGEN_BENCH_BASELINE_ROOT")
    if given:
        return Path(given)
    base = subprocess.run(
        ["git", "-C", str(ROOT), "merge-base", "HEAD", "main"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", base], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "xf", "-", "-C", str(tmp)], input=archive, check=True)
    return tmp


def _wait_png(proc: subprocess.Popen[str], out: Path) -> None:
    while not _is_png(out):
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read() if proc.stderr else "imagen failed")
        time.sleep(0.005)


def _half_open(code: Path) -> tuple[float, int]:
    """Seconds from the end of the drop (the server's side reset, the prompt let go) to the
    image on disk, and the job's event count."""
    from imagen.testing.netcut import CutProxy

    with (
        ComfyUIDouble(step_time=0.01) as comfy,
        CutProxy(comfy.port) as proxy,
        tempfile.TemporaryDirectory() as tmp,
    ):
        root = Path(tmp)
        env = _setup(root, proxy.url, code=code, timeout_s=HALF_OPEN_DEADLINE_S)
        out = root / "img.png"
        comfy.hold_at_step(2)
        proc = _imagen(env, "generate", "half open", "--steps", "8", "--output", str(out))
        comfy.wait_until(lambda c: c.held is not None, timeout=60)
        accepted = proxy.accepted
        proxy.cut_clients()
        # imagen reconnects (its stream first) while the server holds the old connection.
        deadline = time.monotonic() + 60
        while proxy.accepted == accepted and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(2.0)  # the scenario: the server notices the drop 2 s late
        proxy.cut_servers()
        comfy.release()
        mark = time.monotonic()
        _wait_png(proc, out)
        took = time.monotonic() - mark
        proc.communicate(timeout=60)
        return took, len(_events(root))


def _restart(code: Path) -> float:
    """Seconds from a ComfyUI restart mid-job (the prompt lost) to the resubmitted image."""
    with ComfyUIDouble(step_time=0.01) as comfy, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = _setup(root, comfy.url, code=code)
        out = root / "img.png"
        comfy.hold_at_step(2)
        proc = _imagen(env, "generate", "restart", "--steps", "8", "--output", str(out))
        comfy.wait_until(lambda c: c.held is not None, timeout=60)
        mark = time.monotonic()
        comfy.restart()
        _wait_png(proc, out)
        took = time.monotonic() - mark
        proc.communicate(timeout=60)
        return took


def half_open_and_restart() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = _baseline_root(Path(tmp))
        ours = [_half_open(ROOT) for _ in range(RUNS)]
        before = _half_open(base)
        line(
            f"half-open drop ended -> image (median of {RUNS})",
            statistics.median(t for t, _ in ours),
            before[0],
            "s",
            higher_is_better=False,
            target=f"<= 5 s; baseline waits its deadline ({HALF_OPEN_DEADLINE_S} s here, 300 s default)",
        )
        line(
            "half-open drop: ledger events of the job",
            max(n for _, n in ours),
            before[1],
            "events",
            higher_is_better=False,
            target="well under 200",
        )
        restarted = [_restart(ROOT) for _ in range(RUNS)]
        line(
            f"ComfyUI restart -> resubmitted image (median of {RUNS})",
            statistics.median(restarted),
            _restart(base),
            "s",
            higher_is_better=False,
            target="seconds",
        )


def run() -> None:
    events_resumed_once()
    blip_to_image()
    half_open_and_restart()
