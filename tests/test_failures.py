"""Failure categories: adapters record what kind of failure it was; the CLI maps kinds to exit
codes; JobFailed events recorded before categories existed (schema 1, a bare exit code) still
read as the failure they were."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagen.app.exit_codes import ExitCode
from imagen.app.outcome import FAILURE_EXIT_CODES, exit_code
from imagen.core.events import JobFailed, JobRequested, from_data
from imagen.core.failures import Failure
from imagen.repository import load
from ledger import NewEvent, open_store


def test_every_category_has_an_exit_code() -> None:
    assert set(FAILURE_EXIT_CODES) == set(Failure)
    assert FAILURE_EXIT_CODES[Failure.UNREACHABLE] == ExitCode.BACKEND_UNAVAILABLE
    # Recorded, so never 2 (which promises nothing was recorded): the backend refused it.
    assert FAILURE_EXIT_CODES[Failure.INVALID_INPUT] == ExitCode.REJECTED
    assert FAILURE_EXIT_CODES[Failure.GENERATION_FAILED] == ExitCode.JOB_FAILED


def test_a_category_is_recorded_as_its_name_and_read_back_as_the_enum() -> None:
    event = JobFailed("models_missing", "no flux1", Failure.MODELS_MISSING)
    data = event.to_data()
    assert data == {"reason": "models_missing", "message": "no flux1", "category": "models_missing"}
    assert type(data["category"]) is str  # plain JSON, not an enum object
    again = from_data("JobFailed", JobFailed.SCHEMA_VERSION, data)
    assert again == event and again.category is Failure.MODELS_MISSING  # type: ignore[attr-defined]


def test_a_category_from_a_newer_imagen_reads_as_unexpected() -> None:
    data = {"reason": "quota", "message": "m", "category": "quota_exhausted"}
    assert from_data("JobFailed", 2, data).category is Failure.UNEXPECTED  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("reason", "old_exit", "category", "code"),
    [
        ("unreachable", 3, Failure.UNREACHABLE, ExitCode.BACKEND_UNAVAILABLE),
        ("out_of_credit", 3, Failure.OUT_OF_CREDIT, ExitCode.BACKEND_UNAVAILABLE),
        ("invalid_workflow", 2, Failure.INVALID_INPUT, ExitCode.REJECTED),
        ("prediction_failed", 1, Failure.GENERATION_FAILED, ExitCode.JOB_FAILED),
        ("output_deleted", 1, Failure.OUTPUT_LOST, ExitCode.JOB_FAILED),
        # Reasons no adapter used: the old exit code is what the event meant.
        ("something_else", 3, Failure.UNREACHABLE, ExitCode.BACKEND_UNAVAILABLE),
        ("something_else", 2, Failure.INVALID_INPUT, ExitCode.REJECTED),
        ("something_else", 1, Failure.UNEXPECTED, ExitCode.JOB_FAILED),
    ],
)
def test_schema_1_failures_in_a_real_ledger_keep_their_meaning(
    tmp_path: Path, reason: str, old_exit: int, category: Failure, code: ExitCode
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        request = JobRequested("b", "replicate", "m", "p", {"seed": 1}, {}, str(tmp_path / "o.png"))
        store.append(
            "job1",
            [
                NewEvent("JobRequested", request.to_data(), 1),
                NewEvent(
                    "JobFailed", {"reason": reason, "message": "old", "exit_code": old_exit}, 1
                ),
            ],
            expected_version=0,
        )
        state = load(store, "job1")
    finally:
        store.close()
    assert state.terminal == JobFailed(reason, "old", category)
    assert exit_code(state) == code


def test_schema_1_without_an_exit_code_is_a_job_failure() -> None:
    event = from_data("JobFailed", 1, {"reason": "render", "message": "m"})
    assert event == JobFailed("render", "m", Failure.UNEXPECTED)
