"""The ComfyUI double over real sockets: urllib3 for HTTP, the websockets sync client for /ws."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import urllib3
from PIL import Image
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from imagen.backends.comfyui import flux_schnell_graph
from imagen.testing.comfyui import ComfyUIDouble, free_port
from tests.support.doubles import comfyui_double

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RECV_TIMEOUT = 60.0  # generous: a loaded machine may take seconds; a correct double is quicker


def flux_graph(
    seed: int = 42,
    width: int = 512,
    height: int = 384,
    steps: int = 4,
    prefix: str = "imagen/test",
    unet: str | None = None,
) -> dict[str, Any]:
    """The FLUX.1 schnell graph imagen submits: the adapter's own, so the double is tested
    against what imagen sends (a copy kept here once drifted: its clip names were swapped)."""
    params = {"seed": seed, "width": width, "height": height, "steps": steps}
    return flux_schnell_graph("a red fox", params, {"unet": unet} if unet else {}, prefix)


@pytest.fixture
def http() -> urllib3.PoolManager:
    return urllib3.PoolManager(timeout=urllib3.Timeout(total=60.0), retries=False)


def post_json(
    http: urllib3.PoolManager, url: str, body: Any, headers: dict[str, str] | None = None
) -> urllib3.BaseHTTPResponse:
    return http.request(
        "POST",
        url,
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def get_json(http: urllib3.PoolManager, url: str) -> Any:
    response = http.request("GET", url)
    assert response.status == 200, response.data
    return json.loads(response.data)


def open_ws(comfy: ComfyUIDouble, client_id: str, **kwargs: Any) -> ClientConnection:
    # An unbounded queue: with websockets' default (16) unread messages pause the reader
    # thread, and close() then waits close_timeout (10 s) for a close frame it cannot read.
    kwargs.setdefault("max_queue", None)
    ws = connect(f"ws://127.0.0.1:{comfy.port}/ws?clientId={client_id}", open_timeout=60, **kwargs)
    first = json.loads(ws.recv(timeout=RECV_TIMEOUT))
    assert first["type"] == "status" and first["data"]["sid"] == client_id
    return ws


def recv_until_done(ws: ClientConnection, prompt_id: str) -> list[dict[str, Any]]:
    """Messages until `executing {node: null}` for this prompt (ComfyUI's canonical end)."""
    got: list[dict[str, Any]] = []
    while True:
        msg = json.loads(ws.recv(timeout=RECV_TIMEOUT))
        got.append(msg)
        data = msg["data"]
        if msg["type"] == "executing" and data.get("node") is None:
            if data.get("prompt_id") == prompt_id:
                return got


def submit(
    http: urllib3.PoolManager, comfy: ComfyUIDouble, graph: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    response = post_json(http, f"{comfy.url}/prompt", {"prompt": graph, **extra})
    assert response.status == 200, response.data
    return json.loads(response.data)


def finished(prompt_id: str) -> Any:
    return lambda c: c.history(prompt_id) is not None


def test_happy_path_ws_sequence_history_and_png(
    comfy: ComfyUIDouble, http: urllib3.PoolManager
) -> None:
    client_id = uuid.uuid4().hex
    with open_ws(comfy, client_id) as ws:
        reply = submit(http, comfy, flux_graph(), client_id=client_id)
        prompt_id = reply["prompt_id"]
        assert reply["node_errors"] == {} and reply["number"] == 0
        messages = recv_until_done(ws, prompt_id)

    ours = [(m["type"], m["data"]) for m in messages if m["data"].get("prompt_id") == prompt_id]
    kinds = [t for t, _ in ours if t != "progress_state"]
    executing = [d["node"] for t, d in ours if t == "executing"]
    assert kinds[:2] == ["execution_start", "execution_cached"]
    assert kinds[-3:] == ["executed", "execution_success", "executing"]
    # ExecutionList order: the VAE loader (two links from SaveImage) first, then add_node's.
    assert executing == ["3", "6", "2", "5", "4", "1", "7", "8", "9", "10", None]
    progress = [d for t, d in ours if t == "progress"]
    assert [(p["value"], p["max"], p["node"]) for p in progress] == [
        (i, 4, "8") for i in (1, 2, 3, 4)
    ]
    # Progress comes between `executing 8` and `executing 9`.
    i8 = kinds.index("executing", kinds.index("execution_cached"))
    assert kinds.index("progress") > i8
    assert ours[0][1]["timestamp"] > 0 and ours[1][1]["nodes"] == []
    # A status broadcast (no prompt_id) precedes the final executing-null.
    types = [m["type"] for m in messages]
    assert types[-2] == "status" and "sid" not in messages[-2]["data"]

    executed = next(d for t, d in ours if t == "executed")
    image = executed["output"]["images"][0]
    assert executed["node"] == executed["display_node"] == "10"
    assert image == {"filename": "test_00001_.png", "subfolder": "imagen", "type": "output"}

    history = get_json(http, f"{comfy.url}/history/{prompt_id}")[prompt_id]
    assert history["status"]["status_str"] == "success" and history["status"]["completed"]
    assert [m[0] for m in history["status"]["messages"]] == [
        "execution_start",
        "execution_cached",
        "execution_success",
    ]
    number, pid, graph, extra_data, outputs = history["prompt"]
    assert (number, pid, graph, extra_data, outputs) == (
        0,
        prompt_id,
        flux_graph(),
        {"client_id": client_id},
        ["10"],
    )
    assert history["outputs"] == {"10": {"images": [image]}}
    assert history["meta"]["10"]["node_id"] == "10"

    view = http.request("GET", f"{comfy.url}/view", fields=image)
    assert view.status == 200 and view.headers["Content-Type"] == "image/png"
    assert view.data.startswith(PNG_MAGIC)
    assert Image.open(io.BytesIO(view.data)).size == (512, 384)
    assert comfy.executed == 1 and comfy.submitted == 1
    assert comfy.events_for(prompt_id)[0][0] == "execution_start"


def test_same_seed_same_bytes_and_cached_rerun(
    comfy: ComfyUIDouble, http: urllib3.PoolManager, tmp_path: Path
) -> None:
    first = submit(http, comfy, flux_graph(seed=7))["prompt_id"]
    comfy.wait_until(finished(first))
    # An identical graph is fully cached: nothing runs, no new file, the old output is listed.
    again = submit(http, comfy, flux_graph(seed=7), client_id="c")["prompt_id"]
    comfy.wait_until(finished(again))
    assert comfy.executed == 1 and comfy.submitted == 2
    kinds = [t for t, _ in comfy.events_for(again)]
    assert "progress" not in kinds and "executing" in kinds  # only the final executing-null
    cached = dict(comfy.events_for(again))["execution_cached"]["nodes"]
    assert sorted(cached, key=int) == [str(i) for i in range(1, 11)]
    assert comfy.history(again)["outputs"] == comfy.history(first)["outputs"]
    image = comfy.history(first)["outputs"]["10"]["images"][0]
    data = http.request("GET", f"{comfy.url}/view", fields=image).data

    with comfyui_double(output_dir=tmp_path) as other:
        pid = submit(http, other, flux_graph(seed=7))["prompt_id"]
        other.wait_until(finished(pid))
        assert (tmp_path / "imagen" / "test_00001_.png").read_bytes() == data
        pid = submit(http, other, flux_graph(seed=8))["prompt_id"]
        other.wait_until(finished(pid))
        assert other.history(pid)["outputs"]["10"]["images"][0]["filename"] == "test_00002_.png"
        changed = (tmp_path / "imagen" / "test_00002_.png").read_bytes()
        assert Image.open(io.BytesIO(changed)).tobytes() != Image.open(io.BytesIO(data)).tobytes()


def test_client_chosen_prompt_id_is_echoed(comfy: ComfyUIDouble, http: urllib3.PoolManager) -> None:
    prompt_id = "imagen-" + uuid.uuid4().hex
    reply = submit(http, comfy, flux_graph(), client_id="x", prompt_id=prompt_id)
    assert reply["prompt_id"] == prompt_id
    comfy.wait_until(finished(prompt_id))
    assert list(get_json(http, f"{comfy.url}/api/history/{prompt_id}")) == [prompt_id]
    assert get_json(http, f"{comfy.url}/history/unknown") == {}


def test_missing_models_are_value_not_in_list(http: urllib3.PoolManager) -> None:
    with comfyui_double(
        models={"unet": ["a.safetensors", "b.safetensors"], "clip": [], "vae": []}
    ) as comfy:
        response = post_json(
            http, f"{comfy.url}/prompt", {"prompt": flux_graph(), "client_id": "c"}
        )
        assert response.status == 400
        body = json.loads(response.data)
        assert body["error"]["type"] == "prompt_outputs_failed_validation"
        assert body["error"]["message"] == "Prompt outputs failed validation"
        errors = body["node_errors"]
        assert set(errors) == {"1", "2", "3"}
        assert errors["1"]["class_type"] == "UNETLoader"
        assert errors["1"]["dependent_outputs"] == ["10"]
        unet = errors["1"]["errors"][0]
        assert unet == {
            "type": "value_not_in_list",
            "message": "Value not in list",
            "details": "unet_name: 'flux1-schnell-fp8.safetensors' not in ['a.safetensors', 'b.safetensors']",
            "extra_info": {
                "input_name": "unet_name",
                "input_config": [["a.safetensors", "b.safetensors"], {}],
                "received_value": "flux1-schnell-fp8.safetensors",
            },
        }
        assert [e["details"] for e in errors["2"]["errors"]] == [
            "clip_name1: 't5xxl_fp8_e4m3fn.safetensors' not in []",
            "clip_name2: 'clip_l.safetensors' not in []",
        ]
        assert (
            errors["3"]["errors"][0]["details"]
            == "vae_name: 'ae.safetensors' not in ['pixel_space']"
        )
        # Never queued, never in history.
        assert comfy.submitted == 0 and get_json(http, f"{comfy.url}/history") == {}


def test_models_dir_lists_files(http: urllib3.PoolManager, tmp_path: Path) -> None:
    for sub, name in [
        ("unet", "flux1-schnell-fp8.safetensors"),
        ("diffusion_models", "other.sft"),
        ("text_encoders", "clip_l.safetensors"),
        ("clip", "t5xxl_fp8_e4m3fn.safetensors"),
        ("vae", "ae.safetensors"),
        ("vae", "notes.txt"),
    ]:
        (tmp_path / sub).mkdir(exist_ok=True)
        (tmp_path / sub / name).write_bytes(b"")
    with comfyui_double(models_dir=tmp_path) as comfy:
        assert get_json(http, f"{comfy.url}/models/vae") == ["ae.safetensors"]
        info = get_json(http, f"{comfy.url}/object_info/UNETLoader")["UNETLoader"]
        assert info["input"]["required"]["unet_name"][0] == [
            "flux1-schnell-fp8.safetensors",
            "other.sft",
        ]
        pid = submit(http, comfy, flux_graph())["prompt_id"]
        comfy.wait_until(finished(pid))
        assert comfy.history(pid)["status"]["status_str"] == "success"
        (tmp_path / "vae" / "ae.safetensors").unlink()
        response = post_json(http, f"{comfy.url}/prompt", {"prompt": flux_graph()})
        assert json.loads(response.data)["node_errors"]["3"]["errors"][0]["details"] == (
            "vae_name: 'ae.safetensors' not in ['pixel_space']"
        )


def test_other_validation_errors(comfy: ComfyUIDouble, http: urllib3.PoolManager) -> None:
    def post(graph: Any) -> tuple[int, dict[str, Any]]:
        response = post_json(http, f"{comfy.url}/prompt", {"prompt": graph})
        return response.status, json.loads(response.data)

    graph = flux_graph()
    graph["11"] = {"class_type": "NoSuchNode", "inputs": {}}
    status, body = post(graph)
    assert status == 400 and body["error"]["type"] == "invalid_prompt"
    assert body["error"]["message"] == "Cannot execute because node NoSuchNode does not exist."
    assert body["error"]["details"] == "Node ID '#11'" and body["node_errors"] == {}

    graph = flux_graph()
    del graph["10"]
    assert post(graph)[1]["error"]["type"] == "prompt_no_outputs"

    graph = flux_graph()
    del graph["8"]["inputs"]["seed"]
    graph["9"]["inputs"]["vae"] = ["3", 0, 1]
    status, body = post(graph)
    assert status == 400
    assert body["node_errors"]["8"]["errors"][0]["type"] == "required_input_missing"
    assert body["node_errors"]["8"]["errors"][0]["details"] == "seed"
    assert body["node_errors"]["9"]["errors"][0]["type"] == "bad_linked_input"

    graph = flux_graph()
    graph["8"]["inputs"]["latent_image"] = ["4", 0]
    graph["8"]["inputs"]["steps"] = 0
    body = post(graph)[1]
    assert [e["type"] for e in body["node_errors"]["8"]["errors"]] == [
        "value_smaller_than_min",
        "return_type_mismatch",
    ]

    graph = flux_graph()
    graph["9"]["inputs"]["samples"] = ["99", 0]
    body = post(graph)[1]
    assert body["node_errors"]["9"]["errors"][0]["type"] == "exception_during_inner_validation"

    response = post_json(http, f"{comfy.url}/prompt", {"client_id": "x"})
    assert response.status == 400 and json.loads(response.data)["error"]["type"] == "no_prompt"
    bad = http.request("POST", f"{comfy.url}/prompt", body=b"{not json")
    assert bad.status == 500 and bad.data.startswith(b"500 Internal Server Error")
    assert comfy.submitted == 0


def test_node_errors_with_200(comfy: ComfyUIDouble, http: urllib3.PoolManager) -> None:
    comfy.node_errors_with_200 = True
    graph = flux_graph(unet="missing.safetensors")
    reply = submit(http, comfy, graph)
    assert set(reply["node_errors"]) == {"1"} and reply["prompt_id"]
    comfy.wait_until(finished(reply["prompt_id"]))
    # Queued with its failed outputs dropped: "success" with nothing produced.
    entry = comfy.history(reply["prompt_id"])
    assert entry["prompt"][4] == [] and entry["outputs"] == {}
    assert comfy.executed == 0


def test_scripted_5xx_and_slow(comfy: ComfyUIDouble, http: urllib3.PoolManager) -> None:
    comfy.fail_next("prompt", status=500)
    response = post_json(http, f"{comfy.url}/prompt", {"prompt": flux_graph()})
    assert response.status == 500
    assert response.data == b"500 Internal Server Error\n\nServer got itself in trouble"
    assert comfy.submitted == 0
    comfy.fail_next("prompt", status=502, after=True)
    response = post_json(http, f"{comfy.url}/prompt", {"prompt": flux_graph(), "prompt_id": "lost"})
    assert response.status == 502 and response.data == b"502: Bad Gateway"
    comfy.wait_until(finished("lost"))  # the reply was lost, the prompt was not
    comfy.fail_next("history", status=503, body={"error": "busy"})
    response = http.request("GET", f"{comfy.url}/history/lost")
    assert response.status == 503 and json.loads(response.data) == {"error": "busy"}
    assert http.request("GET", f"{comfy.url}/history/lost").status == 200
    # A slow answer: held far longer than the client waits, so the timeout fires however
    # the client thread is scheduled.
    comfy.slow_next("system_stats", 300.0)
    with pytest.raises(urllib3.exceptions.TimeoutError):
        http.request("GET", f"{comfy.url}/system_stats", timeout=0.2)
    assert ("POST", "/prompt") in comfy.requests


def test_execution_error_shape(comfy: ComfyUIDouble, http: urllib3.PoolManager) -> None:
    comfy.execution_error(node_type="KSampler", message="boom", exception_type="RuntimeError")
    with open_ws(comfy, "err") as ws:
        pid = submit(http, comfy, flux_graph(), client_id="err")["prompt_id"]
        messages = recv_until_done(ws, pid)
    error = next(m["data"] for m in messages if m["type"] == "execution_error")
    assert set(error) == {
        "prompt_id",
        "node_id",
        "node_type",
        "executed",
        "exception_message",
        "exception_type",
        "traceback",
        "current_inputs",
        "current_outputs",
        "timestamp",
    }
    assert (error["node_id"], error["node_type"]) == ("8", "KSampler")
    assert error["exception_message"] == "boom\n" and error["exception_type"] == "RuntimeError"
    assert error["current_inputs"]["seed"] == [42]
    assert set(error["executed"]) == {"1", "2", "3", "4", "5", "6", "7"}
    assert isinstance(error["traceback"], list)
    assert "execution_success" not in [m["type"] for m in messages]
    entry = comfy.history(pid)
    assert entry["status"]["status_str"] == "error" and not entry["status"]["completed"]
    assert entry["status"]["messages"][-1][0] == "execution_error"
    assert entry["outputs"] == {} and comfy.executed == 0

    # OOM mid-sampling carries ComfyUI's tips text.
    comfy.execution_error(
        message="Allocation on device", exception_type="torch.OutOfMemoryError", after_steps=2
    )
    pid = submit(http, comfy, flux_graph(seed=2), client_id="nobody")["prompt_id"]
    comfy.wait_until(finished(pid))
    events = comfy.events_for(pid)
    assert [d["value"] for t, d in events if t == "progress"] == [1, 2]
    error = dict(events)["execution_error"]
    assert error["exception_message"].startswith(
        "Allocation on device\nThis error means you ran out"
    )


def test_ws_dropped_mid_run_history_completes(
    comfy: ComfyUIDouble, http: urllib3.PoolManager
) -> None:
    comfy.drop_ws_after_progress(2)
    with open_ws(comfy, "drop") as ws:
        pid = submit(http, comfy, flux_graph(steps=6), client_id="drop")["prompt_id"]
        got: list[dict[str, Any]] = []
        with pytest.raises(ConnectionClosed):
            while True:
                got.append(json.loads(ws.recv(timeout=RECV_TIMEOUT)))
    assert [m["data"]["value"] for m in got if m["type"] == "progress"] == [1, 2]
    comfy.wait_until(finished(pid))
    assert comfy.history(pid)["status"]["status_str"] == "success"
    # Later messages were dropped, not buffered: a reconnect gets a fresh status, then only
    # what comes next (buffered messages would arrive before the next prompt's, whatever the
    # machine's speed).
    with open_ws(comfy, "drop") as ws:
        marker = submit(http, comfy, flux_graph(seed=2), client_id="drop")["prompt_id"]
        after = recv_until_done(ws, marker)
    assert all(m["data"].get("prompt_id") in (None, marker) for m in after), after


def test_an_older_sockets_close_pops_the_newer_one(
    comfy: ComfyUIDouble, http: urllib3.PoolManager
) -> None:
    """server.py's websocket_handler ends with `sockets.pop(clientId)`, whichever socket holds
    the id by then: when an old connection closes after a reconnect under the same id (a
    half-open drop the server notices late), the new socket leaves the table and hears nothing
    more, though it stays open (issue #25, defect 2)."""
    old = open_ws(comfy, "same")
    new = open_ws(comfy, "same")
    old.close()
    comfy.wait_until(lambda c: "same" not in c.clients, timeout=60)
    pid = submit(http, comfy, flux_graph(steps=2), client_id="same")["prompt_id"]
    comfy.wait_until(finished(pid), timeout=60)
    # Delivered messages would be queued on the open socket before the next connection's
    # status: the first thing a fresh socket under another id sees proves the run is over.
    with open_ws(comfy, "marker") as marker:
        marker_pid = submit(http, comfy, flux_graph(seed=3), client_id="marker")["prompt_id"]
        recv_until_done(marker, marker_pid)
    with pytest.raises(TimeoutError):
        new.recv(timeout=0)
    new.close()


def test_hold_interrupt_queue_and_vram(comfy: ComfyUIDouble, http: urllib3.PoolManager) -> None:
    idle = get_json(http, f"{comfy.url}/system_stats")["devices"][0]
    comfy.hold_next()
    with open_ws(comfy, "held"):
        pid = submit(http, comfy, flux_graph(), client_id="held", prompt_id="p1")["prompt_id"]
        other = submit(http, comfy, flux_graph(seed=9), client_id="held")["prompt_id"]
        comfy.wait_until(lambda c: c.held == pid)
        queue = get_json(http, f"{comfy.url}/queue")
        assert [item[1] for item in queue["queue_running"]] == [pid]
        assert [item[1] for item in queue["queue_pending"]] == [other]
        assert queue["queue_running"][0][3] == {"client_id": "held"}
        busy = get_json(http, f"{comfy.url}/system_stats")["devices"][0]
        assert busy["vram_free"] < idle["vram_free"] and busy["vram_total"] == idle["vram_total"]

        # An interrupt naming another prompt is a no-op; naming the running one stops it.
        assert post_json(http, f"{comfy.url}/interrupt", {"prompt_id": other}).status == 200
        assert comfy.held == pid
        # Reconnecting with the same id replaces the socket; ComfyUI re-sends the current
        # node without a prompt_id.
        with open_ws(comfy, "held") as again:
            assert json.loads(again.recv(timeout=RECV_TIMEOUT)) == {
                "type": "executing",
                "data": {"node": "8"},
            }
            assert post_json(http, f"{comfy.url}/interrupt", {"prompt_id": pid}).status == 200
            messages = recv_until_done(again, pid)
    stop = next(m["data"] for m in messages if m["type"] == "execution_interrupted")
    assert (stop["prompt_id"], stop["node_id"], stop["node_type"]) == (pid, "8", "KSampler")
    assert set(stop) == {"prompt_id", "node_id", "node_type", "executed", "timestamp"}
    entry = comfy.history(pid)
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    comfy.wait_until(finished(other))
    assert comfy.history(other)["status"]["status_str"] == "success"
    assert get_json(http, f"{comfy.url}/queue") == {"queue_running": [], "queue_pending": []}


def test_hold_release_and_global_interrupt(comfy: ComfyUIDouble, http: urllib3.PoolManager) -> None:
    comfy.hold_next()
    pid = submit(http, comfy, flux_graph())["prompt_id"]
    comfy.wait_until(lambda c: c.held == pid)
    comfy.release()
    comfy.wait_until(finished(pid))
    assert comfy.history(pid)["status"]["status_str"] == "success"
    comfy.hold_next()
    pid = submit(http, comfy, flux_graph(seed=3))["prompt_id"]
    comfy.wait_until(lambda c: c.held == pid)
    assert http.request("POST", f"{comfy.url}/interrupt").status == 200  # no body: global
    comfy.wait_until(finished(pid))
    assert comfy.history(pid)["status"]["status_str"] == "error"
    # Without a client_id the interrupt is broadcast, the rest is not sent at all.
    assert [t for t, _ in comfy.events_for(pid) if t != "progress_state"] == [
        "execution_interrupted"
    ]


def test_view_path_checks(comfy: ComfyUIDouble, http: urllib3.PoolManager) -> None:
    pid = submit(http, comfy, flux_graph())["prompt_id"]
    comfy.wait_until(finished(pid))

    def status(**fields: str) -> int:
        return http.request("GET", f"{comfy.url}/view", fields=fields).status

    assert status(filename="test_00001_.png", subfolder="imagen", type="output") == 200
    assert status(filename="x/test_00001_.png", subfolder="imagen") == 200  # basename only
    assert status(filename="test_00001_.png [output]", subfolder="imagen") == 200
    assert status(filename="../secret.png") == 400
    assert status(filename="/etc/passwd") == 400
    assert status(filename="") == 400
    assert status(filename="x.png", type="models") == 400
    assert status(filename="passwd", subfolder="../../../../etc") == 403
    assert status(filename="nope.png") == 404
    assert status(subfolder="imagen") == 404


def test_system_stats_object_info_and_features(
    comfy: ComfyUIDouble, http: urllib3.PoolManager
) -> None:
    stats = get_json(http, f"{comfy.url}/system_stats")
    assert {
        "os",
        "ram_total",
        "ram_free",
        "comfyui_version",
        "python_version",
        "pytorch_version",
    } <= set(stats["system"])
    (device,) = stats["devices"]
    assert set(device) == {
        "name",
        "type",
        "index",
        "vram_total",
        "vram_free",
        "torch_vram_total",
        "torch_vram_free",
    }
    assert all(isinstance(device[k], int) for k in ("vram_total", "vram_free"))
    info = get_json(http, f"{comfy.url}/object_info")
    assert {"UNETLoader", "DualCLIPLoader", "VAELoader", "KSampler", "SaveImage"} <= set(info)
    assert info["SaveImage"]["output_node"] is True
    assert info["VAELoader"]["input"]["required"]["vae_name"][0] == [
        "ae.safetensors",
        "pixel_space",
    ]
    assert get_json(http, f"{comfy.url}/object_info/Nope") == {}
    assert get_json(http, f"{comfy.url}/api/prompt") == {"exec_info": {"queue_remaining": 0}}
    assert http.request("GET", f"{comfy.url}/models/unet").status == 404


def test_bearer_token(http: urllib3.PoolManager) -> None:
    with comfyui_double(token="s3cret") as comfy:
        assert http.request("GET", f"{comfy.url}/system_stats").status == 401
        auth = {"Authorization": "Bearer s3cret"}
        assert http.request("GET", f"{comfy.url}/system_stats", headers=auth).status == 200
        with pytest.raises(InvalidStatus) as refused:
            connect(f"ws://127.0.0.1:{comfy.port}/ws?clientId=a", open_timeout=60)
        assert refused.value.response.status_code == 401
        with open_ws(comfy, "a", additional_headers=auth) as ws:
            reply = post_json(
                http, f"{comfy.url}/prompt", {"prompt": flux_graph(), "client_id": "a"}, auth
            )
            assert reply.status == 200
            recv_until_done(ws, json.loads(reply.data)["prompt_id"])


def test_refused_connection_after_close(http: urllib3.PoolManager) -> None:
    comfy = comfyui_double()
    comfy.hold_next()
    pid = submit(http, comfy, flux_graph())["prompt_id"]
    ws = open_ws(comfy, "w")
    comfy.wait_until(lambda c: c.held == pid)
    comfy.close()  # quick even with a held run and an open websocket
    with pytest.raises(urllib3.exceptions.NewConnectionError):
        http.request("GET", f"{comfy.url}/queue")
    with pytest.raises(ConnectionClosed):
        while True:
            ws.recv(timeout=RECV_TIMEOUT)
    with pytest.raises(urllib3.exceptions.NewConnectionError):
        http.request("GET", f"http://127.0.0.1:{free_port()}/queue")


def test_standalone_prints_url_first(http: urllib3.PoolManager) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "imagen.testing.comfyui"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert json.loads(http.request("GET", f"{url}/queue").data) == {
            "queue_running": [],
            "queue_pending": [],
        }
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0


# -- the double held to a recorded real ComfyUI 0.3.64 session ---------------------------------

RECORDING = Path("/work/shared/reference/comfyui-real-0.3.64.json")


def recording() -> list[dict[str, Any]]:
    return json.loads(RECORDING.read_text())["exchanges"]


def recorded(kind: str) -> dict[str, Any]:
    return next(ex for ex in recording() if ex["kind"].startswith(kind))


def recorded_graph(prefix: str = "ignored") -> dict[str, Any]:
    """The recorded session's model-free graph (its body is elided in the recording; the node
    ids, classes and links are those its messages and /queue show)."""
    return {
        "1": {"class_type": "PrimitiveString", "inputs": {"value": "hello imagen"}},
        "2": {"class_type": "StringLength", "inputs": {"string": ["1", 0]}},
        "3": {
            "class_type": "EmptyImage",
            "inputs": {"width": 256, "height": 256, "batch_size": 16, "color": ["2", 0]},
        },
        "4": {
            "class_type": "ImageAddNoise",
            "inputs": {"image": ["3", 0], "seed": 1, "strength": 0.5},
        },
        "6": {
            "class_type": "ImageBlur",
            "inputs": {"image": ["4", 0], "blur_radius": 3, "sigma": 1.0},
        },
        "7": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["6", 0]}},
        "8": {
            "class_type": "ImageFromBatch",
            "inputs": {"image": ["6", 0], "batch_index": 0, "length": 1},
        },
        "5": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": prefix}},
    }


def _shape(value: Any) -> Any:
    """A JSON value's shape: key sets and element kinds, numbers as one kind."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value[:1]]
    if isinstance(value, bool) or value is None:
        return type(value).__name__
    return "number" if isinstance(value, int | float) else type(value).__name__


def _per_node(frames: list[Any], prompt: str) -> tuple[list[str], dict[str, list[str]]]:
    """The prompt's frames as a skeleton (kinds outside node groups) and, per node, the kinds
    of its contiguous group (a node's messages from its progress_state 'running' to
    'finished'). Node order may differ between servers (ComfyUI iterates a set of outputs)."""
    skeleton: list[str] = []
    groups: dict[str, list[str]] = {}
    current: str | None = None
    for frame in frames:
        if isinstance(frame, bytes):
            assert current is not None
            groups[current].append(
                f"binary:{int.from_bytes(frame[:4], 'big')}:{int.from_bytes(frame[4:8], 'big')}"
            )
            continue
        kind, data = frame["type"], frame["data"]
        if data.get("prompt_id") != prompt:
            continue
        if kind == "progress_state":
            states = {k: v["state"] for k, v in data["nodes"].items()}
            running = [k for k, v in states.items() if v == "running"]
            node = running[-1] if running else current
            if node not in groups:
                groups[node] = []  # type: ignore[index]
            current = node
            top = data["nodes"][node]["max"]
            groups[node].append(f"progress_state:{states[node]}:{'steps' if top > 1 else 'one'}")  # type: ignore[index]
            if states[node] == "finished":  # type: ignore[index]
                current = None
        elif kind in ("executing", "progress", "executed") and current is not None:
            groups[current].append(kind)
        else:
            skeleton.append(kind)
    return skeleton, groups


def _recorded_frames() -> list[Any]:
    frames: list[Any] = []
    for ex in recording():
        if ex["kind"].startswith("ws message"):
            frames.append(ex["message"])
        elif ex["kind"] == "ws binary frame":
            frames.append(
                ex["first_4_bytes_event_type"].to_bytes(4, "big")
                + ex["next_4_bytes"].to_bytes(4, "big")
            )
    return frames


def test_the_double_agrees_with_the_recorded_session(
    comfy: ComfyUIDouble, http: urllib3.PoolManager
) -> None:
    real_prompt = recorded("POST /prompt")["body"]["prompt_id"]
    client = str(uuid.uuid4())
    ws = open_ws(comfy, client)  # the first message is status with our sid (checked there)
    comfy.hold_next()
    ours = str(uuid.uuid4())
    queued_behind = str(uuid.uuid4())
    accepted = submit(http, comfy, recorded_graph(), client_id=client, prompt_id=ours)
    assert _shape(accepted) == _shape(recorded("POST /prompt")["body"])
    comfy.wait_until(lambda c: c.held == ours)
    second = submit(
        http, comfy, recorded_graph("second"), client_id=client, prompt_id=queued_behind
    )
    assert second["prompt_id"] == queued_behind
    # /queue: one running, one pending, items [number, prompt_id, graph, extra_data, outputs].
    queue = get_json(http, f"{comfy.url}/queue")
    real_queue = recorded("GET /queue (first running")["body"]
    assert [item[1] for item in queue["queue_running"]] == [ours]
    assert [item[1] for item in queue["queue_pending"]] == [queued_behind]
    for mine, real in zip(
        queue["queue_running"] + queue["queue_pending"],
        real_queue["queue_running"] + real_queue["queue_pending"],
        strict=True,
    ):
        assert len(mine) == len(real) == 5 and isinstance(mine[0], int | float)
        assert mine[3]["client_id"] == client and sorted(mine[4]) == sorted(real[4])
    # /interrupt naming a pending prompt does nothing; POST /queue {delete} removes it.
    reply = post_json(http, f"{comfy.url}/interrupt", {"prompt_id": queued_behind})
    assert (reply.status, reply.data) == (200, b"") and recorded("POST /interrupt")["body"] == ""
    assert [i[1] for i in get_json(http, f"{comfy.url}/queue")["queue_pending"]] == [queued_behind]
    reply = post_json(http, f"{comfy.url}/queue", {"delete": [queued_behind]})
    assert (reply.status, reply.data) == (200, b"") and recorded("POST /queue {delete")[
        "body"
    ] == ""
    after = get_json(http, f"{comfy.url}/queue")
    assert after["queue_pending"] == recorded("GET /queue after delete")["body"]["queue_pending"]
    comfy.release()
    frames: list[Any] = []
    while True:
        raw = ws.recv(timeout=RECV_TIMEOUT)
        frame = raw if isinstance(raw, bytes) else json.loads(raw)
        frames.append(frame)
        if not isinstance(frame, bytes) and frame["type"] == "execution_success":
            break
    ws.close()
    real_skeleton, real_groups = _per_node(_recorded_frames(), real_prompt)
    skeleton, groups = _per_node(frames, ours)
    assert skeleton == real_skeleton == ["execution_start", "execution_cached", "execution_success"]
    assert groups == real_groups
    # Each message type's payload has the recorded shape.
    real_by_kind = {f["type"]: f["data"] for f in _recorded_frames() if isinstance(f, dict)}
    for f in frames:
        if isinstance(f, dict) and f["type"] in real_by_kind and f["type"] != "progress_state":
            assert set(f["data"]) == set(real_by_kind[f["type"]]), f["type"]
    # /history: the finished entry's shape; a deleted and an unknown id both give {}.
    comfy.wait_until(finished(ours))
    entry = get_json(http, f"{comfy.url}/history/{ours}")[ours]
    real_entry = next(iter(recorded("GET /history/<prompt_id>")["body"].values()))
    assert set(entry) == set(real_entry)
    assert _shape(entry["outputs"]) == _shape(real_entry["outputs"])
    assert _shape(entry["status"]) == _shape(real_entry["status"])
    assert [m[0] for m in entry["status"]["messages"]] == [
        m[0] for m in real_entry["status"]["messages"]
    ]
    assert get_json(http, f"{comfy.url}/history/{queued_behind}") == {}
    assert get_json(http, f"{comfy.url}/history/{uuid.uuid4()}") == {}


def test_object_info_and_system_stats_have_the_recorded_shapes(http: urllib3.PoolManager) -> None:
    with comfyui_double(models={"unet": [], "clip": [], "vae": []}) as comfy:
        for loader in ("UNETLoader", "DualCLIPLoader", "VAELoader"):
            real = recorded(f"GET /object_info/{loader}")["body"][loader]
            mine = get_json(http, f"{comfy.url}/object_info/{loader}")[loader]
            assert set(real) <= set(mine)
            assert mine["input"]["required"].keys() == real["input"]["required"].keys()
            for name, spec in real["input"]["required"].items():
                if name.endswith("_name") or name.startswith("clip_name"):
                    assert mine["input"]["required"][name][0] == spec[0]  # the file list
        stats = get_json(http, f"{comfy.url}/system_stats")
        real_stats = recorded("GET /system_stats")["body"]
        assert set(stats["system"]) == set(real_stats["system"])
        assert set(stats["devices"][0]) == set(real_stats["devices"][0])


def test_the_flux_graph_without_models_gets_the_recorded_400(http: urllib3.PoolManager) -> None:
    from imagen.backends.comfyui import flux_schnell_graph

    real = recorded("POST /prompt with imagen's FLUX")
    with comfyui_double(models={"unet": [], "clip": [], "vae": []}) as comfy:
        graph = flux_schnell_graph(
            "x", {"width": 1024, "height": 1024, "seed": 1, "steps": 4}, {}, "p"
        )
        reply = post_json(http, f"{comfy.url}/prompt", {"prompt": graph})
        body = json.loads(reply.data)
    assert reply.status == real["status"] == 400
    assert body["error"]["type"] == real["body"]["error"]["type"]

    # ComfyUI checks a node's inputs in set order: compare each node's errors as a set.
    def by_node(errors: dict[str, Any]) -> dict[str, Any]:
        return {
            k: {**v, "errors": sorted(v["errors"], key=lambda e: e["details"])}
            for k, v in errors.items()
        }

    assert by_node(body["node_errors"]) == by_node(real["body"]["node_errors"])
