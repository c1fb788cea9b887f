"""Events are checked when built, read forward-compatibly, and upcast by schema version.

A shared PostgreSQL ledger may hold events written by a newer imagen: an older one must list,
show and audit it without crashing (the unknown parts visible, left out of folds), and must
not drive such a job (it could pay twice by deciding without what it cannot read).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from imagen.app.exit_codes import ExitCode
from imagen.core.events import (
    CATALOGUE,
    UPCASTERS,
    AcceptedVia,
    CancelRequested,
    ImageStored,
    JobFailed,
    JobRequested,
    LookupConcluded,
    LookupDecision,
    RemoteJobAccepted,
    ResponseReceived,
    RetryScheduled,
    UnknownEvent,
    decode,
    upcast,
)
from imagen.core.failures import Failure
from ledger import NewEvent, open_store
from tests.support.cli import Sandbox

# -- built events check their fields -----------------------------------------------------------


def test_enum_fields_take_their_enum_or_its_value() -> None:
    assert LookupConcluded([], "adopt").decision is LookupDecision.ADOPT
    assert RemoteJobAccepted("p1").via is AcceptedVia.CREATE
    assert RemoteJobAccepted("p1", via="lookup").to_data()["via"] == "lookup"
    with pytest.raises(ValueError, match="LookupConcluded.decision must be one of adopt, "):
        LookupConcluded([], "maybe")
    with pytest.raises(ValueError, match="CancelRequested.reason must be one of user, timeout"):
        CancelRequested("later")


@pytest.mark.parametrize(
    "build",
    [
        lambda: RetryScheduled("create", "2", 1.0, "x"),  # type: ignore[arg-type]
        lambda: RetryScheduled("create", True, 1.0, "x"),  # a bool is not an int here
        lambda: RetryScheduled("create", 2, float("nan"), "x"),
        lambda: ImageStored("/x.png", "0" * 64, 10, "png", 1.5, 1),  # type: ignore[arg-type]
        lambda: ResponseReceived("r", "create", 200, body={"x": float("inf")}),
        lambda: ResponseReceived("r", "create", 200, body={1: "non-str key"}),
        lambda: ResponseReceived("r", "create", 200, body=b"bytes"),
        lambda: ResponseReceived("r", "create", 200, headers={"a": 1}),  # type: ignore[dict-item]
        lambda: LookupConcluded(["p1", 2], "adopt"),  # type: ignore[list-item]
        lambda: JobRequested("b", "t", "m", "p", {}, {}, "/o", price_usd="0.003"),  # type: ignore[arg-type]
    ],
)
def test_a_wrong_field_raises_when_the_event_is_built(build: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        build()


# -- reading never raises ------------------------------------------------------------------------


def test_decode_keeps_what_it_cannot_read_visible() -> None:
    unknown = decode("RemoteJobMigrated", 1, {"to": "x"}).event
    assert isinstance(unknown, UnknownEvent) and unknown.type == "RemoteJobMigrated"
    assert unknown.data == {"to": "x"} and unknown.why == "unknown type"

    newer = decode("ImageStored", 7, {"path": "/x"}).event
    assert isinstance(newer, UnknownEvent) and "schema version 7" in newer.why

    extra = decode("RemoteJobAccepted", 1, {"remote_id": "p1", "region": "eu"})
    assert extra.event == RemoteJobAccepted("p1") and extra.unknown_fields == ("region",)

    unfit = decode("RemoteJobAccepted", 1, {"remote_id": 5}).event
    assert isinstance(unfit, UnknownEvent) and "remote_id" in unfit.why
    assert isinstance(decode("RemoteJobAccepted", 1, {"via": "webhook"}).event, UnknownEvent)


def test_decode_of_random_payloads_never_raises() -> None:
    rng = random.Random(14)
    values: list[Any] = [None, "", "x", 0, -1, 2**70, 1.5, True, [], {}, [1, "a"], {"k": None}]
    for _ in range(3000):
        type_name = rng.choice([*CATALOGUE, "Nope"])
        data = {
            rng.choice(["remote_id", "path", "reason", "category", "x", "status", "pid"]): (
                rng.choice(values)
            )
            for _ in range(rng.randrange(5))
        }
        decode(type_name, rng.choice([0, 1, 2, 3]), data)
        decode(type_name, 1, rng.choice(values))  # not even a dict


# -- upcasting -----------------------------------------------------------------------------------


def test_every_schema_version_step_has_an_upcaster() -> None:
    for name, cls in CATALOGUE.items():
        for version in range(1, cls.SCHEMA_VERSION):
            assert (name, version) in UPCASTERS, f"{name} v{version} -> v{version + 1}"
    assert all(name in CATALOGUE for name, _ in UPCASTERS)


def test_job_failed_schema_1_is_read_as_schema_2() -> None:
    v1 = {"reason": "prediction_failed", "message": "NSFW", "exit_code": 1}
    assert upcast("JobFailed", 1, v1) == {
        "reason": "prediction_failed",
        "message": "NSFW",
        "category": Failure.GENERATION_FAILED,
    }
    event = decode("JobFailed", 1, v1).event
    assert event == JobFailed("prediction_failed", "NSFW", Failure.GENERATION_FAILED)
    assert decode("JobFailed", 1, {"reason": "x", "message": "m", "exit_code": 3}).event == (
        JobFailed("x", "m", Failure.UNREACHABLE)
    )


# -- a ledger shared with a newer imagen ----------------------------------------------------------


def _request(tmp: Path) -> dict[str, Any]:
    return JobRequested(
        "local", "comfyui", "flux", "a fox", {"seed": 1}, {}, str(tmp / "fox.png")
    ).to_data()


def _box(tmp_path: Path, url: str) -> Sandbox:
    box = Sandbox(tmp_path, ledger_url=url)
    box.write_config("")
    return box


def test_an_older_imagen_lists_shows_and_audits_a_newer_ones_events(
    ledger_url: str, tmp_path: Path
) -> None:
    store = open_store(ledger_url)
    newer_job, old_job = "a" * 32, "b" * 32
    store.append(
        newer_job,
        [
            NewEvent("JobRequested", {**_request(tmp_path), "style_preset": "noir"}),
            NewEvent("RemoteJobMigrated", {"to": "region-b"}),
            NewEvent("JobSucceeded", {"result": {}, "images": 4}, schema_version=9),
        ],
        0,
    )
    # A JobFailed as imagen wrote it before failure categories (schema 1): upcast when read.
    store.append(
        old_job,
        [
            NewEvent("JobRequested", _request(tmp_path)),
            NewEvent("JobFailed", {"reason": "output_deleted", "message": "gone", "exit_code": 1}),
        ],
        0,
    )
    store.close()
    box = _box(tmp_path, ledger_url)

    listed = box.run("jobs", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["job_id"]: r for r in json.loads(listed.stdout)}
    assert rows[old_job]["status"] == "failed"
    assert rows[newer_job]["status"] != "succeeded"  # a v9 end is not read as an end
    assert rows[newer_job]["prompt"] == "a fox"

    shown = box.run("show", newer_job[:8])
    assert shown.returncode == 0, shown.stderr
    assert "unknown event RemoteJobMigrated v1" in shown.stdout
    assert "unknown event JobSucceeded v9" in shown.stdout
    assert "fields from a newer imagen: style_preset" in shown.stdout
    shown_json = json.loads(box.run("show", old_job[:8], "--json").stdout)
    assert shown_json["events"][-1]["data"]["category"] == "output_lost"

    audit = box.run("audit", "--json")
    assert "Traceback" not in audit.stderr
    report = json.loads(audit.stdout)
    assert not [p for p in report["problems"] if "newer" in p["message"]]
    notes = " | ".join(n["message"] for n in report["notes"])
    assert "type RemoteJobMigrated" in notes and "JobSucceeded schema version 9" in notes
    assert "JobRequested fields style_preset" in notes and "written by a newer imagen" in notes


def test_an_older_imagen_does_not_drive_a_job_with_events_it_cannot_read(
    ledger_url: str, tmp_path: Path
) -> None:
    store = open_store(ledger_url)
    job = "c" * 32
    store.append(
        job,
        [
            NewEvent("JobRequested", _request(tmp_path)),
            NewEvent("RemoteJobMigrated", {"to": "region-b"}),
        ],
        0,
    )
    before = store.head_position()
    store.close()
    box = _box(tmp_path, ledger_url)
    resumed = box.run("resume", job[:8])
    assert resumed.returncode == ExitCode.CONFLICT, resumed.stderr
    assert "written by a newer imagen" in resumed.stderr
    assert "Traceback" not in resumed.stderr
    store = open_store(ledger_url)
    assert store.head_position() == before  # nothing recorded, not even a claim
    store.close()
