"""ComfyUI: time from the double finishing a prompt to the image on disk, median over 20
generations, beside a baseline client that polls /history every 500 ms (as the seed does)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from imagen.testing.comfyui import ComfyUIDouble
from tests.benchmarks.report import line
from tests.benchmarks.sandbox import comfyui_env

ROOT = Path(__file__).resolve().parents[2]
RUNS = 20

BASELINE = r"""
import json, sys, time, uuid, urllib3
base, graph_file, out = sys.argv[1:4]
http = urllib3.PoolManager()
pid = str(uuid.uuid4())
graph = json.load(open(graph_file))
http.request("POST", f"{base}/prompt", body=json.dumps({"prompt": graph, "prompt_id": pid, "client_id": "baseline"}),
             headers={"Content-Type": "application/json"})
while True:
    time.sleep(0.5)
    h = json.loads(http.request("GET", f"{base}/history/{pid}").data)
    if pid in h:
        break
img = [i for n in h[pid]["outputs"].values() for i in n["images"]][0]
data = http.request("GET", f"{base}/view", fields={"filename": img["filename"], "subfolder": img["subfolder"], "type": "output"}).data
open(out, "wb").write(data)
print(pid)
"""


def _finished_at(comfy: ComfyUIDouble, prompt_id: str) -> float:
    entry = comfy.history(prompt_id)
    assert entry is not None
    [ts] = [
        d["timestamp"] for name, d in entry["status"]["messages"] if name == "execution_success"
    ]
    return ts / 1000


def run() -> None:
    from imagen.backends.comfyui import flux_schnell_graph

    with ComfyUIDouble() as comfy, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = comfyui_env(root, comfy.url)
        ours, base = [], []
        for i in range(RUNS):
            comfy.step_time = 0.05 + 0.1 * (i % 5) / 4  # spread completions over a poll interval
            r = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "imagen",
                    "generate",
                    f"bench {i}",
                    "--json",
                    "--size",
                    "512x512",
                ],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            out = json.loads(r.stdout)
            ours.append(
                Path(out["image"]).stat().st_mtime - _finished_at(comfy, out["prediction_id"])
            )
            graph = flux_schnell_graph(
                f"baseline {i}",
                {"width": 512, "height": 512, "seed": i, "steps": 4},
                {},
                f"baseline/{i}",
            )
            (root / "graph.json").write_text(json.dumps(graph))
            target = root / f"baseline{i}.png"
            r = subprocess.run(
                [sys.executable, "-c", BASELINE, comfy.url, str(root / "graph.json"), str(target)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            base.append(target.stat().st_mtime - _finished_at(comfy, r.stdout.strip()))
        line(
            "finish to image on disk, median of 20 (ms)",
            statistics.median(ours) * 1000,
            statistics.median(base) * 1000,
            "ms",
            higher_is_better=False,
            target="<= 30 ms and >= 8x better",
        )
