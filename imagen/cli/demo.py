"""`imagen demo`: a real generation through the ComfyUI adapter against the built-in simulator."""

from __future__ import annotations

import json
import tempfile
import tomllib
from pathlib import Path

from imagen.cli import context


def demo(
    prompt: str = "a lighthouse on a cliff at dusk, oil painting", /, *, steps: int = 4
) -> int:
    """Run a real generation against the built-in ComfyUI simulator.

    One image end to end with no GPU and no account: the ComfyUI adapter talks to imagen's
    built-in ComfyUI simulator over HTTP and websocket, in a temp dir with its own config and
    ledger (never yours). The image is synthetic: it comes from the simulator.

    Examples of use:
      imagen demo
      imagen demo "a red fox in the snow" --steps 8

    Parameters
    ----------
    prompt
        What to "draw".
    steps
        Sampler steps to simulate (the progress bar follows them).
    """
    from imagen.app.config import SAMPLE, parse_config
    from imagen.app.drive import drive
    from imagen.app.outcome import exit_code, failure_message
    from imagen.app.prepare import new_seed, prepare
    from imagen.app.sidecars import sidecar_path
    from imagen.core.inputs import GenerateInputs
    from imagen.projections.timeline import timeline
    from imagen.testing.comfyui import ComfyUIDouble
    from ledger import open_store

    env = context.session().env
    tmp = Path(tempfile.mkdtemp(prefix="imagen-demo-"))
    out = env.stdout
    with ComfyUIDouble(step_time=0.15) as comfy:
        raw = tomllib.loads(SAMPLE)
        raw["backends"]["flux-schnell-local"]["url"] = comfy.url
        raw["output"]["directory"] = str(tmp / "images")
        cfg = parse_config(raw, "demo", {})
        store = open_store(f"sqlite:///{tmp / 'ledger.db'}", clock=env.clock, identity=True)
        print(
            "imagen demo: the image comes from a ComfyUI simulator (imagen.testing.comfyui), "
            "not a real model.",
            file=out,
        )
        print(f"  simulator {comfy.url} · ledger {tmp / 'ledger.db'}", file=out)
        prepared = prepare(
            cfg,
            None,
            GenerateInputs(prompt, new_seed(), steps=steps),
            output=None,
            overwrite=False,
            env=env,
            caller="demo",
        )
        session = context.new_session(
            verbosity=context.session().verbosity, env=env, config=cfg, store=store
        )
        state = drive(session, store, prepared.job_id, request=prepared.request)
        sidecar = sidecar_path(state.image.path) if state.image else None
        code = exit_code(state)
        if code:
            context.err(f"imagen: error: {failure_message(state)}")
        else:
            print(f"\nimage   {state.image.path}", file=out)  # type: ignore[union-attr]
            print(f"sidecar {sidecar}", file=out)
            data = json.loads(Path(str(sidecar)).read_text())
            print(
                f"        seed {data['seed']} · {data['size']} · {data['steps']} steps · "
                f"{data['latency_ms']} ms · prompt_id {data['prediction_id']}",
                file=out,
            )
        print(f"\ntimeline of job {state.job_id}:", file=out)
        for row in timeline(state):
            print(f"  +{row['t']:7.3f}s  {row['text']}", file=out)
        print(f"\nverified {store.verify().checked} ledger events.", file=out)
        store.close()
    print(f"everything is in {tmp}", file=out)
    return int(code)
