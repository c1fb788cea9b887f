"""What the application hands the Runner so that it needs no projection and no policy of its
own (tests/test_floors.py: the runner imports neither app/ nor projections/).

- `Admission`: the check run under the ledger's write lock before a new job is recorded (the
  caller's budgets, imagen/app/budgets.py `Budgets`); it raises `Refused` to refuse the job,
  which is then recorded as failed and nothing is sent.
- `HeldIds`: which jobs hold a remote id (the jobs table, imagen/app/runners.py `JobsTableHeldIds`):
  the answer to a CheckHeld action, and the guard of an append that adopts a looked-up remote job.

imagen/app/runners.py builds Runners with both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from imagen.core.failures import Failure

if TYPE_CHECKING:
    from imagen.core.events import JSON, JobRequested
    from imagen.core.job import JobState
    from ledger.projection import Guard, LockedView


class Refused(Exception):
    """An admission guard's refusal of a new job: recorded as JobFailed(reason, message,
    category); nothing is sent."""

    reason = "refused"
    category = Failure.UNEXPECTED


class Admission(Protocol):
    def prepare(self, request: JobRequested) -> None:
        """Outside the lock, before `guard(request)` is used (e.g. catch a projection up)."""

    def guard(self, request: JobRequested) -> Guard | None:
        """The check run under the write lock as `request` is recorded (raising Refused), or
        None when there is nothing to check."""

    def at_end(self, state: JobState) -> JSON | None:
        """What the job in `state` (its terminal event folded in) commits against budgets,
        recorded in that terminal event (core/events.py SPEND_AT_END); None: nothing recorded."""


class HeldIds(Protocol):
    def holders(self, remote_ids: list[str], *, except_job: str) -> dict[str, str]:
        """remote id -> the job other than `except_job` holding it, as far as recorded."""

    def holder_under_lock(self, view: LockedView, remote_id: str, *, except_job: str) -> str | None:
        """The same for one id, read under the write lock (inside an append's guard)."""


class AdmitAll:
    """Admission without budgets (a ledger or a test with none)."""

    def prepare(self, request: JobRequested) -> None:
        pass

    def guard(self, request: JobRequested) -> Guard | None:
        return None

    def at_end(self, state: JobState) -> JSON | None:
        return None
