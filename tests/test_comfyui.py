"""`imagen generate` on ComfyUI, end to end through the CLI against the ComfyUI double
(HTTP + websocket). Each test asserts the ledger's events and what the double executed."""

from __future__ import annotations

import hashlib
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from imagen.testing.comfyui import ComfyUIDouble, free_port
from tests.support.cli import Sandbox


@pytest.fixture
def comfy() -> Iterator[ComfyUIDouble]:
    with ComfyUIDouble() as double:
        yield double


def make_box(tmp_path: Path, url: str, **options: object) -> Sandbox:
    box = Sandbox(tmp_path)
    box.write_backend(
        "local", "comfyui", url=url, poll_interval_s=0.05, retry_base_s=0.01, **options
    )
    return box


@pytest.fixture
def box(tmp_path: Path, comfy: ComfyUIDouble) -> Sandbox:
    return make_box(tmp_path, comfy.url)


def only_job(box: Sandbox) -> str:
    return box.only_job()


def check_image(box: Sandbox, image: str, size: tuple[int, int]) -> dict:
    with Image.open(image) as img:
        assert img.size == size and img.format == "PNG"
    sidecar = json.loads(Path(f"{image}.json").read_text())
    assert sidecar["image"]["sha256"] == hashlib.sha256(Path(image).read_bytes()).hexdigest()
    assert box.store().verify().ok
    return sidecar


def test_happy_path_with_progress(box: Sandbox, comfy: ComfyUIDouble) -> None:
    result = box.run("generate", "a fox", "--size", "768x512", "--steps", "8", "--seed", "5")
    assert result.returncode == 0, result.stderr
    job_id = only_job(box)
    events = box.events(job_id)
    types = [e.type for e in events]
    assert types[:4] == ["JobRequested", "RunnerClaimed", "RequestSent", "ResponseReceived"]
    assert types.index("StreamOpened") < types.index("RemoteJobAccepted")  # socket before POST
    progress = [(e.data["step"], e.data["total"]) for e in events if e.type == "ProgressObserved"]
    assert progress[0] == (1, 8) and progress[-1] == (8, 8) and len(progress) < 8  # sparse
    finished = [e.data for e in events if e.type == "StreamMessage"]
    assert finished[-1]["kind"] == "execution_success"
    assert (
        finished[-1]["data"]["prompt_id"]
        == events[types.index("RemoteJobAccepted")].data["remote_id"]
    )
    assert comfy.executed == 1 and comfy.submitted == 1
    sidecar = check_image(box, result.stdout.strip(), (768, 512))
    result_meta = sidecar["result"]
    assert result_meta["prompt_id"] == sidecar["prediction_id"]
    assert (
        result_meta["steps"] == 8
        and result_meta["seed_used"] == 5
        and result_meta["sampler"] == "euler"
    )
    assert result_meta["vram_used_mib"] and result_meta["client_id"]
    graph = comfy.history(sidecar["prediction_id"])["prompt"][2]
    ksampler = next(n for n in graph.values() if n["class_type"] == "KSampler")
    assert ksampler["inputs"]["seed"] == 5 and ksampler["inputs"]["steps"] == 8
    save = next(n for n in graph.values() if n["class_type"] == "SaveImage")
    assert save["inputs"]["filename_prefix"] == f"imagen/{job_id}"


def test_websocket_drop_falls_back_to_history(box: Sandbox, comfy: ComfyUIDouble) -> None:
    comfy.step_time = 0.02
    comfy.drop_ws_after_progress(1)
    result = box.run("generate", "dropped", "--steps", "4")
    assert result.returncode == 0, result.stderr
    events = box.events(only_job(box))
    closed = [e.data for e in events if e.type == "StreamClosed"]
    assert closed and closed[0]["reason"] == "dropped"
    assert [e.data["purpose"] for e in events if e.type == "RequestSent"][-2:] == [
        "history",
        "download",
    ]
    assert comfy.executed == 1


def test_5xx_once_then_success_and_twice_fails(box: Sandbox, comfy: ComfyUIDouble) -> None:
    comfy.fail_next("prompt", status=500)
    assert box.run("generate", "once").returncode == 0
    assert box.types(box.job_ids()[0]).count("RetryScheduled") == 1
    assert comfy.executed == 1
    comfy.fail_next("prompt", status=500, times=2)
    result = box.run("generate", "twice")
    assert result.returncode == 3 and "HTTP 500" in result.stderr
    assert comfy.executed == 1


def test_4xx_is_not_retried(tmp_path: Path, comfy: ComfyUIDouble) -> None:
    workflow = tmp_path / "bad.json"
    workflow.write_text(
        json.dumps(
            {
                "1": {"class_type": "NoSuchNode", "inputs": {}},
                "9": {
                    "class_type": "SaveImage",
                    "inputs": {"images": ["1", 0], "filename_prefix": "x"},
                },
            }
        )
    )
    box = make_box(tmp_path, comfy.url, workflow=str(workflow))
    result = box.run("generate", "x")
    assert result.returncode == 2, result.stderr
    assert "ComfyUI rejected the workflow" in result.stderr
    assert "RetryScheduled" not in box.types(only_job(box))
    assert comfy.submitted == 0


@pytest.mark.parametrize("with_200", [False, True])
def test_missing_models_are_listed_with_the_setup_doc(tmp_path: Path, with_200: bool) -> None:
    with ComfyUIDouble(models={"unet": [], "clip": ["clip_l.safetensors"], "vae": []}) as comfy:
        comfy.node_errors_with_200 = with_200
        box = make_box(tmp_path, comfy.url)
        result = box.run("generate", "x")
        assert result.returncode == 3, result.stderr
        for missing in (
            "flux1-schnell-fp8.safetensors",
            "t5xxl_fp8_e4m3fn.safetensors",
            "ae.safetensors",
        ):
            assert missing in result.stderr
        assert "clip_l.safetensors" not in result.stderr
        assert "docs/setup-comfyui.md" in result.stderr
        assert comfy.executed == 0


def test_execution_error_names_the_node_and_message(box: Sandbox, comfy: ComfyUIDouble) -> None:
    comfy.execution_error(
        node_type="KSampler", message="CUDA out of memory", exception_type="torch.OutOfMemoryError"
    )
    result = box.run("generate", "x")
    assert result.returncode == 1
    assert "KSampler failed: CUDA out of memory" in result.stderr


def test_unreachable_host_gives_the_hint(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    box = make_box(tmp_path, url, unreachable_hint="run `wake-gpu-box` first")
    result = box.run("generate", "x")
    assert result.returncode == 3
    assert url in result.stderr and "run `wake-gpu-box` first" in result.stderr
    assert box.types(only_job(box)).count("RetryScheduled") == 1


def test_ctrl_c_interrupts_this_prompt(box: Sandbox, comfy: ComfyUIDouble) -> None:
    comfy.hold_next()
    proc = box.popen("generate", "interrupt me")
    comfy.wait_until(lambda c: c.held is not None, timeout=30)
    held = comfy.held
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    last = box.events(only_job(box))[-1].data
    assert last["reason"] == "user" and last["remote_cancelled"] is True
    assert last["detail"] == f"interrupted prompt {held} (verified)"
    assert ("POST", "/interrupt") in comfy.requests
    assert "(verified)" in err
    comfy.wait_until(lambda c: c.history(held) is not None, timeout=30)
    assert comfy.history(held)["status"]["status_str"] == "error"
    assert comfy.executed == 0


def test_custom_workflow_with_placeholders(tmp_path: Path, comfy: ComfyUIDouble) -> None:
    from imagen.backends.comfyui import flux_schnell_graph

    graph = flux_schnell_graph(
        "{{prompt}}",
        {"width": "{{width}}", "height": "{{height}}", "seed": "{{seed}}", "steps": "{{steps}}"},
        {},
        "mine",
    )
    workflow = tmp_path / "mine.json"
    workflow.write_text(json.dumps(graph))
    box = make_box(tmp_path, comfy.url, workflow=str(workflow))
    result = box.run("generate", "my own graph", "--seed", "77", "--size", "512x512")
    assert result.returncode == 0, result.stderr
    sidecar = check_image(box, result.stdout.strip(), (512, 512))
    sent = comfy.history(sidecar["prediction_id"])["prompt"][2]
    ksampler = next(n for n in sent.values() if n["class_type"] == "KSampler")
    assert ksampler["inputs"]["seed"] == 77
    text = next(n for n in sent.values() if n["class_type"] == "CLIPTextEncode")
    assert text["inputs"]["text"] == "my own graph"


def test_lost_reply_after_queueing_is_adopted_not_reposted(
    box: Sandbox, comfy: ComfyUIDouble
) -> None:
    comfy.fail_next("prompt", status=502, after=True)  # queued, then the reply is lost
    result = box.run("generate", "lost reply")
    assert result.returncode == 0, result.stderr
    assert comfy.submitted == 1 and comfy.executed == 1
    concluded = [e.data for e in box.events(only_job(box)) if e.type == "LookupConcluded"]
    assert concluded[0]["decision"] == "adopt"


def test_killed_while_the_post_is_in_flight(box: Sandbox, comfy: ComfyUIDouble) -> None:
    comfy.slow_next("prompt", 30)
    proc = box.popen("generate", "killed mid-post")
    comfy.wait_until(lambda c: ("POST", "/prompt") in c.requests, timeout=30)
    proc.kill()
    proc.communicate(timeout=30)
    job_id = only_job(box)
    assert box.types(job_id)[-1] == "RequestSent"
    result = box.run("resume", job_id)
    assert result.returncode == 0, result.stderr
    assert comfy.executed == 1
    assert "LookupConcluded" in box.types(job_id)


COMFY_CRASH_POINTS = [
    "JobRequested",
    "RunnerClaimed",
    "RequestSent",
    "ResponseReceived",
    "StreamOpened",
    "RequestSent:2",
    "ResponseReceived:2",
    "RemoteJobAccepted",
    "ProgressObserved",
    "StreamMessage",
    "RequestSent:4",
    "ResponseReceived:4",
    "ImageStored",
    "JobSucceeded",
]


@pytest.mark.parametrize("point", COMFY_CRASH_POINTS)
def test_crash_anywhere_then_resume_executes_once(
    tmp_path: Path, comfy: ComfyUIDouble, point: str
) -> None:
    box = make_box(tmp_path, comfy.url)
    crashed = box.run(
        "generate", "crash test", "--size", "256x256", env={"IMAGEN_CRASH_AFTER": point}
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    job_id = only_job(box)
    result = box.run("resume", job_id)
    assert result.returncode == 0, result.stderr
    assert box.types(job_id)[-1] == "JobSucceeded"
    assert comfy.executed == 1
    check_image(box, result.stdout.strip(), (256, 256))


def test_bearer_token_for_a_proxy_is_sent_and_never_recorded(tmp_path: Path) -> None:
    token = "comfy-proxy-token-0123456789"
    with ComfyUIDouble(token=token) as comfy:
        box = make_box(tmp_path, comfy.url, token_env="COMFY_TOKEN")
        refused = box.run("generate", "x", env={"COMFY_TOKEN": "wrong-token-0123456789"})
        assert refused.returncode == 3 and "token_env" in refused.stderr
        result = box.run("generate", "x", env={"COMFY_TOKEN": token})
        assert result.returncode == 0, result.stderr
        assert comfy.executed == 1
        assert token not in box.ledger_text()
        assert token not in Path(f"{result.stdout.strip()}.json").read_text()
