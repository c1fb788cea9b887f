"""`imagen generate` on ComfyUI, end to end through the CLI against the ComfyUI double
(HTTP + websocket). Each test asserts the ledger's events and what the double executed."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from imagen.testing.comfyui import ComfyUIDouble, free_port
from tests.support.cli import STARTED, Sandbox
from tests.support.doubles import comfyui_double


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
    assert result.returncode == 8, result.stderr  # recorded: not 2 (which promises nothing was)
    assert "ComfyUI rejected the workflow" in result.stderr
    assert "RetryScheduled" not in box.types(only_job(box))
    assert comfy.submitted == 0


@pytest.mark.parametrize("with_200", [False, True])
def test_missing_models_are_listed_with_the_setup_doc(tmp_path: Path, with_200: bool) -> None:
    with comfyui_double(models={"unet": [], "clip": ["clip_l.safetensors"], "vae": []}) as comfy:
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
        assert "imagen docs setup-comfyui" in result.stderr
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
    # The first run's ways on, from the config: another backend, or the simulator.
    assert result.stderr.splitlines()[-1].endswith("with `imagen demo`")
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


def test_sigterm_reaches_imagen_started_with_it_blocked(box: Sandbox, comfy: ComfyUIDouble) -> None:
    # A signal mask survives exec: a parent that blocked SIGTERM would leave `kill` unheard
    # and the job unrecorded as interrupted, had imagen not unblocked what it handles.
    comfy.hold_next()
    blocked_then_imagen = (
        "import os, signal, sys; signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}); "
        "os.execv(sys.executable, [sys.executable, '-m', 'imagen', *sys.argv[1:]])"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", blocked_then_imagen, "generate", "stop me"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=box.env,
        cwd=box.root,
    )
    STARTED.append(proc)
    comfy.wait_until(lambda c: c.held is not None, timeout=30)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert box.types(only_job(box))[-1] == "JobInterrupted"


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


def test_bearer_token_for_a_proxy_is_sent_and_never_recorded(tmp_path: Path) -> None:
    token = "comfy-proxy-token-0123456789"
    with comfyui_double(token=token) as comfy:
        box = make_box(tmp_path, comfy.url, token_env="COMFY_TOKEN")
        refused = box.run("generate", "x", env={"COMFY_TOKEN": "wrong-token-0123456789"})
        assert refused.returncode == 3 and "token_env" in refused.stderr
        result = box.run("generate", "x", env={"COMFY_TOKEN": token})
        assert result.returncode == 0, result.stderr
        assert comfy.executed == 1
        assert token not in box.ledger_text()
        assert token not in Path(f"{result.stdout.strip()}.json").read_text()


# -- issue 11: ComfyUI as it really behaves ---------------------------------------------------


def post_other_prompt(comfy: ComfyUIDouble, prompt_id: str) -> None:
    """Another client's prompt (no websocket), so imagen's prompt waits in the queue."""
    import urllib3

    from imagen.backends.comfyui import flux_schnell_graph

    graph = flux_schnell_graph(
        "other", {"width": 256, "height": 256, "seed": 1, "steps": 2}, {}, "other"
    )
    reply = urllib3.PoolManager().request(
        "POST",
        f"{comfy.url}/prompt",
        body=json.dumps({"prompt": graph, "prompt_id": prompt_id}).encode(),
        headers={"Content-Type": "application/json"},
        timeout=5.0,
    )
    assert reply.status == 200, reply.data


def after_claim(events: list, n: int = -1) -> list:
    """Events after the n-th RunnerClaimed (the last one by default)."""
    claims = [i for i, e in enumerate(events) if e.type == "RunnerClaimed"]
    return events[claims[n] + 1 :]


def test_ctrl_c_on_a_pending_prompt_deletes_it_from_the_queue(
    box: Sandbox, comfy: ComfyUIDouble
) -> None:
    comfy.hold_next()
    post_other_prompt(comfy, "other-prompt")
    comfy.wait_until(lambda c: c.held == "other-prompt", timeout=30)
    proc = box.popen("generate", "wait your turn")
    # Queued behind it and accepted (system_stats is asked right after acceptance is recorded).
    comfy.wait_until(lambda c: c.submitted == 2 and ("GET", "/system_stats") in c.requests)
    job_id = only_job(box)
    mine = next(e.data["remote_id"] for e in box.events(job_id) if e.type == "RemoteJobAccepted")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    last = box.events(job_id)[-1]
    assert last.type == "JobCancelled" and last.data["remote_cancelled"] is True
    assert "deleted" in last.data["detail"] and "deleted" in err
    assert ("POST", "/queue") in comfy.requests and ("POST", "/interrupt") not in comfy.requests
    comfy.release()
    comfy.wait_until(lambda c: c.history("other-prompt") is not None, timeout=30)
    assert comfy.history(mine) is None and comfy.executed == 1  # ours never ran


def test_a_network_blip_after_acceptance_is_not_terminal(
    box: Sandbox, comfy: ComfyUIDouble
) -> None:
    comfy.step_time = 0.05
    proc = box.popen("generate", "through the blip", "--steps", "20", "--size", "256x256")
    comfy.wait_until(lambda c: any(k == "progress" for k, _ in _all_events(c)), timeout=30)
    comfy.go_offline()
    running = comfy.running
    assert running is not None
    comfy.wait_until(lambda c: c.history(running) is not None, timeout=30)  # done meanwhile
    tries = lambda: sum(  # noqa: E731
        1
        for e in box.events(only_job(box))
        if e.type == "RequestFailed" and e.data["purpose"] == "stream"
    )
    comfy.wait_until(lambda c: tries() >= 2, timeout=30)  # each try is an event
    comfy.go_online()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    events = box.events(only_job(box))
    assert [e.data["reason"] for e in events if e.type == "StreamClosed"] == ["dropped"]
    assert "JobFailed" not in [e.type for e in events]
    assert comfy.executed == 1 and comfy.submitted == 1
    check_image(box, out.strip(), (256, 256))


def _all_events(comfy: ComfyUIDouble) -> list:
    return [ev for pid in list(comfy._events) for ev in comfy.events_for(pid)]


def test_unreachable_past_the_deadline_leaves_the_job_resumable(
    tmp_path: Path, comfy: ComfyUIDouble
) -> None:
    box = make_box(tmp_path, comfy.url, timeout_s=2)
    comfy.hold_next()
    proc = box.popen("generate", "long outage", "--size", "256x256")
    comfy.wait_until(lambda c: c.held is not None, timeout=30)
    comfy.go_offline()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err  # backend gone (resumable), not failed, not SIGTERM
    assert "imagen resume" in err and "out of reach" in err
    job_id = only_job(box)
    assert box.events(job_id)[-1].type == "JobInterrupted"
    comfy.go_online()
    comfy.release()
    result = box.run("resume", job_id)
    assert result.returncode == 0, result.stderr
    assert comfy.executed == 1 and comfy.submitted == 1
    check_image(box, result.stdout.strip(), (256, 256))


def test_resume_after_comfyui_restarted_submits_again(box: Sandbox, comfy: ComfyUIDouble) -> None:
    comfy.hold_next()
    proc = box.popen("generate", "lost in a restart", "--size", "256x256")
    # Accepted (system_stats is asked right after RemoteJobAccepted is recorded), then killed.
    comfy.wait_until(lambda c: c.held is not None and ("GET", "/system_stats") in c.requests)
    lost = comfy.held
    proc.kill()
    proc.communicate(timeout=30)
    comfy.restart()
    job_id = only_job(box)
    result = box.run("resume", job_id)
    assert result.returncode == 0, result.stderr
    events = box.events(job_id)
    assert [e.data["decision"] for e in events if e.type == "LookupConcluded"] == ["resubmit"]
    accepted = [e.data["remote_id"] for e in events if e.type == "RemoteJobAccepted"]
    assert len(accepted) == 2 and accepted[0] == lost and accepted[1] != lost
    assert not any(e.type in ("CancelRequested", "JobCancelled") for e in events)
    sidecar = check_image(box, result.stdout.strip(), (256, 256))
    assert sidecar["prediction_id"] == accepted[1] and sidecar["result"]["attempts"] == 2
    assert comfy.executed == 1


def test_resume_reopens_the_websocket_and_records_compactly(
    box: Sandbox, comfy: ComfyUIDouble
) -> None:
    comfy.hold_at_step(30)
    proc = box.popen("generate", "long job", "--steps", "100", "--size", "256x256")
    comfy.wait_until(lambda c: c.held is not None, timeout=30)
    proc.kill()
    proc.communicate(timeout=30)
    job_id = only_job(box)
    resume = box.popen("resume", job_id)
    comfy.wait_until(lambda c: ("GET", "/queue") in c.requests, timeout=30)  # located it
    comfy.step_time = 0.02  # the other 70 steps outlast the /queue answer
    comfy.release()
    out, err = resume.communicate(timeout=60)
    assert resume.returncode == 0, err
    events = box.events(job_id)
    resumed = after_claim(events)
    types = [e.type for e in resumed]
    # A fresh client id per connection (issue #25 defect 2): the prompt's messages go to the
    # killed process's id, so the resumed run locates it in /queue and polls /history, the
    # repeats summarised.
    assert "StreamOpened" in types and "PollsUnchanged" in types
    polls = [e for e in resumed if e.type == "RequestSent" and e.data["purpose"] == "history"]
    assert len(polls) <= 3
    assert len(events) <= 60, [e.type for e in events]
    assert comfy.executed == 1


def test_a_custom_model_free_workflow_records_the_workflow_and_shows_its_nodes(
    tmp_path: Path, comfy: ComfyUIDouble
) -> None:
    graph = {
        "1": {"class_type": "PrimitiveString", "inputs": {"value": "{{prompt}}"}},
        "2": {"class_type": "StringLength", "inputs": {"string": ["1", 0]}},
        "3": {
            "class_type": "EmptyImage",
            "inputs": {
                "width": "{{width}}",
                "height": "{{height}}",
                "batch_size": 4,
                "color": ["2", 0],
            },
        },
        "4": {
            "class_type": "ImageAddNoise",
            "inputs": {"image": ["3", 0], "seed": "{{seed}}", "strength": 0.5},
        },
        "7": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["4", 0]}},
        "8": {
            "class_type": "ImageFromBatch",
            "inputs": {"image": ["4", 0], "batch_index": 0, "length": 1},
        },
        "5": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "x"}},
    }
    workflow = tmp_path / "noise.json"
    workflow.write_text(json.dumps(graph))
    box = make_box(tmp_path, comfy.url, workflow=str(workflow))
    result = box.run("generate", "model free", "--size", "100x72")  # not multiples of 16
    assert result.returncode == 0, result.stderr
    sidecar = check_image(box, result.stdout.strip(), (100, 72))
    digest = hashlib.sha256(workflow.read_bytes()).hexdigest()
    assert sidecar["model"] == f"workflow noise.json (sha256 {digest[:12]})"
    assert sidecar["result"]["workflow"] == {"file": "noise.json", "sha256": digest}
    assert "flux1-schnell" not in json.dumps(sidecar)
    listed = box.run("jobs", "--json")
    assert "workflow noise.json" in listed.stdout
    progress = [
        (e.data["status"], e.data["step"], e.data["total"])
        for e in box.events(only_job(box))
        if e.type == "ProgressObserved"
    ]
    assert progress[0][0] == "SaveImageWebsocket" and progress[-1][1:] == (4, 4)


def test_system_stats_metadata_and_asked_again_on_resume(
    box: Sandbox, comfy: ComfyUIDouble
) -> None:
    comfy.fail_next("system_stats", status=500)
    crashed = box.run(
        "generate", "stats", "--size", "256x256", env={"IMAGEN_CRASH_AFTER": "ProgressObserved"}
    )
    assert crashed.returncode == -signal.SIGKILL
    result = box.run("resume", only_job(box))
    assert result.returncode == 0, result.stderr
    meta = check_image(box, result.stdout.strip(), (256, 256))["result"]
    assert meta["device"] == {
        "name": "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync",
        "type": "cuda",
    }
    assert meta["comfyui_version"] == "0.3.64"
    assert meta["vram_total_mib"] == 24 * 1024 and meta["vram_used_mib"] > 0
    assert meta["memory"] == "vram"  # a GPU's (the double's default device is a CUDA card)


def test_backends_check_names_missing_models_and_exits_non_zero(tmp_path: Path) -> None:
    with comfyui_double(models={"unet": [], "clip": ["clip_l.safetensors"], "vae": []}) as comfy:
        box = make_box(tmp_path, comfy.url)
        result = box.run("backends", "--check")
        assert result.returncode == 3, result.stderr
        for missing in (
            "flux1-schnell-fp8.safetensors (UNETLoader.unet_name)",
            "t5xxl_fp8_e4m3fn.safetensors (DualCLIPLoader.clip_name1)",
            "ae.safetensors (VAELoader.vae_name)",
        ):
            assert missing in result.stdout
        assert "clip_l.safetensors" not in result.stdout
        assert ("GET", "/object_info/UNETLoader") in comfy.requests


def test_backends_check_ok_missing_workflow_and_down(tmp_path: Path, comfy: ComfyUIDouble) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    workflow = tmp_path / "flow.json"
    box = Sandbox(tmp_path)
    box.write_config(
        f'default_backend = "local"\n'
        f'[backends.local]\ntype = "comfyui"\nurl = "{comfy.url}"\n'
        f'[backends.flow]\ntype = "comfyui"\nurl = "{comfy.url}"\nworkflow = "{workflow}"\n'
        f'[backends.down]\ntype = "comfyui"\nurl = "{down}"\n'
    )
    result = box.run("backends", "--check")
    assert result.returncode == 0, result.stdout + result.stderr  # the default one is ready
    lines = {line.lstrip("* ").split()[0]: line for line in result.stdout.splitlines()}
    assert "ok (ComfyUI 0.3.64" in lines["local"]
    assert f"workflow file {workflow}" in lines["flow"] and "not ready" in lines["flow"]
    assert "unreachable" in lines["down"]
    assert box.run("backends", "--check", "down").returncode == 3
    assert box.run("backends", "--check", "flow").returncode == 3
    assert box.run("backends", "--check", "local").returncode == 0
    missing = {r["name"]: r["model"] for r in json.loads(box.run("backends", "--json").stdout)}
    assert missing["flow"] == "workflow flow.json (file missing or unreadable)"  # no FLUX unet
    workflow.write_text(json.dumps({"9": {"class_type": "NoSuchNode", "inputs": {}}}))
    flow = box.run("backends", "--check", "flow")
    assert flow.returncode == 3 and "node types not installed: NoSuchNode" in flow.stdout
    listed = json.loads(box.run("backends", "--json").stdout)
    model = {r["name"]: r["model"] for r in listed}
    digest = hashlib.sha256(workflow.read_bytes()).hexdigest()
    assert model["flow"] == f"workflow flow.json (sha256 {digest[:12]})"  # not the FLUX file
    assert box.run("backends").returncode == 0  # without --check: a listing, never a verdict


def test_a_crash_right_after_success_is_completed_by_resume_and_seen_by_audit(
    box: Sandbox, comfy: ComfyUIDouble
) -> None:
    crashed = box.run(
        "generate", "almost", "--size", "256x256", env={"IMAGEN_CRASH_AFTER": "JobSucceeded"}
    )
    assert crashed.returncode == -signal.SIGKILL
    job_id = only_job(box)
    image = next(e.data["path"] for e in box.events(job_id) if e.type == "ImageStored")
    sidecar = Path(f"{image}.json")
    assert Path(image).exists() and not sidecar.exists()
    audit = box.run("audit")
    assert audit.returncode == 4, audit.stdout
    assert f"job {job_id}: sidecar missing: {sidecar}" in audit.stdout
    assert f"imagen resume {job_id}" in audit.stdout
    resumed = box.run("resume", "--all")
    assert resumed.returncode == 0, resumed.stderr
    assert "wrote its sidecar" in resumed.stderr and sidecar.exists()
    assert box.run("audit").returncode == 0
    data = json.loads(sidecar.read_text())
    data["image"]["sha256"] = "0" * 64
    sidecar.write_text(json.dumps(data))
    differs = box.run("audit")
    assert differs.returncode == 4 and "sidecar differs from the ledger" in differs.stdout
    assert "imagen rebuild" in differs.stdout
    assert comfy.executed == 1


def test_without_websockets_polls_back_off_and_are_recorded_compactly(
    box: Sandbox, comfy: ComfyUIDouble
) -> None:
    comfy.reject_websockets = True  # a proxy without websocket support
    comfy.step_time = 0.05
    result = box.run("generate", "polled", "--steps", "30", "--size", "256x256")
    assert result.returncode == 0, result.stderr
    events = box.events(only_job(box))
    failed = [e.data for e in events if e.type == "RequestFailed" and e.data["purpose"] == "stream"]
    assert failed and failed[0]["error"] == "handshake"
    summaries = [e.data for e in events if e.type == "PollsUnchanged"]
    assert summaries and summaries[0]["purpose"] == "history" and summaries[0]["count"] >= 2
    polls = [e for e in events if e.type == "RequestSent" and e.data["purpose"] == "history"]
    assert len(polls) <= 2, len(polls)  # ~1.5 s of polling: one recorded request
    assert len(events) <= 30
    check_image(box, result.stdout.strip(), (256, 256))
