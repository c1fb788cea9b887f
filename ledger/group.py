"""Group commit: appends that arrive from several threads at once share one transaction.

With durability "full" each commit is an fsync and each transaction a round of lock, begin,
head read and commit; a process driving many streams at once (threads) would pay that per
append. Here the first caller to arrive leads: it takes every append waiting at that moment,
runs them one after another in one transaction (each still checks its own expected version and
guard, and extends the hash chain exactly as if alone), commits, then wakes the callers. Those
that arrived meanwhile form the next group, led by one of them. No caller returns before its
events are committed (durable), so whatever it does next, it does after its events are recorded.
A lone caller leads at once: no waiting, no added latency.

Failure is per caller: a stale expected version, or a guard that refuses by raising, refuses
that append alone (both happen before anything of it is written). Anything else that fails
while the group's appends run (a database error) rolls the whole transaction back and every
caller of that group appends again alone, in its own transaction, so each meets exactly the
outcome it would have had without grouping; a guard may then run a second time (guards only
read). A failure of the commit itself leaves the outcome unknown, as it would for a lone
caller: every caller of the group gets that error (what its own commit would have raised), and
none appends again blind.

It relies only on a store's public write API: `transaction()` and `append(..., conn=, guard=)`.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from typing import Any

from ledger.errors import ConcurrencyError, LedgerError, database_error
from ledger.events import NewEvent, RecordedEvent
from ledger.interface import Writer


class _Pending:
    __slots__ = ("stream_id", "events", "expected", "guard", "result", "error", "state")

    def __init__(
        self, stream_id: str, events: Sequence[NewEvent], expected: int | None, guard: Any
    ) -> None:
        self.stream_id, self.events, self.expected, self.guard = (
            stream_id,
            events,
            expected,
            guard,
        )
        self.result: list[RecordedEvent] = []
        self.error: BaseException | None = None
        # waiting → taken (a leader holds it) → done | alone (append again in own transaction)
        self.state = "waiting"


class GroupCommit:
    """`append` as `EventStore.append` (without `conn`), grouped across threads."""

    def __init__(self, store: Writer, *, max_group: int = 128) -> None:
        self._store = store
        self._max = max_group
        lock = threading.Lock()
        self._cond = threading.Condition(lock)
        # Its own condition on the same lock, so an observer waiting for arrivals does not
        # wake every follower waiting for its leader.
        self._arrived = threading.Condition(lock)
        self._queue: list[_Pending] = []
        self._leading = False
        self.groups = 0  # transactions committed by leaders (for benchmarks and tests)
        self.grouped = 0  # appends committed in them
        self.failed = 0  # groups that failed (rolled back, or their commit failed)

    def append(
        self,
        stream_id: str,
        new_events: Sequence[NewEvent],
        expected_version: int | None,
        *,
        guard: Any = None,
    ) -> list[RecordedEvent]:
        me = _Pending(stream_id, new_events, expected_version, guard)
        with self._cond:
            self._queue.append(me)
            self._arrived.notify_all()
            while self._leading and me.state in ("waiting", "taken"):
                try:
                    self._cond.wait()
                except BaseException:
                    if me.state == "waiting":  # no leader has it: it will never be written
                        self._queue.remove(me)
                    # Taken: its leader commits it or not; the ledger tells which.
                    raise
            group: list[_Pending] = []
            if me.state == "waiting":  # nobody leads: lead this group, itself included
                self._leading = True
                group = [me, *(p for p in self._queue if p is not me)][: self._max]
                taken = {id(p) for p in group}
                self._queue = [p for p in self._queue if id(p) not in taken]
                for p in group:
                    p.state = "taken"
        if group:
            self._lead(group, me)
        if me.state == "alone":
            return self._alone(me)
        if me.error is not None:
            raise me.error
        return me.result

    def queued(self) -> int:
        """Appends waiting for a leader (for tests and diagnostics)."""
        with self._cond:
            return sum(p.state == "waiting" for p in self._queue)

    def wait_queued(self, n: int, timeout: float) -> bool:
        """Block until at least `n` appends wait for a leader (a readiness check for tests);
        False if `timeout` seconds pass first."""
        with self._arrived:
            return self._arrived.wait_for(
                lambda: sum(p.state == "waiting" for p in self._queue) >= n, timeout
            )

    def _lead(self, group: list[_Pending], mine: _Pending) -> None:
        refused: dict[int, Exception] = {}
        results: dict[int, list[RecordedEvent]] = {}
        # Until every append of the group ran, a failure rolls the transaction back: nothing
        # of it is written and each caller may append again alone. A failure after that (the
        # commit itself, or an interruption during it) leaves the outcome unknown: no caller
        # appends again blind; each gets the error its own commit would have raised.
        ran_all = False
        failure: BaseException | None = None
        try:
            with self._store.transaction() as conn:
                for n, p in enumerate(group):
                    try:
                        guard = None if p.guard is None else _Checked(p.guard)
                        results[n] = self._store.append(
                            p.stream_id, p.events, p.expected, conn=conn, guard=guard
                        )
                    except _Refused as r:
                        refused[n] = r.refusal
                    except ConcurrencyError as exc:
                        if exc.__cause__ is not None:
                            raise  # a constraint fired: the transaction may be unusable
                        refused[n] = exc  # the version check: nothing written
                ran_all = True
        except BaseException as exc:
            failure = exc
        with self._cond:
            for n, p in enumerate(group):
                if failure is None:
                    p.result, p.error, p.state = results.get(n, []), refused.get(n), "done"
                elif not ran_all:
                    p.state = "alone"
                elif p is not mine:
                    p.error, p.state = _twin(failure), "done"
                else:
                    p.state = "done"  # the leader's caller gets the failure itself, below
            if failure is None:
                self.groups += 1
                self.grouped += len(group) - len(refused)
            else:
                self.failed += 1
            self._leading = False
            self._cond.notify_all()
        if failure is not None and (ran_all or not isinstance(failure, Exception)):
            raise failure  # the commit failed, or the leader's caller was interrupted

    def _alone(self, p: _Pending) -> list[RecordedEvent]:
        with self._store.transaction() as conn:
            return self._store.append(p.stream_id, p.events, p.expected, conn=conn, guard=p.guard)


class _Refused(Exception):
    def __init__(self, refusal: Exception) -> None:
        self.refusal = refusal


class _Checked:
    """A guard whose refusal is told apart from a database error raised while it read (which
    may leave the transaction unusable: PostgreSQL aborts it)."""

    def __init__(self, guard: Any) -> None:
        self._guard = guard

    def __call__(self, view: Any) -> None:
        try:
            self._guard(view)
        except Exception as exc:
            if database_error(exc):
                raise
            raise _Refused(exc) from None


def _twin(failure: BaseException) -> BaseException:
    """The commit's error for another caller of the group: the same kind of error (what the
    caller's own commit would have raised, so it is reported the same way), not the same
    object (raised in several threads at once, its traceback would be shared)."""
    try:
        twin = copy.copy(failure)
    except Exception:
        twin = LedgerError(f"committing appends failed: {type(failure).__name__}: {failure}")
    if not isinstance(failure, Exception):  # an interruption is the leader's caller's own
        twin = LedgerError("committing appends was interrupted")
    twin.__cause__ = failure
    return twin
