"""`imagen generate` on Replicate, end to end through the CLI against the Replicate double.

Each test asserts the ledger's events, what the double billed, and that the token appears
nowhere in the ledger or the sidecar.
"""

from __future__ import annotations

import hashlib
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from imagen.testing.replicate import REPLICATE_VERSIONS, ReplicateDouble
from tests.support.cli import Sandbox

TOKEN = "r8_test_secret_token_0123456789"
SCHNELL = "black-forest-labs/flux-schnell"


@pytest.fixture
def rep() -> Iterator[ReplicateDouble]:
    with ReplicateDouble(token=TOKEN) as double:
        yield double


_BOXES: list[Sandbox] = []


@pytest.fixture(autouse=True)
def token_never_recorded() -> Iterator[None]:
    """After every test: the token is in no ledger event and no sidecar."""
    _BOXES.clear()
    yield
    for box in _BOXES:
        if (box.root / "ledger.db").exists():
            assert TOKEN not in box.ledger_text()
        for sidecar in box.root.rglob("*.json"):
            assert TOKEN not in sidecar.read_text()


def make_box(tmp_path: Path, rep: ReplicateDouble, **options: object) -> Sandbox:
    box = Sandbox(tmp_path, env={"REPLICATE_API_TOKEN": TOKEN})
    _BOXES.append(box)
    opts = {"model": SCHNELL, "base_url": rep.url, "poll_interval_s": 0.05, "retry_base_s": 0.01}
    box.write_backend("rep", "replicate", **{**opts, **options})
    return box


@pytest.fixture
def box(tmp_path: Path, rep: ReplicateDouble) -> Sandbox:
    return make_box(tmp_path, rep)


def only_job(box: Sandbox) -> str:
    return box.only_job()


def assert_clean(box: Sandbox, image: str | None = None) -> None:
    assert TOKEN not in box.ledger_text()
    if image:
        sidecar = Path(f"{image}.json").read_text()
        assert TOKEN not in sidecar
        data = json.loads(sidecar)
        assert data["image"]["sha256"] == hashlib.sha256(Path(image).read_bytes()).hexdigest()
    assert box.store().verify().ok


def test_happy_path_needs_no_polling(box: Sandbox, rep: ReplicateDouble) -> None:
    result = box.run("generate", "a red fox", "--seed", "42", "--aspect", "16:9", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    job_id = only_job(box)
    assert box.types(job_id) == [
        "JobRequested",
        "RunnerClaimed",
        "RequestSent",
        "ResponseReceived",
        "RemoteJobAccepted",
        "RequestSent",
        "ResponseReceived",
        "ImageStored",
        "JobSucceeded",
    ]
    assert rep.billed == 1
    assert [m for m, _ in rep.requests] == ["POST", "GET"]  # create (Prefer: wait) + download
    create = box.events(job_id)[2].data
    assert create["url"].endswith(f"/v1/models/{SCHNELL}/predictions")
    assert create["headers"]["Authorization"] == "[redacted]"
    assert create["headers"]["Prefer"] == "wait=60" and create["headers"]["Cancel-After"] == "60s"
    assert (
        create["body"]["input"]["seed"] == 42 and create["body"]["input"]["aspect_ratio"] == "16:9"
    )
    with Image.open(out["image"]) as img:
        assert img.size == (1344, 768) and img.format == "PNG"
    sidecar = json.loads(Path(f"{out['image']}.json").read_text())
    assert (
        sidecar["prediction_id"] == out["prediction_id"] and sidecar["cost_usd_estimate"] == 0.003
    )
    assert sidecar["seed"] == 42 and sidecar["model"] == SCHNELL
    assert_clean(box, out["image"])


def test_version_pinned_model_uses_the_predictions_endpoint(
    tmp_path: Path, rep: ReplicateDouble
) -> None:
    box = make_box(tmp_path, rep, model=f"{SCHNELL}:{REPLICATE_VERSIONS[SCHNELL]}")
    result = box.run("generate", "pinned", "--format", "webp")
    assert result.returncode == 0, result.stderr
    sent = box.events(only_job(box))[2].data
    assert (
        sent["url"].endswith("/v1/predictions")
        and sent["body"]["version"] == REPLICATE_VERSIONS[SCHNELL]
    )
    assert Path(result.stdout.strip()).read_bytes()[8:12] == b"WEBP"
    assert rep.billed == 1


def test_polling_path(tmp_path: Path, rep: ReplicateDouble) -> None:
    box = make_box(tmp_path, rep, wait_s=1)
    rep.behaviour(polls=2)
    result = box.run("generate", "slow fox")
    assert result.returncode == 0, result.stderr
    purposes = [e.data["purpose"] for e in box.events(only_job(box)) if e.type == "RequestSent"]
    assert purposes == ["create", "poll", "poll", "download"]
    assert rep.billed == 1
    assert_clean(box, result.stdout.strip())


def test_bad_token_names_the_variable(box: Sandbox, rep: ReplicateDouble) -> None:
    result = box.run("generate", "x", env={"REPLICATE_API_TOKEN": "r8_wrong_token_abcdef"})
    assert result.returncode == 3
    assert "REPLICATE_API_TOKEN" in result.stderr
    assert box.types(only_job(box))[-1] == "JobFailed"
    assert rep.billed == 0
    assert "r8_wrong_token_abcdef" not in box.ledger_text()


def test_429_three_times_then_success(box: Sandbox, rep: ReplicateDouble) -> None:
    rep.fail_next("create", status=429, times=3, retry_after=0)
    result = box.run("generate", "busy")
    assert result.returncode == 0, result.stderr
    retries = [e.data for e in box.events(only_job(box)) if e.type == "RetryScheduled"]
    assert [r["attempt"] for r in retries] == [1, 2, 3] and all(r["delay_s"] == 0 for r in retries)
    assert rep.billed == 1


def test_429_exhausted(box: Sandbox, rep: ReplicateDouble) -> None:
    rep.fail_next("create", status=429, times=4)
    result = box.run("generate", "busy")
    assert result.returncode == 3 and "rate-limiting" in result.stderr
    assert box.types(only_job(box)).count("RetryScheduled") == 3
    assert rep.billed == 0


def test_5xx_once_is_retried_twice_fails(box: Sandbox, rep: ReplicateDouble) -> None:
    rep.fail_next("create", status=502, html=True)
    assert box.run("generate", "once").returncode == 0
    assert rep.billed == 1
    rep.fail_next("create", status=503, times=2)
    result = box.run("generate", "twice")
    assert result.returncode == 3 and "HTTP 503 twice" in result.stderr
    assert rep.billed == 1


def test_failed_prediction_reports_replicates_error(box: Sandbox, rep: ReplicateDouble) -> None:
    rep.behaviour(fail_with="All generated images contained NSFW content.")
    result = box.run("generate", "x")
    assert result.returncode == 1
    assert "All generated images contained NSFW content." in result.stderr
    assert rep.billed == 1


def test_timeout_cancels_the_remote_prediction(tmp_path: Path, rep: ReplicateDouble) -> None:
    box = make_box(tmp_path, rep, timeout_s=1.5, wait_s=1)
    rep.behaviour(never_finish=True)
    result = box.run("generate", "forever")
    assert result.returncode == 1, result.stderr
    types = box.types(only_job(box))
    assert "CancelRequested" in types and types[-1] == "JobCancelled"
    last = box.events(only_job(box))[-1].data
    assert (last["reason"], last["remote_cancelled"]) == ("timeout", True)
    [prediction] = rep.predictions.values()
    assert prediction["status"] == "canceled"
    assert ("POST", f"/v1/predictions/{prediction['id']}/cancel") in rep.requests


def test_ctrl_c_cancels_the_remote_prediction(tmp_path: Path, rep: ReplicateDouble) -> None:
    box = make_box(tmp_path, rep, wait_s=1)
    rep.behaviour(never_finish=True)
    proc = box.popen("generate", "interrupt me")
    rep.wait_for_request(lambda r: r[0] == "GET" and "/v1/predictions/" in r[1], timeout=30)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert box.types(only_job(box))[-1] == "JobCancelled"
    [prediction] = rep.predictions.values()
    assert prediction["status"] == "canceled"
    assert rep.billed == 1


def test_truncated_download_is_retried_once(box: Sandbox, rep: ReplicateDouble) -> None:
    rep.truncate_next_download()
    result = box.run("generate", "x")
    assert result.returncode == 0, result.stderr
    retries = [e.data["purpose"] for e in box.events(only_job(box)) if e.type == "RetryScheduled"]
    assert retries == ["download"]
    assert_clean(box, result.stdout.strip())


def test_corrupt_download_fails_and_writes_nothing(
    box: Sandbox, rep: ReplicateDouble, tmp_path: Path
) -> None:
    rep.corrupt_next_download(times=2)
    result = box.run("generate", "x", "--output", str(tmp_path / "x.png"))
    assert result.returncode == 1
    assert "not an image" in result.stderr
    assert not (tmp_path / "x.png").exists()
    assert rep.billed == 1


def test_existing_output_is_refused_before_paying(
    box: Sandbox, rep: ReplicateDouble, tmp_path: Path
) -> None:
    (tmp_path / "keep.png").write_bytes(b"mine")
    result = box.run("generate", "x", "--output", str(tmp_path / "keep.png"))
    assert result.returncode == 2 and "already exists" in result.stderr
    assert rep.billed == 0 and box.job_ids() == []


def test_bad_input_is_refused_before_paying(box: Sandbox, rep: ReplicateDouble) -> None:
    for args in (["--steps", "9"], ["--aspect", "7:5"], ["--size", "10x10"]):
        result = box.run("generate", "x", *args)
        assert result.returncode == 2, (args, result.stderr)
    assert rep.billed == 0 and box.job_ids() == []


def test_invalid_input_from_replicate_names_the_fields(box: Sandbox, rep: ReplicateDouble) -> None:
    result = box.run("generate", "x", "-o", "guidance_scale=3")
    assert result.returncode == 2
    assert "guidance_scale" in result.stderr
    assert rep.billed == 0


# -- never paying twice -----------------------------------------------------------------------


def test_connection_lost_after_create_adopts_the_prediction(
    box: Sandbox, rep: ReplicateDouble
) -> None:
    rep.reset_after_create()
    result = box.run("generate", "lost answer")
    assert result.returncode == 0, result.stderr
    types = box.types(only_job(box))
    assert "LookupConcluded" in types
    accepted = [e.data for e in box.events(only_job(box)) if e.type == "RemoteJobAccepted"]
    assert accepted[0]["via"] == "lookup"
    assert rep.billed == 1


def test_killed_while_the_create_is_in_flight(box: Sandbox, rep: ReplicateDouble) -> None:
    """The window between the create leaving and its answer being recorded."""
    rep.slow_next("create", 30)
    proc = box.popen("generate", "killed mid-create")
    rep.wait_for_request(lambda r: r[0] == "POST", timeout=30)
    proc.kill()
    proc.communicate(timeout=30)
    job_id = only_job(box)
    assert box.types(job_id)[-1] == "RequestSent"
    result = box.run("resume", job_id)
    assert result.returncode == 0, result.stderr
    assert rep.billed == 1
    assert_clean(box, result.stdout.strip())


def test_resume_after_the_output_was_deleted_fails_and_still_counts(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    now = {"t": datetime(2026, 11, 24, 12, tzinfo=UTC)}
    with ReplicateDouble(token=TOKEN, clock=lambda: now["t"]) as rep:
        box = make_box(tmp_path, rep)
        crashed = box.run("generate", "late", env={"IMAGEN_CRASH_AFTER": "RemoteJobAccepted"})
        assert crashed.returncode == -signal.SIGKILL
        now["t"] += timedelta(hours=2)  # Replicate keeps API outputs for about an hour
        job_id = only_job(box)
        result = box.run("resume", job_id)
        assert result.returncode == 1
        assert "no longer" in result.stderr and "still paid for" in result.stderr
        assert box.events(job_id)[-1].data["reason"] == "output_deleted"
        assert rep.billed == 1
    [row] = json.loads(box.run("usage", "--raw", "--json").stdout)
    assert row["id"] == job_id and row["cost_usd_estimate"] == 0.003


def test_data_uri_output_is_accepted(box: Sandbox, rep: ReplicateDouble) -> None:
    rep.behaviour(output_as="data")
    result = box.run("generate", "inline", "--format", "jpg")
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).read_bytes()[:3] == b"\xff\xd8\xff"
    sent = [e.data["url"] for e in box.events(only_job(box)) if e.type == "RequestSent"]
    assert sent[-1].startswith("data:image/") and sent[-1].endswith("chars)")  # not the payload
    assert rep.billed == 1
