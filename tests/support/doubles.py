"""The Replicate and ComfyUI doubles as the tests use them, in one place: the one token, a
fixture each (registered in tests/conftest.py), a module-scoped variant for files that share a
double across tests, `replicate_double`/`comfyui_double` for a test that needs a double with
special options (a clock, a page size, missing models), and a Sandbox whose config holds one
backend pointing at the double, with fast polls and retries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imagen.testing.comfyui import ComfyUIDouble
from imagen.testing.replicate import ReplicateDouble
from tests.support.cli import Sandbox

# The one Replicate token of the tests: long enough that any echo of it (in a ledger, a
# sidecar, stderr) is found by a substring check, never matched by chance.
TOKEN = "r8_cli_test_token_0123456789abcdef"
TOKEN_ENV = {"REPLICATE_API_TOKEN": TOKEN}
SCHNELL = "black-forest-labs/flux-schnell"
FAST = {"poll_interval_s": 0.05, "retry_base_s": 0.01}


def replicate_double(**options: Any) -> ReplicateDouble:
    """A Replicate double accepting TOKEN (unless `token` says otherwise); use it in `with`."""
    return ReplicateDouble(**{"token": TOKEN, **options})


def comfyui_double(**options: Any) -> ComfyUIDouble:
    """A ComfyUI double with `options` (step_time, models, token…); use it in `with`."""
    return ComfyUIDouble(**options)


@pytest.fixture
def rep() -> Iterator[ReplicateDouble]:
    with replicate_double() as double:
        yield double


@pytest.fixture
def comfy() -> Iterator[ComfyUIDouble]:
    with comfyui_double() as double:
        yield double


@pytest.fixture(scope="module")
def module_comfy() -> Iterator[ComfyUIDouble]:
    """One ComfyUI double for a whole test module (its tests share what it made)."""
    with comfyui_double() as double:
        yield double


def rep_box(tmp_path: Path, rep: ReplicateDouble, **options: object) -> Sandbox:
    """A sandbox whose backend `rep` is the Replicate double (flux-schnell)."""
    box = Sandbox(tmp_path, env=dict(TOKEN_ENV))
    box.write_backend(
        "rep", "replicate", **{"model": SCHNELL, "base_url": rep.url, **FAST, **options}
    )
    return box


def comfy_box(tmp_path: Path, comfy: ComfyUIDouble, **options: object) -> Sandbox:
    """A sandbox whose backend `local` is the ComfyUI double."""
    box = Sandbox(tmp_path)
    box.write_backend("local", "comfyui", **{"url": comfy.url, **FAST, **options})
    return box
