"""A job's outcome as the CLI reports it: exit code, one-line message, JSON summary."""

from __future__ import annotations

from typing import Any

from imagen.app.errors import UserError
from imagen.app.exit_codes import ExitCode
from imagen.core.events import JobCancelled, JobFailed, JobSucceeded
from imagen.core.failures import Failure
from imagen.core.job import JobState


def exit_code(state: JobState, env: Any = None) -> ExitCode:
    """The exit code a job's recorded end means (app/exit_codes.py: one meaning each). With
    `env` (the process's Environment), a cancellation this very process recorded after Ctrl-C
    is INTERRUPTED (130); read back later (`resume`, `jobs`) it is CANCELLED."""
    t = state.terminal
    if isinstance(t, JobSucceeded):
        return ExitCode.OK
    if isinstance(t, JobCancelled):
        if t.reason != "user":
            return ExitCode.JOB_FAILED
        return ExitCode.INTERRUPTED if _claimed_by(state, env) else ExitCode.CANCELLED
    if isinstance(t, JobFailed):
        return FAILURE_EXIT_CODES[t.category]
    why = state.interrupted.signal if state.interrupted is not None else ""
    if why.startswith("unreachable"):  # the backend went away mid-job, not a signal to us
        return ExitCode.BACKEND_UNAVAILABLE
    return ExitCode.TERMINATED


def _claimed_by(state: JobState, env: Any) -> bool:
    claim = state.claim
    return env is not None and claim is not None and (claim.pid, claim.host) == (env.pid, env.host)


FAILURE_EXIT_CODES: dict[Failure, ExitCode] = {
    Failure.UNREACHABLE: ExitCode.BACKEND_UNAVAILABLE,
    Failure.UNAUTHORIZED: ExitCode.BACKEND_UNAVAILABLE,
    Failure.OUT_OF_CREDIT: ExitCode.BACKEND_UNAVAILABLE,
    Failure.RATE_LIMITED: ExitCode.BACKEND_UNAVAILABLE,
    Failure.SERVER_ERROR: ExitCode.BACKEND_UNAVAILABLE,
    Failure.MODELS_MISSING: ExitCode.BACKEND_UNAVAILABLE,
    # Recorded jobs never exit 2 (2 promises nothing was recorded): the backend's refusal of
    # an input imagen could not check has its own code.
    Failure.INVALID_INPUT: ExitCode.REJECTED,
    Failure.NOT_FOUND: ExitCode.REJECTED,
    Failure.OUTPUT_EXISTS: ExitCode.JOB_FAILED,
    Failure.GENERATION_FAILED: ExitCode.JOB_FAILED,
    Failure.OUTPUT_LOST: ExitCode.JOB_FAILED,
    Failure.DOWNLOAD_FAILED: ExitCode.JOB_FAILED,
    Failure.UNEXPECTED: ExitCode.JOB_FAILED,
    Failure.BUDGET: ExitCode.OVER_BUDGET,
}


def failure_message(state: JobState) -> str | None:
    t = state.terminal
    if isinstance(t, JobFailed):
        return t.message
    if isinstance(t, JobCancelled):
        if t.detail:  # what was done remotely and what was verified
            return f"job {state.job_id} cancelled ({t.reason}); {t.detail}"
        return f"job {state.job_id} cancelled ({t.reason})" + (
            "; the remote job was cancelled" if t.remote_cancelled else ""
        )
    if t is None:
        why = state.interrupted.signal if state.interrupted is not None else ""
        if why.startswith("unreachable"):
            return (
                f"job {state.job_id} interrupted: the backend was out of reach until the "
                f"deadline ({why.split(': ', 1)[-1]}); it may still finish the image: "
                f"`imagen resume {state.job_id}` fetches it"
            )
        return f"job {state.job_id} interrupted; finish it with `imagen resume {state.job_id}`"
    return None


JOB_ID_CHARS = frozenset("0123456789abcdef")


def resolve_job_id(store: Any, prefix: str) -> str:
    # Job ids are lowercase hex: anything else matches nothing (and never reaches a range scan
    # with characters such as U+10FFFF, which has no successor).
    valid = prefix and len(prefix) <= 64 and set(prefix) <= JOB_ID_CHARS
    found = store.streams_with_prefix(prefix, limit=2) if valid else []
    if not found:
        raise UserError(f"no job matches {prefix!r} (see `imagen jobs`)", ExitCode.NOT_FOUND)
    if len(found) > 1 and prefix not in found:
        raise UserError(
            f"{prefix!r} matches several jobs; give more characters", ExitCode.BAD_INPUT
        )
    return prefix if prefix in found else found[0]
