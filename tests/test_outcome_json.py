"""`generate --json` reports one job object whether the job succeeded or failed: a failed job
still names its backend, model, seed and size, which the ledger knows (issue #25, item 6).
Against the ComfyUI double over real sockets."""

from __future__ import annotations

import json
from pathlib import Path

from imagen.testing.comfyui import ComfyUIDouble
from tests.support.doubles import comfy_box


def test_a_failed_job_json_names_backend_model_seed_and_size(
    tmp_path: Path, comfy: ComfyUIDouble
) -> None:
    box = comfy_box(tmp_path, comfy)
    comfy.execution_error()
    result = box.run(
        "generate", "a fox", "--seed", "42", "--size", "64x48", "--json", "--output",
        str(tmp_path / "fox.png"),
    )  # fmt: skip
    assert result.returncode != 0
    doc = json.loads(result.stdout)
    assert doc["status"] == "failed" and doc["error"]
    assert doc["backend"] == "local" and doc["model"]
    assert (doc["seed"], doc["width"], doc["height"]) == (42, 64, 48)
    assert doc["prediction_id"]  # ComfyUI's prompt id: it was accepted
    assert doc["images"] == []


def test_exit_codes_tell_this_runs_ctrl_c_from_a_recorded_cancellation_and_a_backend_gone() -> None:
    """130 only for the process whose Ctrl-C cancelled the job; read back later (`resume` of a
    cancelled job, `jobs --json`) it is 10; ComfyUI gone mid-job is 3, never SIGTERM's 143."""
    from imagen.app.contract import job_object
    from imagen.app.exit_codes import ExitCode
    from imagen.app.outcome import exit_code
    from imagen.core.actions import Record
    from imagen.core.events import JobCancelled, JobInterrupted, JobRequested
    from imagen.core.job import JobState
    from imagen.runner.environment import Environment
    from tests.support.history import History

    def ended(*events: object) -> JobState:
        request = JobRequested("b", "echo", "m", "p", {"seed": 1}, {}, "/tmp/o.png")
        return History(lambda s: Record(()), request).add(*events).state  # type: ignore[arg-type]

    cancelled = ended(JobCancelled("user", remote_cancelled=False))
    claim = cancelled.claim
    assert claim is not None
    here = Environment(env={}, pid=claim.pid, host=claim.host)
    elsewhere = Environment(env={}, pid=claim.pid + 1, host=claim.host)
    assert exit_code(cancelled, here) == ExitCode.INTERRUPTED == 130
    assert exit_code(cancelled, elsewhere) == exit_code(cancelled) == ExitCode.CANCELLED == 10
    assert job_object(cancelled)["error"]["code"] == "cancelled"  # type: ignore[index]
    gone = ended(JobInterrupted("unreachable: connection refused"))
    assert exit_code(gone) == ExitCode.BACKEND_UNAVAILABLE
    assert exit_code(ended(JobInterrupted("SIGTERM"))) == ExitCode.TERMINATED
