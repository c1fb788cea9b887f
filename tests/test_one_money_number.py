"""One money number (issue 26): a job's cost is one figure, the same in `generate --json`,
`jobs`, `show`, `usage` (raw rows and totals), the sidecars and the gallery, whatever way the
job ended. Driven as a person would, through the CLI against the Replicate double."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from imagen.testing.replicate import ReplicateDouble
from tests.support.doubles import FAST, SCHNELL, rep_box

CALLER = "money-agent"


def _gallery_entries(box, out: Path) -> list[dict]:  # type: ignore[no-untyped-def]
    result = box.run("gallery", "--output", str(out), "--json")
    assert result.returncode == 0, result.stderr
    html = (out / "index.html").read_text()
    [data] = re.findall(r'<script type="application/json" id="data">(.*?)</script>', html, re.S)
    return json.loads(data)["entries"]


def test_every_surface_shows_the_same_cost_for_each_job(
    tmp_path: Path, rep: ReplicateDouble
) -> None:
    box = rep_box(tmp_path, rep)
    box.env["MAI_FROM_ID"] = CALLER
    generated: dict[str, dict] = {}

    def gen(prompt: str, *args: str) -> int:
        before = set(box.job_ids())
        result = box.run("generate", prompt, "--json", *args)
        [job] = set(box.job_ids()) - before
        if result.stdout.strip():
            generated[job] = json.loads(result.stdout)
        return result.returncode

    assert gen("succeeded") == 0
    assert gen("two images", "--per-job", "2") == 0
    rep.behaviour(fail_with="All generated images contained NSFW content.")
    assert gen("failed after billing") == 1
    # Cancelled after the create (the timeout cancels the prediction: Replicate bills what ran).
    rep.behaviour(never_finish=True)
    box.write_backend(
        "rep", "replicate", model=SCHNELL, base_url=rep.url, **FAST, timeout_s=1.5, wait_s=1
    )
    assert gen("cancelled after create") == 1
    rep.behaviour()
    box.write_backend("rep", "replicate", model=SCHNELL, base_url=rep.url, **FAST)
    rep.fail_next("create", status=402)
    assert gen("refused: no credit") == 3
    assert box.run("budget", "set", CALLER, "0.001", "--per", "day").returncode == 0
    assert gen("refused: over budget") == 9
    assert rep.billed == 4

    expected = {  # by prompt: what each job is counted as billed
        "succeeded": "0.003000",
        "two images": "0.006000",
        "failed after billing": "0.003000",
        "cancelled after create": "0.003000",
        "refused: no credit": "0.000000",
        "refused: over budget": "0.000000",
    }
    jobs = json.loads(box.run("jobs", "--json").stdout)
    assert sorted(j["prompt"] for j in jobs) == sorted(expected)
    by_id = {j["job_id"]: j for j in jobs}
    assert {j["prompt"]: j["cost_usd"] for j in jobs} == expected

    raw = json.loads(box.run("usage", "--raw", "--json").stdout)
    per_job: dict[str, Decimal] = {}
    for r in raw:
        jid = r["id"].split(":")[0]
        per_job[jid] = per_job.get(jid, Decimal(0)) + Decimal(r["cost_usd"])
    entries = _gallery_entries(box, tmp_path / "site")

    for jid, job in by_id.items():
        cost = job["cost_usd"]
        where = f"{job['prompt']}: "
        show = json.loads(box.run("show", jid, "--json").stdout)
        assert show["cost_usd"] == cost, where + "show"
        if jid in generated:
            assert generated[jid]["cost_usd"] == cost, where + "generate --json"
        assert f"{per_job.get(jid, Decimal(0)):.6f}" == cost, where + "usage --raw"
        mine = [e for e in entries if e["job_id"] == jid]
        assert mine and all(e["cost_usd"] == cost for e in mine), where + "gallery"
        for path in generated.get(jid, {}).get("images", []):
            side = json.loads(Path(f"{path}.json").read_text())
            assert side["cost_usd"] == cost, where + "sidecar"
            assert "cost_usd_estimate" not in side
        assert "cost_usd_estimate" not in generated.get(jid, {})

    total = sum((Decimal(j["cost_usd"]) for j in jobs), Decimal(0))
    grouped = json.loads(box.run("usage", "--json").stdout)
    assert sum(Decimal(g["cost_usd"]) for g in grouped) == total == Decimal("0.015")
    assert sum(g["paid_failed"] for g in grouped) == 2  # the failed and the cancelled prediction
    [row] = json.loads(box.run("budget", "list", "--json").stdout)
    assert row["spent"] == "0.015000"  # budgets count the same figure


# -- the jobs table's incremental fold and the job's folded state give the same figure ---------

_STEPS = st.lists(st.sampled_from(["accept", "image", "succeed", "fail", "cancel"]), max_size=8)


@settings(max_examples=300, deadline=None)
@given(
    price=st.sampled_from([None, 0, 0.003, 0.025, 1e300]),
    count=st.integers(1, 4),
    steps=_STEPS,
)
def test_the_jobs_table_and_the_job_state_agree_and_usage_rows_sum_to_it(
    price: object, count: int, steps: list[str]
) -> None:
    from datetime import UTC, datetime

    from imagen.core.events import (
        ImageStored,
        JobCancelled,
        JobFailed,
        JobRequested,
        JobSucceeded,
        RemoteJobAccepted,
    )
    from imagen.core.job import Recorded, fold
    from imagen.projections.cost import cost_usd, micros_text
    from imagen.projections.jobs.fold import apply
    from imagen.projections.usage.fold import usage_rows

    events: list = [
        JobRequested(
            "rep", "replicate", SCHNELL, "p", {"count": count}, {}, "/x.png", price_usd=price
        )
    ]
    stored = 0
    for step in steps:
        if step == "accept":
            events.append(RemoteJobAccepted("pid"))
        elif step == "image" and stored < count:
            events.append(ImageStored(f"/x-{stored}.png", "0" * 64, 1, "png", 1, 1, index=stored))
            stored += 1
        elif step == "succeed":
            events.append(JobSucceeded({}))
        elif step == "fail":
            events.append(JobFailed("prediction_failed", "boom", "server_error"))
        elif step == "cancel":
            events.append(JobCancelled("user"))
    at = datetime(2026, 11, 25, tzinfo=UTC)
    state = fold("j", [Recorded(e, i + 1, at) for i, e in enumerate(events)])
    row = None
    for i, e in enumerate(events):
        row = apply(row, "j", e.type_name(), e.to_data(), "2026-11-25T00:00:00Z", i + 1)
    assert row is not None and row["cost_usd"] == cost_usd(state)
    if state.terminal is not None and cost_usd(state) is not None:
        rows = usage_rows(state)
        assert micros_text(sum(r["cost_micros"] or 0 for r in rows)) == cost_usd(state)
