"""Several images per job on both backends: every image kept, each with its own sidecar, cost
per image (issue 11 item 9, issue 12 item 2)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

from imagen.testing.comfyui import ComfyUIDouble
from imagen.testing.replicate import ReplicateDouble
from tests.support.cli import ROOT
from tests.support.doubles import comfy_box, rep_box


def check_all(paths: list[str], n: int, *, distinct: bool = True) -> list[dict]:
    assert len(paths) == n and len(set(paths)) == n
    docs = []
    for i, path in enumerate(paths):
        data = Path(path).read_bytes()
        doc = json.loads(Path(f"{path}.json").read_text())
        assert doc["image"]["path"] == path and doc["index"] == i and doc["count"] == n
        assert doc["image"]["sha256"] == hashlib.sha256(data).hexdigest()
        docs.append(doc)
    if distinct:  # n different images, not one copied n times
        assert len({d["image"]["sha256"] for d in docs}) == n
    return docs


def test_replicate_num_outputs_keeps_every_image_and_costs_per_image(
    tmp_path: Path, rep: ReplicateDouble
) -> None:
    box = rep_box(tmp_path, rep)
    out = tmp_path / "fox.png"
    result = box.run("generate", "a fox", "--per-job", "3", "--output", str(out), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["images"] == [str(out), str(tmp_path / "fox-2.png"), str(tmp_path / "fox-3.png")]
    docs = check_all(summary["images"], 3)
    assert all(d["cost_usd"] == "0.009000" for d in docs)  # the job's cost, in each sidecar
    assert summary["cost_usd"] == "0.009000"  # exact: not 0.009000000000000001
    assert rep.billed == 1  # one prediction made the three images
    [create] = [
        e for e in box.events() if e.type == "RequestSent" and e.data["purpose"] == "create"
    ]
    assert create.data["body"]["input"]["num_outputs"] == 3
    rows = json.loads(box.run("usage", "--raw", "--json").stdout)
    assert sorted(r["cost_usd"] for r in rows) == ["0.003000"] * 3
    assert {r["outcome"] for r in rows} == {"image"}
    # Row ids as docs/usage.md says: the job id, then JOB:1, JOB:2 (each image's index).
    job_id = box.only_job()
    assert sorted(r["id"] for r in rows) == [job_id, f"{job_id}:1", f"{job_id}:2"]
    usage_doc = (ROOT / "docs" / "usage.md").read_text()
    assert "`JOB:1`, `JOB:2`…" in usage_doc and "`JOB:2`…, a paid" not in usage_doc
    [grouped] = json.loads(box.run("usage", "--json").stdout)
    assert grouped["images"] == 3 and grouped["cost_usd"] == "0.009000"
    [job] = json.loads(box.run("jobs", "--json").stdout)
    assert len(job["images"]) == 3 and job["cost_usd"] == "0.009000"
    plain = box.run("generate", "a cat", "--per-job", "2", "--output", str(tmp_path / "cat.png"))
    assert plain.stdout.split() == [str(tmp_path / "cat.png"), str(tmp_path / "cat-2.png")]


def test_comfyui_batch_keeps_every_image_with_its_sidecar(
    tmp_path: Path, comfy: ComfyUIDouble
) -> None:
    box = comfy_box(tmp_path, comfy)
    result = box.run("generate", "a fox", "--per-job", "2", "--size", "512x512", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    docs = check_all(summary["images"], 2)
    assert all(d["width"] == 512 for d in docs)
    graph = comfy.history(docs[0]["prediction_id"])["prompt"][2]
    latent = next(n for n in graph.values() if n["class_type"] == "EmptySD3LatentImage")
    assert latent["inputs"]["batch_size"] == 2


def test_comfyui_workflow_with_two_save_nodes_keeps_both(
    tmp_path: Path, comfy: ComfyUIDouble
) -> None:
    from imagen.backends.comfyui import flux_schnell_graph

    graph = flux_schnell_graph(
        "{{prompt}}",
        {"width": 512, "height": 512, "seed": 1, "steps": 4},
        {},
        "x",
    )
    graph["8"]["inputs"]["seed"] = "{{seed}}"
    graph["11"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["9", 0], "filename_prefix": "y"},
    }
    workflow = tmp_path / "two.json"
    workflow.write_text(json.dumps(graph))
    box = comfy_box(tmp_path, comfy, workflow=str(workflow))
    result = box.run("generate", "a fox", "--json")
    assert result.returncode == 0, result.stderr
    # Both nodes save the same decoded image: two files, two sidecars, identical pixels.
    check_all(json.loads(result.stdout)["images"], 2, distinct=False)


def test_sidecars_follow_the_ledger_privacy_unless_relaxed(
    tmp_path: Path, comfy: ComfyUIDouble
) -> None:
    (tmp_path / "a").mkdir()
    box = comfy_box(tmp_path / "a", comfy)
    image = box.run("generate", "a private prompt", "--size", "512x512").stdout.strip()
    assert stat.S_IMODE(os.stat(f"{image}.json").st_mode) == 0o600
    relaxed = tmp_path / "b"
    relaxed.mkdir()
    box2 = comfy_box(relaxed, comfy)
    box2.write_config((relaxed / "config.toml").read_text() + "private_sidecars = false\n")
    image2 = box2.run("generate", "shared", "--size", "512x512").stdout.strip()
    assert stat.S_IMODE(os.stat(f"{image2}.json").st_mode) == 0o644
