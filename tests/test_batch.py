"""Batches through the CLI (issue 15): many images from one command, each its own job, against
the real doubles on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagen.testing.comfyui import ComfyUIDouble
from imagen.testing.replicate import ReplicateDouble
from tests.support.cli import Sandbox

TOKEN = "r8_batch_test_token_0123456789abcdef"
SCHNELL = "black-forest-labs/flux-schnell"


@pytest.fixture
def rep() -> Iterator[ReplicateDouble]:
    with ReplicateDouble(token=TOKEN) as double:
        yield double


@pytest.fixture
def comfy() -> Iterator[ComfyUIDouble]:
    with ComfyUIDouble() as double:
        yield double


def rep_box(tmp_path: Path, rep: ReplicateDouble, **options: object) -> Sandbox:
    box = Sandbox(tmp_path, env={"REPLICATE_API_TOKEN": TOKEN})
    box.write_backend(
        "rep",
        "replicate",
        model=SCHNELL,
        base_url=rep.url,
        poll_interval_s=0.05,
        retry_base_s=0.01,
        **options,
    )
    return box


def comfy_box(tmp_path: Path, comfy: ComfyUIDouble, **options: object) -> Sandbox:
    box = Sandbox(tmp_path)
    box.write_backend(
        "local", "comfyui", url=comfy.url, poll_interval_s=0.05, retry_base_s=0.01, **options
    )
    return box


def requests_of(box: Sandbox) -> dict[str, dict]:
    """Each job's JobRequested payload."""
    return {e.stream_id: e.data for e in box.events() if e.type == "JobRequested"}


def test_replicate_batch_of_prompts_and_count(tmp_path: Path, rep: ReplicateDouble) -> None:
    box = rep_box(tmp_path, rep)
    result = box.run("generate", "a fox", "an owl", "-n", "3", "--seed", "10")
    assert result.returncode == 0, result.stderr
    paths = result.stdout.split()
    assert len(paths) == 6 and len(set(paths)) == 6
    for p in paths:
        assert Path(p).read_bytes()[:4] == b"\x89PNG" and Path(f"{p}.json").exists()
    assert rep.billed == 6
    reqs = requests_of(box)
    assert len(reqs) == 6
    [batch] = {r["batch"] for r in reqs.values()}
    assert sorted((r["prompt"], r["params"]["seed"]) for r in reqs.values()) == [
        ("a fox", 10),
        ("a fox", 11),
        ("a fox", 12),
        ("an owl", 10),
        ("an owl", 11),
        ("an owl", 12),
    ]
    assert sorted(r["batch_index"] for r in reqs.values()) == list(range(6))
    assert "6 done, 0 failed, 0 cancelled" in result.stderr


def test_comfyui_batch_from_file_json_lines(tmp_path: Path, comfy: ComfyUIDouble) -> None:
    box = comfy_box(tmp_path, comfy)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "a lighthouse\n"
        "\n"
        + json.dumps({"prompt": "a harbour", "seed": 7, "size": "512x512", "count": 2})
        + "\n"
        + json.dumps({"prompt": "a boat", "steps": 2, "aspect": "16:9"})
        + "\n"
    )
    out = tmp_path / "shots"
    result = box.run("generate", "--from", str(prompts), "--json", "--output", str(out))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(r["index"] for r in rows) == [0, 1, 1, 2]
    assert all(r["status"] == "succeeded" and Path(r["image"]).parent == out for r in rows)
    harbour = sorted((r["seed"], r["width"]) for r in rows if r["index"] == 1)
    assert harbour == [(7, 512), (8, 512)]
    assert comfy.executed == 4
