"""Issue 12: what is recorded is true, spend is only what was paid, and no input (or recorded
value) can poison the ledger. Through the real CLI against the doubles."""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from imagen.testing.comfyui import ComfyUIDouble
from imagen.testing.replicate import ReplicateDouble
from tests.support.cli import ROOT, Sandbox
from tests.support.doubles import SCHNELL, comfy_box, rep_box


def refused(box: Sandbox, *args: str, says: str) -> None:
    """Exit 2, one line naming the fix, and nothing recorded."""
    before = box.job_ids() if (box.root / "ledger.db").exists() else []
    result = box.run("generate", *args)
    assert result.returncode == 2, (args, result.stderr)
    assert says in result.stderr, (args, result.stderr)
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (box.root / "ledger.db").exists() or box.job_ids() == before


# -- 1. inputs checked against the backend's real range ---------------------------------------


def test_replicate_seed_range_is_cog_flux_s(tmp_path: Path, rep: ReplicateDouble) -> None:
    box = rep_box(tmp_path, rep)
    refused(box, "x", "--seed", str(2**63), says="--seed")
    refused(box, "x", "--seed", "0", says="1 to 4294967294")
    refused(box, "x", "--seed", "-1", says="--seed")
    refused(box, "x", "--seed", str(2**32 - 1), says="--seed")
    ok = box.run("generate", "x", "--seed", str(2**32 - 2), "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["seed"] == 2**32 - 2
    assert rep.billed == 1


def test_comfyui_seed_range_is_ksampler_s(tmp_path: Path, comfy: ComfyUIDouble) -> None:
    box = comfy_box(tmp_path, comfy)
    refused(box, "x", "--seed", str(2**64), says="0 to 18446744073709551615")
    refused(box, "x", "--seed", "-1", says="--seed")
    refused(box, "x", "--steps", "10001", says="1 to 10000")
    refused(box, "x", "--size", "8x8", says="--size")
    refused(box, "x", "--count", "0", says="--count")
    refused(box, "x", "--per-job", "0", says="--per-job")
    top = box.run("generate", "x", "--seed", str(2**64 - 1), "--size", "64x64", "--json")
    assert top.returncode == 0, top.stderr
    assert json.loads(top.stdout)["seed"] == 2**64 - 1
    for args in (["jobs"], ["usage"], ["usage", "--raw", "--json"], ["rebuild"], ["audit"]):
        result = box.run(*args)
        assert result.returncode == 0, (args, result.stderr)
    [row] = json.loads(box.run("usage", "--raw", "--json").stdout)
    assert row["seed"] == 2**64 - 1  # exact: an integer, as in every --json output


def test_prompt_and_option_values_the_ledger_cannot_hold_are_refused(
    tmp_path: Path, rep: ReplicateDouble
) -> None:
    box = rep_box(tmp_path, rep)
    from imagen.core.inputs import BadInput, check_prompt

    with pytest.raises(BadInput, match="NUL"):  # argv cannot carry one; `generate -` can
        check_prompt("a\x00b")
    refused(box, "x", "-o", "go_fast=NaN", says="finite")
    refused(box, "x", "-o", 'image="a\\u0000b"', says="NUL")


# -- 1. no recorded event can break a projection or a read command -----------------------------

HUGE = 10**60
ODD = "\u202e\U0001f98a\u0301" + "\x00nul" + "\ud7ff" * 3 + "ｆｕｌｌ" * 2000


def _hostile_jobs() -> dict[str, list[tuple[str, dict]]]:
    request = {
        "backend": ODD,
        "backend_type": "replicate",
        "model": ODD,
        "prompt": ODD,
        "params": {"seed": HUGE, "count": HUGE, "steps": -HUGE, "width": HUGE, "height": 1},
        "backend_config": {"base_url": "http://127.0.0.1:9", "api_token_env": "NOPE"},
        "output_path": "/nonexistent/" + "é" * 50 + ".png",
        "caller": ODD,
        "price_usd": 1e300,
        "future_key": {"nested": [HUGE, ODD]},
    }
    return {
        "a" * 16: [
            ("JobRequested", request),
            (
                "RunnerClaimed",
                {"pid": HUGE, "host": ODD, "lease_seconds": HUGE, "proc_start": ODD, "new": 1},
            ),
            ("RemoteJobAccepted", {"remote_id": ODD, "via": "create", "url": ODD}),
            (
                "ResponseReceived",
                {"request_id": "x", "purpose": "poll", "status": HUGE, "elapsed_ms": HUGE},
            ),
            ("RetryScheduled", {"purpose": "p", "attempt": HUGE, "delay_s": HUGE, "reason": ODD}),
            ("ProgressObserved", {"status": ODD, "step": HUGE, "total": HUGE}),
            (
                "ImageStored",
                {
                    "path": "/nonexistent/x.png",
                    "sha256": ODD,
                    "bytes": HUGE,
                    "format": ODD,
                    "width": HUGE,
                    "height": HUGE,
                    "index": HUGE,
                    "extra": ODD,
                },
            ),
            ("JobSucceeded", {"result": {"seed_used": HUGE, "odd": ODD}}),
        ],
        "b" * 16: [
            ("JobRequested", {**request, "price_usd": HUGE, "params": {"seed": -HUGE}}),
            ("RunnerClaimed", {"pid": -HUGE, "host": "h", "lease_seconds": 1e308}),
            ("RemoteJobAccepted", {"remote_id": "r"}),
            ("JobFailed", {"reason": ODD, "message": ODD, "category": ODD, "k": HUGE}),
        ],
        "c" * 16: [
            ("JobRequested", {**request, "backend_type": "no-such-type"}),
            ("RunnerClaimed", {"pid": 1, "host": ODD, "lease_seconds": 0}),
        ],
    }


def test_extreme_recorded_values_never_break_a_read_command(
    tmp_path: Path, ledger_url: str, pg_url: str
) -> None:
    from imagen.testing.postgrest import PostgrestDouble, ensure_supabase_roles, make_jwt
    from ledger import NewEvent, open_store

    secret = "honest-records-jwt-secret-with-32-characters-at-least"
    usage_db = pg_url
    ensure_supabase_roles(usage_db)
    migrate = Sandbox(tmp_path / "m")
    (tmp_path / "m").mkdir()
    migrate.write_config("")
    assert migrate.run("db", "upgrade", "usage", "--url", usage_db).returncode == 0

    store = open_store(ledger_url)
    postgres = ledger_url.startswith("postgresql")
    for job_id, events in _hostile_jobs().items():
        for version, (type_, data) in enumerate(events):
            if postgres:  # PostgreSQL text/jsonb cannot hold NUL: such values are unrecordable
                data = json.loads(json.dumps(data).replace("\\u0000", ""))
            store.append(job_id, [NewEvent(type_, data)], expected_version=version)
    store.close()

    with PostgrestDouble(usage_db, secret) as supa:
        box = Sandbox(
            tmp_path / "box",
            ledger_url=ledger_url,
            env={"SUPABASE_SERVICE_ROLE_KEY": make_jwt(secret, "service_role")},
        )
        (tmp_path / "box").mkdir()
        box.write_config(f'[usage]\nsupabase_url = "{supa.url}"\n')
        for args in (
            ["jobs"],
            ["jobs", "--json"],
            ["show", "a" * 8],
            ["show", "a" * 8, "--json"],
            ["show", "b" * 8],
            ["show", "c" * 8],
            ["usage"],
            ["usage", "--raw"],
            ["usage", "--json"],
            ["usage", "sync"],
            ["usage", "--source", "remote", "--json"],
            ["rebuild"],
            ["audit"],
            ["cancel", "c" * 8],
        ):
            result = box.run(*args)
            assert "Traceback" not in result.stderr, (args, result.stderr[-2000:])
            # audit may find problems (exit 4: the image files do not exist): it names them
            # (and so may rebuild: a sidecar it cannot write beside a missing image differs)
            allowed = {0, 4} if args[0] in ("audit", "rebuild") else {0}
            assert result.returncode in allowed, (args, result.returncode, result.stderr[-500:])
        usage = json.loads(box.run("usage", "--raw", "--json").stdout)
        assert {r["id"][:16] for r in usage} == {"a" * 16, "b" * 16}
        assert all(r["seed"] is None for r in usage)  # out of range: not stored, not sent
        assert box.types("c" * 16)[-1] == "JobCancelled"


# -- 2. -o keys that shadow a flag; inputs a backend cannot take --------------------------------


def test_options_that_shadow_a_flag_are_refused_with_the_flag(
    tmp_path: Path, rep: ReplicateDouble
) -> None:
    box = rep_box(tmp_path, rep)
    for key, flag in (
        ("num_outputs=4", "--per-job"),
        ("seed=5", "--seed"),
        ("num_inference_steps=2", "--steps"),
        ("output_format=jpg", "--format"),
        ("prompt=x", "PROMPT"),
        ("aspect_ratio=1:1", "--aspect"),
        ("megapixels=1", "--size"),
        ("width=512", "--size"),
    ):
        refused(box, "x", "-o", key, says=flag)
    refused(box, "x", "-o", "go_fast=3", says="go_fast")
    refused(box, "x", "-o", "output_quality=101", says="0 to 100")
    assert rep.billed == 0


def test_comfyui_builtin_graph_refuses_inputs_it_has_no_place_for(
    tmp_path: Path, comfy: ComfyUIDouble
) -> None:
    box = comfy_box(tmp_path, comfy)
    refused(box, "x", "-o", "guidance=3.5", says="built-in ComfyUI graph has no input")
    assert comfy.submitted == 0


def test_sidecar_reports_what_was_sent_not_what_was_meant() -> None:
    from datetime import UTC, datetime

    from imagen.core.events import ImageStored, JobRequested, JobSucceeded, RequestSent
    from imagen.core.job import Recorded, fold
    from imagen.projections.sidecar import sidecar

    at = datetime(2026, 11, 25, tzinfo=UTC)
    events = [
        JobRequested(
            "rep", "replicate", SCHNELL, "p", {"seed": 1, "steps": 4}, {}, "/x.png", price_usd=0.003
        ),
        RequestSent(
            "create-2",
            "create",
            "POST",
            "u",
            {},
            {"input": {"seed": 5, "num_inference_steps": 2, "output_quality": 90}},
        ),
        ImageStored("/x.png", "0" * 64, 1, "png", 1, 1),
        JobSucceeded({}),
    ]
    doc = sidecar(fold("j", [Recorded(e, i + 1, at) for i, e in enumerate(events)]))
    assert doc is not None
    assert doc["seed"] == 5 and doc["steps"] == 2 and doc["extra_inputs"] == {"output_quality": 90}


# -- 3. spend that never happened ---------------------------------------------------------------


def test_a_refused_create_costs_nothing(tmp_path: Path, rep: ReplicateDouble) -> None:
    box = rep_box(tmp_path, rep)
    rep.fail_next("create", status=402)
    result = box.run("generate", "x")
    assert result.returncode == 3
    [job] = json.loads(box.run("jobs", "--json").stdout)
    assert job["status"] == "failed" and job["cost_usd"] == "0.000000"
    assert "\t0.000000\t" in box.run("jobs").stdout  # piped: the exact amount
    assert json.loads(box.run("usage", "--json").stdout) == []
    assert rep.billed == 0


def test_paid_but_failed_is_counted_apart_from_images(tmp_path: Path, rep: ReplicateDouble) -> None:
    box = rep_box(tmp_path, rep)
    assert box.run("generate", "one").returncode == 0
    rep.behaviour(fail_with="CUDA out of memory")
    assert box.run("generate", "two").returncode == 1
    [group] = json.loads(box.run("usage", "--json").stdout)
    assert group["images"] == 1 and group["paid_failed"] == 1
    assert group["cost_usd"] == "0.006000"
    table = box.run("usage").stdout
    assert "paid_failed" in table and "0.006000" in table


# -- 4. imagen cancel -----------------------------------------------------------------------------


def test_cancel_stops_the_remote_prediction_and_ends_the_job(
    tmp_path: Path, rep: ReplicateDouble
) -> None:
    box = rep_box(tmp_path, rep, wait_s=1, timeout_s=600)
    rep.behaviour(never_finish=True)
    crashed = box.run("generate", "x", env={"IMAGEN_CRASH_AFTER": "RemoteJobAccepted"})
    assert crashed.returncode == -signal.SIGKILL
    job_id = box.only_job()
    assert "interrupted" in box.run("jobs").stdout
    result = box.run("cancel", job_id[:6], "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["status"] == "cancelled" and out["remote_cancelled"] is True
    [prediction] = rep.predictions.values()
    assert prediction["status"] == "canceled"
    types = box.types(job_id)
    assert types[-1] == "JobCancelled" and "CancelRequested" in types
    sent = [e.data["purpose"] for e in box.events(job_id) if e.type == "RequestSent"]
    assert sent[-1] == "cancel"  # imagen cancelled it (not the prediction's own deadline)
    assert "interrupted" not in box.run("jobs").stderr + box.run("jobs").stdout
    again = box.run("cancel", job_id)
    assert again.returncode == 0 and "already cancelled" in again.stderr


def test_cancel_ends_a_job_whose_backend_cannot_run_any_more(
    tmp_path: Path, rep: ReplicateDouble
) -> None:
    box = rep_box(tmp_path, rep, wait_s=1, timeout_s=600)
    rep.behaviour(never_finish=True)
    box.run("generate", "x", env={"IMAGEN_CRASH_AFTER": "RemoteJobAccepted"})
    job_id = box.only_job()
    box.write_config("")  # the backend is gone from the config, and so is its token
    result = box.run("cancel", job_id, env={"REPLICATE_API_TOKEN": ""})
    assert result.returncode == 0, result.stderr
    assert "not cancelled" in result.stderr and "REPLICATE_API_TOKEN" in result.stderr
    last = box.events(job_id)[-1]
    assert last.type == "JobCancelled" and last.data["remote_cancelled"] is False


# -- 6. no silent substitutions -----------------------------------------------------------------


def test_steps_zero_is_an_error_not_the_default(tmp_path: Path, comfy: ComfyUIDouble) -> None:
    refused(comfy_box(tmp_path, comfy), "x", "--steps", "0", says="--steps 0")


def test_a_mapped_size_is_reported_asked_beside_made(tmp_path: Path, rep: ReplicateDouble) -> None:
    box = rep_box(tmp_path, rep)
    result = box.run("generate", "x", "--size", "1000x300", "--json")
    assert result.returncode == 0, result.stderr
    assert "1000x300" in result.stderr and "768x320" in result.stderr
    out = json.loads(result.stdout)
    assert out["asked"] == {"size": "1000x300"} and (out["width"], out["height"]) == (768, 320)
    doc = json.loads(Path(f"{out['image']}.json").read_text())
    assert doc["asked"] == {"size": "1000x300"} and doc["size"] == "768x320"


def test_output_format_follows_the_extension(
    tmp_path: Path, rep: ReplicateDouble, comfy: ComfyUIDouble
) -> None:
    box = rep_box(tmp_path, rep)
    jpg = tmp_path / "fox.jpg"
    assert box.run("generate", "x", "--output", str(jpg)).returncode == 0
    with Image.open(jpg) as img:
        assert img.format == "JPEG"
    refused(box, "x", "--output", str(tmp_path / "a.gif"), says=".png, .jpg or .webp")
    refused(box, "x", "--output", str(tmp_path / "b.jpg"), "--format", "png", says="agree")
    (tmp_path / "c").mkdir()
    local = comfy_box(tmp_path / "c", comfy)
    refused(local, "x", "--output", str(tmp_path / "c.jpg"), says="png only")


def test_output_directory_means_the_default_name_inside_it(
    tmp_path: Path, comfy: ComfyUIDouble
) -> None:
    box = comfy_box(tmp_path, comfy)
    folder = tmp_path / "some" / "dir"
    result = box.run("generate", "a fox", "--size", "64x64", "--output", f"{folder}/")
    assert result.returncode == 0, result.stderr
    made = Path(result.stdout.strip())
    assert made.parent == folder and made.name.endswith(".png") and "a-fox" in made.name
    again = box.run("generate", "a cat", "--size", "64x64", "--output", str(folder))
    assert again.returncode == 0 and Path(again.stdout.strip()).parent == folder


# -- 7. durability reaches the store --------------------------------------------------------------


def test_durability_normal_reaches_the_sqlite_store(tmp_path: Path) -> None:
    box = Sandbox(tmp_path)
    probe = (
        "from imagen.cli import context; s = context.session().store(); "
        "print(s.query('PRAGMA synchronous')[0][0])"
    )
    for setting, expected in (
        ("", "2"),
        ('durability = "full"', "2"),
        ('durability = "normal"', "1"),
    ):
        box.write_config(f"[ledger]\n{setting}\n")
        done = subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            env=box.env,
            cwd=ROOT,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == expected, setting  # FULL = 2, NORMAL = 1


def test_sidecars_are_private_like_the_ledger(tmp_path: Path, comfy: ComfyUIDouble) -> None:
    box = comfy_box(tmp_path, comfy)
    image = box.run("generate", "a private prompt", "--size", "64x64").stdout.strip()
    assert stat.S_IMODE(Path(f"{image}.json").stat().st_mode) == 0o600
