"""The Replicate and ComfyUI doubles as most CLI tests use them: a fixture each (registered in
tests/conftest.py) and a Sandbox whose config holds one backend pointing at the double, with
fast polls and retries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from imagen.testing.comfyui import ComfyUIDouble
from imagen.testing.replicate import ReplicateDouble
from tests.support.cli import Sandbox

TOKEN = "r8_cli_test_token_0123456789abcdef"
SCHNELL = "black-forest-labs/flux-schnell"
FAST = {"poll_interval_s": 0.05, "retry_base_s": 0.01}


@pytest.fixture
def rep() -> Iterator[ReplicateDouble]:
    with ReplicateDouble(token=TOKEN) as double:
        yield double


@pytest.fixture
def comfy() -> Iterator[ComfyUIDouble]:
    with ComfyUIDouble() as double:
        yield double


def rep_box(tmp_path: Path, rep: ReplicateDouble, **options: object) -> Sandbox:
    """A sandbox whose backend `rep` is the Replicate double (flux-schnell)."""
    box = Sandbox(tmp_path, env={"REPLICATE_API_TOKEN": TOKEN})
    box.write_backend(
        "rep", "replicate", **{"model": SCHNELL, "base_url": rep.url, **FAST, **options}
    )
    return box


def comfy_box(tmp_path: Path, comfy: ComfyUIDouble, **options: object) -> Sandbox:
    """A sandbox whose backend `local` is the ComfyUI double."""
    box = Sandbox(tmp_path)
    box.write_backend("local", "comfyui", **{"url": comfy.url, **FAST, **options})
    return box
