"""ComfyUI pools: a 12-image batch (4 sampler steps of 0.25 s each on the double: 1 s of GPU
work an image) on 1, 2 and 3 equal-speed doubles in the same run, the one-member pool the
baseline (issue 28's target: 2 members <= 0.6x one member's wall); then the time from a
member's death to its moved job's image (member_grace_s = 1: the grace is most of it)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from imagen.testing.comfyui import ComfyUIDouble
from tests.benchmarks.report import line
from tests.support.cli import Sandbox
from tests.support.doubles import FAST

IMAGES, STEPS, STEP_TIME = 12, 4, 0.25


def _box(root: Path, urls: list[str], **options: object) -> Sandbox:
    root.mkdir(parents=True, exist_ok=True)
    box = Sandbox(root)
    box.write_backend("pool", "comfyui", urls=urls, **FAST, **options)
    return box


def _batch(root: Path, members: int) -> float:
    with contextlib.ExitStack() as stack:
        doubles = [stack.enter_context(ComfyUIDouble(step_time=STEP_TIME)) for _ in range(members)]
        box = _box(root / f"pool{members}", [d.url for d in doubles])
        start = time.perf_counter()
        result = box.run("generate", "--steps", str(STEPS), "--size", "512x512",
                         *[f"a lighthouse, take {n}" for n in range(IMAGES)])  # fmt: skip
        wall = time.perf_counter() - start
        assert result.returncode == 0, result.stderr
        executed = [d.executed for d in doubles]
        assert sum(executed) == IMAGES, executed
        print(f"  {members} member(s): executed per member {executed}", flush=True)
        return wall


def _death_to_image(root: Path) -> float:
    """Kill the member holding a job; from the kill to that job's image on disk."""
    with ComfyUIDouble(step_time=STEP_TIME) as a, ComfyUIDouble(step_time=STEP_TIME) as b:
        a.hold_next()
        box = _box(root / "death", [a.url, b.url], member_grace_s=1.0)
        proc = subprocess.Popen(
            box.cmd("generate", "--json", "--steps", str(STEPS), "--size", "512x512",
                    *[f"an owl, take {n}" for n in range(4)]),  # fmt: skip
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=box.env, cwd=box.root,
        )  # fmt: skip
        a.wait_until(lambda d: d.held is not None, timeout=60)
        held = a.held
        killed = time.time()
        a.kill()
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        for job in box.job_ids():
            events = box.events(job)
            sent = [json.loads(e.data_json) for e in events if e.type == "RequestSent"]
            if any(isinstance(s.get("body"), dict) and s["body"].get("prompt_id") == held
                   for s in sent):  # fmt: skip
                stored = next(e for e in events if e.type == "ImageStored")
                from imagen.core.times import parse_iso

                return parse_iso(stored.recorded_at).timestamp() - killed
        raise AssertionError("the held job was not found")


def run() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        one = _batch(root, 1)
        two = _batch(root, 2)
        three = _batch(root, 3)
        line(f"{IMAGES}-image batch, 2 members (wall)", two, one, "s", False, "<= 0.6x")
        line(f"{IMAGES}-image batch, 3 members (wall)", three, one, "s", False)
        gap = _death_to_image(root)
        line("member death -> moved job's image", gap, 1.0, "s", False, "grace 1 s + 1 image")


if __name__ == "__main__":
    run()
    sys.exit(0)
