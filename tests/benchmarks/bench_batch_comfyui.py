"""ComfyUI batch: 20 images of 1 s of GPU work each (4 sampler steps of 0.25 s on the double).
GPU busy = the time prompts spent executing over the span from the first `execution_start` to
the last `execution_success`, both from ComfyUI's own /history timestamps (the double keeps
them as ComfyUI 0.3.64 does); and the batch's wall time, start-up included. Baselines in the
same run: 20 sequential `imagen generate` calls, and one serial client that submits a prompt,
polls /history every 500 ms as the seed did, downloads, then submits the next.
Issue 15's targets: GPU busy >= 95 %, wall <= 22 s."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from imagen.testing.comfyui import ComfyUIDouble
from tests.benchmarks.report import line
from tests.benchmarks.sandbox import comfyui_env, generate

IMAGES, STEPS, STEP_TIME = 20, 4, 0.25

SERIAL_POLLER = r"""
import json, sys, time, uuid, urllib3
base, graphs_file = sys.argv[1:3]
http = urllib3.PoolManager()
for n, graph in enumerate(json.load(open(graphs_file))):
    pid = str(uuid.uuid4())
    http.request("POST", f"{base}/prompt", body=json.dumps({"prompt": graph, "prompt_id": pid,
                 "client_id": "baseline"}), headers={"Content-Type": "application/json"})
    while True:
        time.sleep(0.5)
        h = json.loads(http.request("GET", f"{base}/history/{pid}").data)
        if pid in h:
            break
    img = [i for o in h[pid]["outputs"].values() for i in o["images"]][0]
    data = http.request("GET", f"{base}/view", fields={"filename": img["filename"],
                        "subfolder": img["subfolder"], "type": "output"}).data
    open(f"{graphs_file}.{n}.png", "wb").write(data)
    print(pid, flush=True)
"""


def _spans(comfy: ComfyUIDouble, prompt_ids: list[str]) -> list[tuple[float, float]]:
    spans = []
    for pid in prompt_ids:
        entry = comfy.history(pid)
        assert entry is not None and entry["status"]["status_str"] == "success", pid
        at = {name: d["timestamp"] for name, d in entry["status"]["messages"]}
        spans.append((at["execution_start"] / 1000, at["execution_success"] / 1000))
    return spans


def gpu_busy(comfy: ComfyUIDouble, prompt_ids: list[str]) -> tuple[float, float]:
    """(busy fraction, span in s) from the double's /history timestamps (ms)."""
    spans = _spans(comfy, prompt_ids)
    span = max(e for _, e in spans) - min(s for s, _ in spans)
    return sum(e - s for s, e in spans) / span, span


def run() -> None:
    from imagen.backends.comfyui import flux_schnell_graph

    with ComfyUIDouble(step_time=STEP_TIME) as comfy, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = comfyui_env(root, comfy.url)
        common = ["--steps", str(STEPS), "--size", "512x512"]
        began, ended = [0.0], [0.0]

        def imagen(*args: str) -> tuple[float, list[str]]:
            began[0] = time.time()
            elapsed, jobs = generate(env, *args, *common)
            ended[0] = time.time()
            return elapsed, [j["prediction_id"] for j in jobs]

        prompts = root / "prompts.txt"
        prompts.write_text("".join(f"a lighthouse at dusk, take {i}\n" for i in range(IMAGES)))
        batch_wall, batch_ids = imagen("--from", str(prompts))
        assert len(batch_ids) == IMAGES
        batch_busy, batch_span = gpu_busy(comfy, batch_ids)
        spans = _spans(comfy, batch_ids)
        head = min(s for s, _ in spans) - began[0]
        tail = ended[0] - max(e for _, e in spans)

        seq_wall, seq_ids = 0.0, []
        for i in range(IMAGES):
            elapsed, ids = imagen(f"a lighthouse at dawn, take {i}")
            seq_wall += elapsed
            seq_ids += ids
        seq_busy, _ = gpu_busy(comfy, seq_ids)

        graphs = [
            flux_schnell_graph(
                f"a lighthouse at noon, take {i}",
                {"width": 512, "height": 512, "seed": i + 1, "steps": STEPS},
                {},
                f"baseline/{i}",
            )
            for i in range(IMAGES)
        ]
        (root / "graphs.json").write_text(json.dumps(graphs))
        start = time.perf_counter()
        r = subprocess.run(
            [sys.executable, "-c", SERIAL_POLLER, comfy.url, str(root / "graphs.json")],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        poll_wall = time.perf_counter() - start
        poll_busy, _ = gpu_busy(comfy, r.stdout.split())

        print(
            f"{IMAGES} images x {STEPS} steps x {STEP_TIME} s on the ComfyUI double; "
            f"batch: span {batch_span:.2f} s, start to first execution_start {head:.2f} s, "
            f"last execution_success to exit {tail:.2f} s; wall beyond the GPU's work "
            f"{batch_wall - batch_span:.2f} s",
            flush=True,
        )
        for name, busy, wall in (
            ("20 sequential imagen generate", seq_busy, seq_wall),
            ("serial client polling /history every 500 ms", poll_busy, poll_wall),
        ):
            line(
                f"GPU busy (vs {name})",
                batch_busy * 100,
                busy * 100,
                "%",
                target=">= 95 %",
            )
            line(
                f"wall s (vs {name})",
                batch_wall,
                wall,
                "s",
                higher_is_better=False,
                target="<= 22 s",
            )
