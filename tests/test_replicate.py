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
from tests.support.doubles import TOKEN, TOKEN_ENV, replicate_double

SCHNELL = "black-forest-labs/flux-schnell"


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
    box = Sandbox(tmp_path, env=dict(TOKEN_ENV))
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
    assert sidecar["prediction_id"] == out["prediction_id"] and sidecar["cost_usd"] == "0.003000"
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


def test_5xx_create_is_looked_up_and_bounded(box: Sandbox, rep: ReplicateDouble) -> None:
    """A 5xx may come from a gateway after the API created the prediction: look it up before
    creating again, and stop after MAX_UNCERTAIN_CREATES attempts when none was made."""
    rep.fail_next("create", status=502, html=True)
    assert box.run("generate", "once").returncode == 0
    assert rep.billed == 1
    rep.fail_next("create", status=503, times=3)
    result = box.run("generate", "thrice")
    assert result.returncode == 3
    assert "HTTP 503" in result.stderr and "nothing was paid" in result.stderr
    assert rep.billed == 1
    job = [
        j
        for j in box.job_ids()
        if "LookupConcluded" in box.types(j) and box.types(j)[-1] == "JobFailed"
    ]
    sent = [e.data["purpose"] for e in box.events(job[0]) if e.type == "RequestSent"]
    assert sent == ["create", "lookup"] * 3


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


def test_a_second_ctrl_c_names_the_job_and_how_to_finish_it(
    tmp_path: Path, rep: ReplicateDouble
) -> None:
    box = make_box(tmp_path, rep, wait_s=1)
    rep.behaviour(never_finish=True)
    release = rep.hold_next("cancel")  # the first Ctrl-C's cancel is in flight at the second
    proc = box.popen("generate", "interrupt me twice")
    try:
        rep.wait_for_request(lambda r: r[0] == "GET" and "/v1/predictions/" in r[1], timeout=30)
        proc.send_signal(signal.SIGINT)
        rep.wait_for_request(lambda r: r[1].endswith("/cancel"), timeout=30)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        release.set()
    job_id = only_job(box)
    assert proc.returncode == 130, err
    assert err.splitlines()[-1] == (
        f"imagen: interrupted; job {job_id} is left unfinished: "
        f"finish it with `imagen resume {job_id}`"
    )


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


def test_invalid_input_from_replicate_names_the_fields(
    tmp_path: Path, rep: ReplicateDouble
) -> None:
    # An input imagen cannot check (a model whose schema it does not carry) goes to Replicate;
    # its 422 is a recorded, unpaid failure with its own exit code (2 promises nothing recorded).
    box = make_box(tmp_path, rep, model="black-forest-labs/flux-1.1-pro")
    result = box.run("generate", "x", "-o", "safety_tolerance=9")
    assert result.returncode == 8, result.stderr
    assert "safety_tolerance" in result.stderr
    assert rep.billed == 0
    assert box.types(only_job(box))[-1] == "JobFailed"


def test_an_input_imagen_can_check_is_refused_before_anything_is_recorded(
    box: Sandbox, rep: ReplicateDouble
) -> None:
    result = box.run("generate", "x", "-o", "guidance_scale=3")
    assert result.returncode == 2 and "guidance_scale" in result.stderr
    assert rep.billed == 0 and box.job_ids() == []


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
    with replicate_double(clock=lambda: now["t"]) as rep:
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
    assert row["id"] == job_id and row["cost_usd"] == "0.003000"
    assert row["outcome"] == "paid_failed"


def test_data_uri_output_is_accepted(box: Sandbox, rep: ReplicateDouble) -> None:
    rep.behaviour(output_as="data")
    result = box.run("generate", "inline", "--format", "jpg")
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).read_bytes()[:3] == b"\xff\xd8\xff"
    sent = [e.data["url"] for e in box.events(only_job(box)) if e.type == "RequestSent"]
    assert sent[-1].startswith("data:image/") and sent[-1].endswith("chars)")  # not the payload
    assert rep.billed == 1


# -- issue 18: a paid image is never lost, the token stays home, nothing is paid twice ----------


def test_late_resume_downloads_a_prediction_that_succeeded(tmp_path: Path) -> None:
    """Killed while the prediction ran; resumed after the job's timeout, when it had already
    succeeded: the resume polls first and downloads, it never cancels finished work."""
    from datetime import UTC, datetime, timedelta

    now = {"t": datetime.now(UTC)}
    with replicate_double(clock=lambda: now["t"]) as rep:
        box = make_box(tmp_path, rep, timeout_s=1, wait_s=1)
        rep.behaviour(duration=3)
        crashed = box.run("generate", "late", env={"IMAGEN_CRASH_AFTER": "RemoteJobAccepted"})
        assert crashed.returncode == -signal.SIGKILL
        now["t"] += timedelta(seconds=10)  # finished on Replicate's side; our deadline passed
        job_id = only_job(box)
        result = box.run("resume", job_id)
        assert result.returncode == 0, result.stderr
        assert box.types(job_id)[-1] == "JobSucceeded" and "CancelRequested" not in box.types(
            job_id
        )
        assert rep.billed == 1 and not any(m == "POST" and "/cancel" in t for m, t in rep.requests)
        assert_clean(box, result.stdout.strip())


def test_token_is_never_sent_to_another_host(box: Sandbox, rep: ReplicateDouble) -> None:
    """An output URL that starts with the API's base but names another host after `@`: the
    image is fetched without the token (it is not the API's origin)."""
    rep.behaviour(output_url="{base}@localhost:{port}/files/{id}/{name}")
    result = box.run("generate", "userinfo trick")
    sent_to_other = [r for r in rep.received if r.host.startswith("localhost") and r.authorization]
    assert sent_to_other == []
    assert not any(r.authorization for r in rep.received if r.target.startswith("/files/")), (
        rep.received
    )
    assert rep.billed == 1
    assert result.returncode != 0 or Path(result.stdout.strip()).exists()


def test_hostile_next_link_with_small_pages(tmp_path: Path) -> None:
    with replicate_double(page_size=1) as rep:
        box = make_box(tmp_path, rep)
        assert box.run("generate", "first", "--seed", "1").returncode == 0
        assert box.run("generate", "second", "--seed", "3").returncode == 0
        rep.reset_after_create()
        rep.hostile_next(f"http://localhost:{rep.url.rsplit(':', 1)[1]}/v1/predictions?cursor=x")
        rep.behaviour(output_as="url")
        # The new prediction is newest: page 1 holds it, so make it not match by killing the
        # create before it leaves (crash after RequestSent), then the listing's first page
        # holds only the earlier job's prediction and links onward to another origin.
        crashed = box.run(
            "generate", "second", "--seed", "2", env={"IMAGEN_CRASH_AFTER": "RequestSent"}
        )
        assert crashed.returncode == -signal.SIGKILL
        job = [j for j in box.job_ids() if box.types(j)[-1] == "RequestSent"][0]
        result = box.run("resume", job)
        assert result.returncode == 5, result.stderr
        assert "another origin" in result.stderr
        assert not any(r.host.startswith("localhost") for r in rep.received)
        assert [e.data["decision"] for e in box.events(job) if e.type == "LookupConcluded"] == [
            "refused"
        ]
        assert rep.billed == 2


def test_creates_whose_outcome_is_unknown_are_bounded(box: Sandbox, rep: ReplicateDouble) -> None:
    rep.reset_next("create", times=100)
    result = box.run("generate", "hostile server")
    assert result.returncode == 3, result.stderr
    job_id = only_job(box)
    creates = [
        e for e in box.events(job_id) if e.type == "RequestSent" and e.data["purpose"] == "create"
    ]
    assert len(creates) == 3 and "nothing was paid" in result.stderr
    assert len(box.events(job_id)) < 40
    assert sum(1 for m, t in rep.requests if m == "POST") == 3


def test_resumes_do_not_reset_the_create_budget(box: Sandbox, rep: ReplicateDouble) -> None:
    rep.reset_next("create", times=100)
    rep.fail_next("list", status=503, times=100)  # and the lookups fail: resumable each time
    first = box.run("generate", "hostile server")
    assert first.returncode == 5, first.stderr
    job_id = only_job(box)
    for _ in range(4):
        box.run("resume", job_id)
    assert sum(1 for m, _ in rep.requests if m == "POST") <= 3
    assert rep.billed == 0


def test_clock_skew_does_not_pay_twice(tmp_path: Path) -> None:
    """Replicate's clock is 400 s behind ours; the create's answer is lost: the lookup still
    finds the prediction (its window is measured on Replicate's clock)."""
    from datetime import UTC, datetime, timedelta

    with replicate_double(clock=lambda: datetime.now(UTC) - timedelta(seconds=400)) as rep:
        box = make_box(tmp_path, rep)
        rep.reset_after_create()
        result = box.run("generate", "skewed")
        assert result.returncode == 0, result.stderr
        accepted = [e.data for e in box.events(only_job(box)) if e.type == "RemoteJobAccepted"]
        assert accepted[0]["via"] == "lookup"
        assert rep.billed == 1


def test_resume_never_adopts_another_jobs_prediction(tmp_path: Path, rep: ReplicateDouble) -> None:
    box = make_box(tmp_path, rep)
    first = box.run("generate", "same", "--seed", "5", "--output", str(tmp_path / "a.png"))
    assert first.returncode == 0, first.stderr
    crashed = box.run(
        "generate",
        "same",
        "--seed",
        "5",
        "--output",
        str(tmp_path / "b.png"),
        env={"IMAGEN_CRASH_AFTER": "RequestSent"},
    )
    assert crashed.returncode == -signal.SIGKILL and rep.billed == 1
    second = [j for j in box.job_ids() if box.types(j)[-1] == "RequestSent"][0]
    result = box.run("resume", second)
    assert result.returncode == 0, result.stderr
    assert rep.billed == 2
    ids = {
        e.data["remote_id"]
        for j in box.job_ids()
        for e in box.events(j)
        if e.type == "RemoteJobAccepted"
    }
    assert len(ids) == 2  # one prediction, one job
    held = [e.data for e in box.events(second) if e.type == "RemoteIdsHeld"]
    assert held and list(held[0]["held"].values()) != [second]


def test_polls_failing_do_not_abandon_a_running_prediction(
    tmp_path: Path, rep: ReplicateDouble
) -> None:
    box = make_box(tmp_path, rep, wait_s=1)
    rep.behaviour(polls=3)
    rep.fail_next("get", status=503, times=2)
    rep.reset_next("get", times=2)
    result = box.run("generate", "flaky polls")
    assert result.returncode == 0, result.stderr
    assert rep.billed == 1
    assert_clean(box, result.stdout.strip())


def test_poll_failures_past_the_deadline_leave_the_job_resumable(
    tmp_path: Path, rep: ReplicateDouble
) -> None:
    box = make_box(tmp_path, rep, wait_s=1, timeout_s=8)
    rep.behaviour(duration=2)  # it finishes on Replicate while imagen cannot see it
    rep.fail_next("get", status=503, times=50)
    result = box.run("generate", "replicate down")
    assert result.returncode == 3, result.stderr
    assert "imagen resume" in result.stderr
    job_id = only_job(box)
    assert not {"JobFailed", "JobCancelled"} & set(box.types(job_id))
    rep.clear_faults()  # Replicate is back
    resumed = box.run("resume", job_id)
    assert resumed.returncode == 0, resumed.stderr
    assert rep.billed == 1


def test_same_output_twice_pays_once(box: Sandbox, rep: ReplicateDouble, tmp_path: Path) -> None:
    out = str(tmp_path / "same.png")
    crashed = box.run(
        "generate", "one", "--output", out, env={"IMAGEN_CRASH_AFTER": "RemoteJobAccepted"}
    )
    assert crashed.returncode == -signal.SIGKILL and rep.billed == 1
    second = box.run("generate", "two", "--output", out)
    assert second.returncode == 2 and "already exists" in second.stderr
    assert rep.billed == 1
    result = box.run("resume", only_job(box))
    assert result.returncode == 0, result.stderr
    assert Path(out).stat().st_size > 0
    assert_clean(box, out)


@pytest.mark.parametrize(
    "case", ["parent_is_file", "name_too_long", "max_image_mb", "timeout", "wait"]
)
def test_local_problems_are_refused_before_paying(
    tmp_path: Path, rep: ReplicateDouble, case: str
) -> None:
    options: dict[str, object] = {}
    out = tmp_path / "x.png"
    if case == "parent_is_file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "x.png"
    elif case == "name_too_long":
        out = tmp_path / ("n" * 250 + ".png")
    elif case == "max_image_mb":
        options["max_image_mb"] = -1
    elif case == "timeout":
        options["timeout_s"] = 0
    else:
        options["wait_s"] = 61
    box = make_box(tmp_path, rep, **options)
    result = box.run("generate", "x", "--output", str(out))
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert rep.billed == 0 and box.job_ids() == []


def test_a_local_failure_after_payment_keeps_the_job_resumable(
    box: Sandbox, rep: ReplicateDouble, tmp_path: Path
) -> None:
    out = tmp_path / "sub" / "x.png"
    crashed = box.run(
        "generate", "x", "--output", str(out), env={"IMAGEN_CRASH_AFTER": "RemoteJobAccepted"}
    )
    assert crashed.returncode == -signal.SIGKILL
    (out.parent / "x.png").unlink(missing_ok=True)  # the name reserved before paying
    out.parent.rmdir()
    out.parent.write_text("a file where the directory was")  # writing now fails: ENOTDIR
    job_id = only_job(box)
    failed = box.run("resume", job_id)
    assert failed.returncode == 5, failed.stderr
    assert f"imagen resume {job_id}" in failed.stderr and "paid" in failed.stderr
    assert not {"JobFailed", "JobCancelled"} & set(box.types(job_id))
    out.parent.unlink()
    out.parent.mkdir()
    result = box.run("resume", job_id)
    assert result.returncode == 0, result.stderr
    assert rep.billed == 1
    assert_clean(box, str(out))


def test_ctrl_c_during_the_download_of_a_finished_prediction(
    box: Sandbox, rep: ReplicateDouble
) -> None:
    """A finished prediction is paid and cannot be cancelled: Ctrl-C during its download does
    not say "cancelled"; the image is fetched and kept, and its cost counts."""
    rep.slow_next("file", 30)
    proc = box.popen("generate", "almost there")
    rep.wait_for_request(lambda r: r[1].startswith("/files/"), timeout=30)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    job_id = only_job(box)
    assert "cancel" not in err
    assert box.types(job_id)[-1] == "JobSucceeded" and "JobCancelled" not in box.types(job_id)
    assert not any(m == "POST" and t.endswith("/cancel") for m, t in rep.requests)
    assert Path(out.strip()).exists()
    [row] = json.loads(box.run("usage", "--raw", "--json").stdout)
    assert row["id"] == job_id and row["cost_usd"] == "0.003000"
    assert rep.billed == 1


@pytest.mark.parametrize(
    "form",
    ["plain", "upper", "url", "base64", "json", "hex", "html", "split", "spaced", "reversed"],
)
def test_token_echoed_in_any_form_is_scrubbed(
    box: Sandbox, rep: ReplicateDouble, form: str
) -> None:
    import base64

    rep.echo_token_next("create", form)
    result = box.run("generate", "echo")
    assert result.returncode != 0
    shown = {
        "plain": TOKEN,
        "upper": TOKEN.upper(),
        "url": "".join(f"%{b:02X}" for b in TOKEN.encode()),
        "base64": base64.b64encode(f"Bearer {TOKEN}".encode()).decode()[8:-4],
        "json": "".join(f"\\u{ord(c):04x}" for c in TOKEN),
        "hex": TOKEN.encode().hex(),
        "html": "".join(f"&#{ord(c)};" for c in TOKEN),
        "split": TOKEN[len(TOKEN) // 2 :],  # the second line alone gives half the token
        "spaced": " ".join(TOKEN),
        "reversed": TOKEN[::-1],
    }[form]
    recorded = json.dumps([e.data for e in box.events(only_job(box))])
    received = [e.data for e in box.events(only_job(box)) if e.type == "ResponseReceived"]
    assert "[redacted]" in received[0]["body"]["detail"]
    for text in (
        json.loads(recorded.lower()).__repr__(),
        result.stderr.lower(),
        box.ledger_text().lower(),
    ):
        assert TOKEN.lower() not in text and shown.lower() not in text, form


# -- issue 19 (Replicate): bounded waits and honest messages ------------------------------------


def test_retry_after_past_the_deadline_is_not_obeyed(box: Sandbox, rep: ReplicateDouble) -> None:
    rep.fail_next("create", status=429, retry_after=86400)
    proc = box.popen("generate", "throttled")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert "86400" not in err or "past the job's" in err
    assert rep.billed == 0


def test_200_html_says_what_was_wrong(box: Sandbox, rep: ReplicateDouble) -> None:
    rep.fail_next("create", status=200, html=True)
    rep.fail_next("list", status=200, html=True, times=3)
    result = box.run("generate", "captive portal")
    assert result.returncode == 5, result.stderr
    assert "HTTP 200: HTTP 200" not in result.stderr
    assert "text/html" in result.stderr and "not JSON" in result.stderr
    assert rep.billed == 0


def test_malformed_prediction_never_raises(box: Sandbox, rep: ReplicateDouble) -> None:
    for body in ({"id": "abc", "status": "processing", "urls": "x"}, {"results": [1, "a"]}, [1]):
        rep.fail_next("create", status=201, body=body)
        rep.fail_next("list", status=200, body={"results": [1, "a", None]})
        result = box.run("generate", "malformed")
        assert "Traceback" not in result.stderr


def test_a_rewrite_of_the_same_image_is_not_a_clobber(tmp_path: Path) -> None:
    """Found by the random-kill soak: a run linked the image into place and was killed before
    recording ImageStored; its resume downloads the same bytes and must accept its own file
    (identical content), while a different file under that name is still refused."""
    from imagen.runner.files import FileExists, atomic_write

    out = tmp_path / "done.png"
    atomic_write(out, b"\x89PNG same bytes", overwrite=False)
    atomic_write(out, b"\x89PNG same bytes", overwrite=False)  # the resume: a no-op
    with pytest.raises(FileExists):
        atomic_write(out, b"\x89PNG other bytes", overwrite=False)
    assert out.read_bytes() == b"\x89PNG same bytes"
    assert [p.name for p in tmp_path.iterdir()] == ["done.png"]  # no temp file left


def test_two_jobs_with_one_prompt_and_seed_each_adopt_their_own_prediction(
    box: Sandbox, rep: ReplicateDouble
) -> None:
    """Issue #26 item 7: both interrupted after their creates (the answers lost, the lookups
    failing), then resumed: each job adopts one of the two interchangeable predictions, nothing
    is paid a third time."""
    ids = []
    for _ in range(2):
        rep.reset_after_create()
        rep.fail_next("list", 500, times=3)
        halted = box.run("generate", "twin foxes", "--seed", "7")
        assert halted.returncode == 5, halted.stderr
        ids.append(next(j for j in box.job_ids() if j not in ids))
    assert rep.billed == 2
    images = set()
    for job_id in ids:
        resumed = box.run("resume", job_id, "--json")
        assert resumed.returncode == 0, resumed.stderr
        [job] = json.loads(resumed.stdout)
        images.add(job["image"])
    assert rep.billed == 2 and len(images) == 2
    adopted = {
        e.data["remote_id"]
        for job_id in ids
        for e in box.events(job_id)
        if e.type == "RemoteJobAccepted"
    }
    assert adopted == set(rep.predictions)
