"""The step bar on stderr ends full: ComfyUI 0.3.64 sends `progress` 0..n-1 and other versions
reach n, and the node after the sampler has no steps; the bar must never fall back to 0/n
(issue #25, item 6). The reporter is fed what comfyui.interpret_frame shows for the frames of
the recorded real session."""

from __future__ import annotations

import io
import json
from pathlib import Path

from imagen.backends import comfyui
from imagen.cli.progress import RichReporter

RECORDING = Path("/work/shared/reference/comfyui-real-0.3.64.json")


def _bar(reporter: RichReporter) -> tuple[float, float | None]:
    task = reporter._progress.tasks[0]
    return task.completed, task.total


def test_the_bar_ends_full_and_never_flashes_zero_after_the_last_step() -> None:
    reporter = RichReporter(io.StringIO(), enabled=True)
    try:
        ctx: dict = {"prompt_id": "8642f564-9a9d-4393-8f53-0ddfe8993cdd"}
        seen: list[tuple[float, float | None]] = []
        for ex in json.loads(RECORDING.read_text())["exchanges"]:
            if ex.get("kind") != "ws message":
                continue
            out = comfyui.interpret_frame(ctx, json.dumps(ex["message"]))
            ctx = out.context
            if out.progress is not None:
                p = out.progress
                reporter.progress(p.step, p.total, p.label)
                seen.append(_bar(reporter))
        stepped = [s for s in seen if s[1] == 16]
        last_full = max(i for i, s in enumerate(seen) if s == (16, 16))
        assert all(s == (16, 16) for s in seen[last_full:]), seen[last_full:]
        assert stepped[-1] == (16, 16)
    finally:
        reporter.close()


def test_steps_counted_0_to_n_minus_1_end_full_when_the_next_node_starts() -> None:
    reporter = RichReporter(io.StringIO(), enabled=True)
    try:
        for step in range(16):
            reporter.progress(step, 16, "KSampler")
        reporter.progress(None, None, "VAEDecode")
        assert _bar(reporter) == (16, 16)
    finally:
        reporter.close()
