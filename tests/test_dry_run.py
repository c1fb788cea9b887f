"""`imagen generate … --dry-run`: everything checked, the request and its price shown, the
caller's budget asked, and nothing recorded, reserved or sent."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from imagen.app import budgets
from imagen.testing.replicate import ReplicateDouble
from tests.support.doubles import TOKEN, rep_box


def _files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_dry_run_prices_and_shows_the_request_and_records_nothing(
    tmp_path: Path, rep: ReplicateDouble
) -> None:
    box = rep_box(tmp_path, rep)
    agent = {"MAI_FROM_ID": "agent-7"}

    # No ledger yet: the answer is given, and no ledger is created for it.
    plain = box.run("generate", "a red fox", "--seed", "7", "--dry-run", env=agent)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.startswith("dry run: nothing recorded, nothing sent")
    assert "caller   agent-7" in plain.stdout and "cost     $0.003000" in plain.stdout
    assert "budget   admits it" in plain.stdout
    assert '"prompt": "a red fox"' in plain.stdout and "Bearer [redacted]" in plain.stdout
    assert not (tmp_path / "ledger.db").exists() and not box.out.exists()

    # A budget smaller than the job: the dry run says it would be refused, exits 0, and the
    # ledger (the budget's only record) is unchanged to the byte.
    store = box.store()
    try:
        budgets.set_budget(store, "agent-7", "0.005", "total", None, "test")
    finally:
        store.close()
    before, events = _files(tmp_path), len(box.events())
    quoted = box.run(
        "generate",
        "a red fox",
        "--per-job",
        "2",
        "--dry-run",
        "--json",
        "--output",
        "out/",
        env=agent,
    )
    assert quoted.returncode == 0, quoted.stderr
    q = json.loads(quoted.stdout)
    assert q["dry_run"] is True and q["caller"] == "agent-7" and q["backend"] == "rep"
    assert (q["price_usd"], q["cost_usd"]) == ("0.003000", "0.006000")
    assert len(q["images"]) == 2 and q["image"] == q["images"][0]
    assert q["budget"]["admitted"] is False
    assert "over budget" in q["budget"]["message"] and "$0.005000" in q["budget"]["message"]
    req = q["request"]
    assert req["method"] == "POST" and req["url"].startswith(rep.url)
    assert req["body"]["input"]["num_outputs"] == 2
    assert req["headers"]["Authorization"] == "Bearer [redacted]"
    assert TOKEN not in quoted.stdout + quoted.stderr
    assert _files(tmp_path) == before and len(box.events()) == events
    assert rep.requests == [] and not rep.predictions  # nothing reached the backend

    # It prices one job: a batch is a bad input (exit 2), as every refusal before recording.
    batch = box.run("generate", "a red fox", "-n", "2", "--dry-run")
    assert batch.returncode == 2 and "--dry-run prices one job" in batch.stderr


def test_the_quote_of_a_comfyui_job_is_its_prompt_post(tmp_path: Path) -> None:
    """In-process (the use case the MCP `quote` tool calls): ComfyUI opens its progress stream
    before it posts the graph; the quote takes the stream as opened and shows the POST /prompt.
    No price is known for a local server: no cost, and no budget can refuse it."""
    from imagen.app import generate
    from imagen.app.quote import quote
    from imagen.app.session import Session
    from imagen.runner.environment import Environment
    from tests.support.cli import Sandbox

    box = Sandbox(tmp_path)
    box.write_backend("local", "comfyui", url="http://127.0.0.1:9")  # never contacted
    session = Session(Environment(env={**box.env, "MAI_FROM_ID": "agent-7"}))
    q = quote(session, generate.inputs("a lighthouse", seed=11, aspect="16:9"))
    assert (q["backend_type"], q["caller"], q["seed"]) == ("comfyui", "agent-7", 11)
    assert q["cost_usd"] is None and q["budget"] == {"admitted": True, "message": None}
    req = q["request"]
    assert (req["method"], req["url"]) == ("POST", "http://127.0.0.1:9/prompt")
    texts = [n["inputs"].get("text") for n in req["body"]["prompt"].values()]
    assert "a lighthouse" in texts
    assert not (tmp_path / "ledger.db").exists()
