"""The ComfyUI double held to the real 0.3.64 server where it used to differ (issue #25).

Each test names the ComfyUI source it follows (execution.py, comfy_execution/graph.py,
server.py, main.py). Real sockets: urllib3 for HTTP, the websockets sync client for /ws.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import urllib3
from websockets.sync.client import ClientConnection

from imagen.testing.comfyui import ComfyUIDouble
from tests.support.doubles import comfyui_double
from tests.test_comfyui_double import (
    RECV_TIMEOUT,
    finished,
    flux_graph,
    get_json,
    open_ws,
    post_json,
    recorded,
    recorded_graph,
    submit,
)


@pytest.fixture
def http() -> urllib3.PoolManager:
    return urllib3.PoolManager(timeout=urllib3.Timeout(total=60.0), retries=False)


def recv_until_done(ws: ClientConnection, prompt_id: str) -> list[dict[str, Any]]:
    """Text messages until `executing {node: null}` for this prompt; binary frames skipped."""
    got: list[dict[str, Any]] = []
    while True:
        raw = ws.recv(timeout=RECV_TIMEOUT)
        if isinstance(raw, bytes):
            continue
        msg = json.loads(raw)
        got.append(msg)
        data = msg["data"]
        if msg["type"] == "executing" and data.get("node") is None:
            if data.get("prompt_id") == prompt_id:
                return got


def executing(messages: list[dict[str, Any]], prompt_id: str) -> list[str]:
    return [
        m["data"]["node"]
        for m in messages
        if m["type"] == "executing"
        and m["data"].get("prompt_id") == prompt_id
        and m["data"]["node"] is not None
    ]


def test_nodes_run_in_execution_list_order(comfy: ComfyUIDouble, http: urllib3.PoolManager) -> None:
    # comfy_execution/graph.py ExecutionList.ux_friendly_pick_node: a ready output node first,
    # then a node feeding an output, then one two links from an output, else the first ready
    # in the order add_node met them. The recording shows SaveImageWebsocket (7) before
    # ImageFromBatch -> SaveImage (8, 5).
    real = [
        ex["message"]["data"]["node"]
        for ex in [e for e in json.loads(open_recording()).get("exchanges")]
        if ex["kind"] == "ws message" and ex["message"]["type"] == "executing"
    ]
    with open_ws(comfy, "order") as ws:
        pid = submit(http, comfy, recorded_graph(), client_id="order")["prompt_id"]
        got = executing(recv_until_done(ws, pid), pid)
        assert got == [n for n in real if n is not None] == ["1", "2", "3", "4", "6", "7", "8", "5"]
        # FLUX: the VAE loader first (two links from SaveImage), then add_node's order.
        pid = submit(http, comfy, flux_graph(), client_id="order")["prompt_id"]
        got = executing(recv_until_done(ws, pid), pid)
    assert got == ["3", "6", "2", "5", "4", "1", "7", "8", "9", "10"]


def open_recording() -> str:
    from tests.test_comfyui_double import RECORDING

    return RECORDING.read_text()


def test_an_interrupt_mid_node_lands_at_the_next_node_boundary(
    comfy: ComfyUIDouble, http: urllib3.PoolManager
) -> None:
    # execution.py: interrupts are only checked by before_node_execution (a node's start) and
    # by the progress hook (main.hijack_progress); a node at work finishes its work first.
    comfy.hold_in_node("ImageBlur")
    with open_ws(comfy, "stop") as ws:
        pid = submit(http, comfy, recorded_graph(), client_id="stop")["prompt_id"]
        comfy.wait_until(lambda c: c.held == pid)
        assert post_json(http, f"{comfy.url}/interrupt", {"prompt_id": pid}).status == 200
        # The node is still working: the prompt runs on and has no history yet.
        assert get_json(http, f"{comfy.url}/queue")["queue_running"][0][1] == pid
        assert get_json(http, f"{comfy.url}/history/{pid}") == {}
        comfy.release()
        messages = recv_until_done(ws, pid)
    stop = next(m["data"] for m in messages if m["type"] == "execution_interrupted")
    # ImageBlur (6) finished; SaveImageWebsocket (7) started and stopped at once.
    assert (stop["node_id"], stop["node_type"]) == ("7", "SaveImageWebsocket")
    assert sorted(stop["executed"]) == ["1", "2", "3", "4", "6"]
    assert executing(messages, pid)[-1] == "7"
    assert "progress" not in [m["type"] for m in messages]
    entry = comfy.history(pid)
    # No outputs of nodes that did not run (SaveImage 5 comes after 7).
    assert entry["status"]["status_str"] == "error" and entry["outputs"] == {}


def test_an_interrupt_during_the_last_node_does_not_stop_the_prompt(
    comfy: ComfyUIDouble, http: urllib3.PoolManager
) -> None:
    # With no node boundary or progress callback left, the flag is never looked at: the
    # prompt succeeds (and execute_async clears the flag before the next prompt).
    comfy.hold_in_node("SaveImage")
    pid = submit(http, comfy, recorded_graph(), client_id="x")["prompt_id"]
    comfy.wait_until(lambda c: c.held == pid)
    assert post_json(http, f"{comfy.url}/interrupt", {}).status == 200
    comfy.release()
    comfy.wait_until(finished(pid))
    entry = comfy.history(pid)
    assert entry["status"]["status_str"] == "success" and "5" in entry["outputs"]
    nxt = submit(http, comfy, recorded_graph("next"), client_id="x")["prompt_id"]
    comfy.wait_until(finished(nxt))
    assert comfy.history(nxt)["status"]["status_str"] == "success"


def test_node_time_is_configurable_per_class(http: urllib3.PoolManager) -> None:
    with comfyui_double(node_time=0.0) as comfy:
        comfy.node_times["ImageBlur"] = 0.0
        assert comfy.node_time == 0.0
        pid = submit(http, comfy, recorded_graph())["prompt_id"]
        comfy.wait_until(finished(pid))
        assert comfy.history(pid)["status"]["status_str"] == "success"


def test_a_runtime_error_a_graph_raises_has_the_real_body(
    comfy: ComfyUIDouble, http: urllib3.PoolManager
) -> None:
    # EmptyImage allocates width*height*batch*3 float32s; past the server's RAM torch raises
    # RuntimeError (DefaultCPUAllocator), reported by execution.py's except clause.
    graph = recorded_graph()
    graph["3"]["inputs"].update(width=16384, height=16384, batch_size=4096)
    with open_ws(comfy, "oom") as ws:
        pid = submit(http, comfy, graph, client_id="oom")["prompt_id"]
        messages = recv_until_done(ws, pid)
    error = next(m["data"] for m in messages if m["type"] == "execution_error")
    assert (error["node_id"], error["node_type"]) == ("3", "EmptyImage")
    assert error["exception_type"] == "RuntimeError"
    assert "DefaultCPUAllocator: can't allocate memory" in error["exception_message"]
    assert error["exception_message"].endswith("\n")
    assert all(isinstance(f, str) and f.startswith("  File ") for f in error["traceback"])
    assert len(error["traceback"]) >= 3
    assert error["current_inputs"]["width"] == [16384]
    assert error["current_inputs"]["color"] == [12]  # len("hello imagen") via StringLength
    assert sorted(error["executed"]) == ["1", "2"]
    # current_outputs: every node of the prompt (HierarchicalCache.all_node_ids, taken
    # before the run), not what ran.
    assert sorted(error["current_outputs"]) == sorted(graph)
    entry = comfy.history(pid)
    assert entry["status"]["messages"][-1][0] == "execution_error"


def test_execution_error_of_a_save_node_lists_its_hidden_inputs(
    comfy: ComfyUIDouble, http: urllib3.PoolManager
) -> None:
    # get_input_data adds a V1 node's hidden inputs (PROMPT, EXTRA_PNGINFO) to its inputs.
    graph = recorded_graph("../../outside")
    pid = submit(http, comfy, graph, client_id="c")["prompt_id"]
    comfy.wait_until(finished(pid))
    error = dict(comfy.events_for(pid))["execution_error"]
    assert error["node_type"] == "SaveImage"
    assert set(error["current_inputs"]) == {"images", "filename_prefix", "prompt", "extra_pnginfo"}
    assert error["current_inputs"]["extra_pnginfo"] == [None]


def test_cached_nodes_are_not_executed_and_a_cached_prompt_sends_progress_state(
    comfy: ComfyUIDouble, http: urllib3.PoolManager
) -> None:
    first = submit(http, comfy, flux_graph(seed=5))["prompt_id"]
    comfy.wait_until(finished(first))
    with open_ws(comfy, "again") as ws:
        again = submit(http, comfy, flux_graph(seed=5), client_id="again")["prompt_id"]
        messages = recv_until_done(ws, again)
    ours = [m for m in messages if m["data"].get("prompt_id") == again]
    kinds = [m["type"] for m in ours]
    # execute(): a cached output node sends `executed` with the cached UI, then
    # finish_progress sends progress_state with that node finished; upstream cached nodes
    # are never staged.
    assert kinds == [
        "execution_start",
        "execution_cached",
        "executed",
        "progress_state",
        "execution_success",
        "executing",
    ]
    state = ours[3]["data"]["nodes"]
    assert list(state) == ["10"] and state["10"]["state"] == "finished"
    assert state["10"]["value"] == state["10"]["max"] == 1.0


def test_save_image_websocket_is_never_cached(
    comfy: ComfyUIDouble, http: urllib3.PoolManager
) -> None:
    # Its IS_CHANGED returns time.time(): it runs (and sends its images) every time.
    first = submit(http, comfy, recorded_graph(), client_id="w")["prompt_id"]
    comfy.wait_until(finished(first))
    again = submit(http, comfy, recorded_graph(), client_id="w")["prompt_id"]
    comfy.wait_until(finished(again))
    events = comfy.events_for(again)
    cached = dict(events)["execution_cached"]["nodes"]
    assert "7" not in cached and sorted(cached) == ["1", "2", "3", "4", "5", "6", "8"]
    # Only 7 runs; the cached SaveImage (5) is staged as an output and sends `executed`.
    assert [d["node"] for t, d in events if t == "executing" and d["node"]] == ["7"]
    assert [d["node"] for t, d in events if t == "executed"] == ["5"]
    assert len([t for t, _ in events if t == "progress"]) == 16


def test_interrupted_lists_executed_without_cached_nodes(
    comfy: ComfyUIDouble, http: urllib3.PoolManager
) -> None:
    first = submit(http, comfy, flux_graph(seed=1))["prompt_id"]
    comfy.wait_until(finished(first))
    comfy.hold_next()
    pid = submit(http, comfy, flux_graph(seed=2), client_id="c")["prompt_id"]  # 8 re-runs
    comfy.wait_until(lambda c: c.held == pid)
    post_json(http, f"{comfy.url}/interrupt", {"prompt_id": pid})
    comfy.wait_until(finished(pid))
    stop = dict(comfy.events_for(pid))["execution_interrupted"]
    assert stop["node_id"] == "8" and stop["executed"] == []


@pytest.mark.parametrize(
    ("body", "status", "kind"),
    [
        ({"prompt": []}, 400, "prompt_no_outputs"),
        ({"prompt": ""}, 400, "prompt_no_outputs"),
        ({"prompt": {}}, 400, "prompt_no_outputs"),
        ([], 400, "no_prompt"),
        ({"prompt": None}, 500, None),
        ({"prompt": [1]}, 500, None),
    ],
)
def test_post_prompt_odd_bodies_as_server_py(
    comfy: ComfyUIDouble, http: urllib3.PoolManager, body: Any, status: int, kind: str | None
) -> None:
    reply = post_json(http, f"{comfy.url}/prompt", body)
    assert reply.status == status, reply.data
    if kind is not None:
        answer = json.loads(reply.data)
        assert answer["error"]["type"] == kind and answer["node_errors"] == {}
        if kind == "prompt_no_outputs":
            assert answer["error"] == {
                "type": "prompt_no_outputs",
                "message": "Prompt has no outputs",
                "details": "",
                "extra_info": {},
            }


def test_an_explicit_number_does_not_advance_the_counter(
    comfy: ComfyUIDouble, http: urllib3.PoolManager
) -> None:
    # server.py post_prompt: self.number += 1 only when the client gave no number.
    assert submit(http, comfy, recorded_graph("a"), number=100)["number"] == 100
    assert submit(http, comfy, recorded_graph("b"))["number"] == 0


def test_system_stats_of_a_cpu_server(http: urllib3.PoolManager) -> None:
    real = recorded("GET /system_stats")["body"]["devices"][0]
    with comfyui_double(device="cpu") as comfy:
        (device,) = get_json(http, f"{comfy.url}/system_stats")["devices"]
        system = get_json(http, f"{comfy.url}/system_stats")["system"]
    assert (device["name"], device["type"], device["index"]) == ("cpu", "cpu", None)
    assert (real["name"], real["type"], real["index"]) == ("cpu", "cpu", None)
    # On --cpu every memory figure is the machine's RAM.
    assert device["vram_total"] == device["torch_vram_total"] == system["ram_total"]
    assert device["vram_free"] == device["torch_vram_free"] == system["ram_free"]
    assert "--cpu" in system["argv"]


def test_validation_exceptions_carry_a_traceback(
    comfy: ComfyUIDouble, http: urllib3.PoolManager
) -> None:
    # A link to an output slot that does not exist raises IndexError inside validate_inputs
    # of node 4; its caller (node 6) reports exception_during_inner_validation on node 4,
    # with traceback.format_tb's frames.
    graph = recorded_graph()
    graph["4"]["inputs"]["image"] = ["3", 5]  # EmptyImage has one output
    reply = post_json(http, f"{comfy.url}/prompt", {"prompt": graph})
    assert reply.status == 400
    errors = json.loads(reply.data)["node_errors"]
    assert list(errors) == ["4"] and sorted(errors["4"]["dependent_outputs"]) == ["5", "7"]
    (error,) = errors["4"]["errors"]
    assert error["type"] == "exception_during_inner_validation"
    assert error["extra_info"]["exception_type"] == "IndexError"
    frames = error["extra_info"]["traceback"]
    assert frames and all(f.startswith("  File ") for f in frames)


def test_validation_errors_carry_the_inputs_tooltips(
    comfy: ComfyUIDouble, http: urllib3.PoolManager
) -> None:
    graph = flux_graph()
    graph["8"]["inputs"]["steps"] = 0
    reply = post_json(http, f"{comfy.url}/prompt", {"prompt": graph})
    (error,) = json.loads(reply.data)["node_errors"]["8"]["errors"]
    assert error["type"] == "value_smaller_than_min"
    config = error["extra_info"]["input_config"]
    assert config == [
        "INT",
        {
            "default": 20,
            "min": 1,
            "max": 10000,
            "tooltip": "The number of steps used in the denoising process.",
        },
    ]


def test_embeddings_and_extensions(comfy: ComfyUIDouble, http: urllib3.PoolManager) -> None:
    assert get_json(http, f"{comfy.url}/embeddings") == []
    assert get_json(http, f"{comfy.url}/api/embeddings") == []
    extensions = get_json(http, f"{comfy.url}/extensions")
    assert isinstance(extensions, list) and all(e.startswith("/") for e in extensions)


def test_object_info_keys_are_the_real_ones(http: urllib3.PoolManager) -> None:
    with comfyui_double(models={"unet": [], "clip": [], "vae": []}) as comfy:
        for loader in ("UNETLoader", "DualCLIPLoader", "VAELoader"):
            real = recorded(f"GET /object_info/{loader}")["body"][loader]
            mine = get_json(http, f"{comfy.url}/object_info/{loader}")[loader]
            assert set(mine) == set(real), loader
            assert mine == real, loader


def test_fresh_prompt_ids_are_uuids(comfy: ComfyUIDouble, http: urllib3.PoolManager) -> None:
    pid = submit(http, comfy, recorded_graph())["prompt_id"]
    uuid.UUID(pid)


def test_imagen_cancel_says_the_prompt_had_not_stopped_when_a_node_works_on(
    tmp_path: Any, comfy: ComfyUIDouble
) -> None:
    # A node busy past imagen's 5 s of /history checks (a CPU ImageBlur over a big batch):
    # the cancel says so rather than claiming a stop; the interrupt lands later.
    import signal

    from tests.test_comfyui import make_box

    box = make_box(tmp_path, comfy.url)
    comfy.hold_in_node("VAEDecode")
    proc = box.popen("generate", "busy node")
    comfy.wait_until(lambda c: c.held is not None, timeout=30)
    held = comfy.held
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    last = box.events(box.only_job())[-1].data
    assert last["remote_cancelled"] is False
    assert last["detail"] == (
        f"asked ComfyUI to interrupt prompt {held}; it had not stopped after 5 s: it may still finish"
    )
    comfy.release()
    comfy.wait_until(lambda c: c.history(held) is not None, timeout=30)
    stop = dict(comfy.events_for(held))["execution_interrupted"]
    assert stop["node_type"] == "SaveImage"  # the next node boundary
