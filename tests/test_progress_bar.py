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


def _line(reporter: RichReporter) -> str:
    from rich.console import Console

    out = io.StringIO()
    progress = reporter._progress
    Console(file=out, width=100).print(progress.make_tasks_table(progress.tasks))
    return out.getvalue()


def test_before_steps_are_known_the_line_says_what_it_waits_for_never_0_of_unknown() -> None:
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from imagen.core.events import RequestSent
    from imagen.core.job import Recorded

    reporter = RichReporter(io.StringIO(), enabled=True)
    try:
        state = SimpleNamespace(request=SimpleNamespace(backend="flux-schnell-replicate"))
        sent = RequestSent("r1", "create", "POST", "http://127.0.0.1/x", {}, None)
        reporter.event(state, Recorded(sent, 1, datetime.now(UTC)))  # type: ignore[arg-type]
        line = _line(reporter)
        assert "create: waiting for flux-schnell-replicate" in line and "0/?" not in line
        reporter.progress(3, 4, "sampling")
        assert "3/4" in _line(reporter)
    finally:
        reporter.close()
