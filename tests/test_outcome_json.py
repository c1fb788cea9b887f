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
