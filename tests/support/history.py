"""One way to build a job's recorded history for the pure adapter tests.

A `History` starts from a `JobRequested` and a runner's claim, and grows event by event the way
the runner records them: a request as `RequestSent`, then what came back (`ResponseReceived`)
or that nothing did (`RequestFailed`), or nothing at all (a process that died). Each event is
folded into the `JobState` with `imagen.core.job.evolve` and stamped `step` seconds after the
previous one, so deadlines and retry times are computed from the same clock the ledger would
give them. No sockets, no ledger, no wall clock.

Used by tests/test_replicate_decide.py, tests/test_comfyui_decide.py and the property tests
(tests/support/properties.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from imagen.core.actions import Action, HttpRequest, OpenStream, Record, StoreImage
from imagen.core.events import (
    Event,
    JobRequested,
    RequestFailed,
    RequestSent,
    ResponseReceived,
    RunnerClaimed,
    StreamOpened,
)
from imagen.core.job import JobState, Recorded, evolve

T0 = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
FIRST_PID = 100


class History:
    """A job's recorded events, built step by step; `now` advances as the ledger's would."""

    def __init__(
        self,
        decide: Callable[[JobState], Action],
        request: JobRequested,
        *,
        job_id: str = "job1",
        step: float = 0.1,
        start: datetime = T0,
    ) -> None:
        self._decide = decide
        self.state = JobState(job_id)
        self.now = start
        self.step_s = step
        self.process = FIRST_PID
        self.add(request, RunnerClaimed(self.process, "host", 120.0, str(self.process - 99)))

    # -- time and events ---------------------------------------------------------------------

    def add(self, *events: Event, after: float | None = None) -> History:
        """Record events, the first `after` seconds after the latest (default `step`), the rest
        `step` apart."""
        for e in events:
            self.now += timedelta(seconds=self.step_s if after is None else after)
            after = None
            self.state = evolve(self.state, Recorded(e, self.state.version + 1, self.now))
        return self

    def wait(self, seconds: float) -> History:
        """Let time pass with nothing recorded (the next event comes `seconds` later)."""
        self.now += timedelta(seconds=seconds)
        return self

    def until(self, moment: datetime) -> History:
        """Let time pass up to `moment` (a runner waiting for an action's not_before)."""
        self.now = max(self.now, moment)
        return self

    def resume(self) -> History:
        """Another process takes the job (`imagen resume`)."""
        self.process += 1
        claim = RunnerClaimed(self.process, "host", 120.0, str(self.process), resumed=True)
        return self.add(claim)

    def renew(self) -> History:
        """The same process renews its lease (recorded as a RunnerClaimed by older ledgers)."""
        start = "1" if self.process == FIRST_PID else str(self.process)
        return self.add(RunnerClaimed(self.process, "host", 120.0, start))

    @property
    def records(self) -> tuple[Recorded, ...]:
        return self.state.history

    def types(self) -> list[str]:
        return [type(r.event).__name__ for r in self.records]

    # -- deciding and performing -------------------------------------------------------------

    def decide(self) -> Action:
        return self._decide(self.state)

    def send(self, action: HttpRequest | StoreImage | OpenStream) -> str:
        """Record a request as sent (unanswered); returns its request id."""
        if isinstance(action, StoreImage):
            purpose = "check" if action.check_only else "download"
            self.add(RequestSent(action.request_id, purpose, "GET", action.url))
            return action.request_id
        if isinstance(action, OpenStream):
            rid = f"stream-{self.state.version + 1}"  # as the runner names it
            self.add(RequestSent(rid, "stream", "GET", action.url))
            return rid
        assert isinstance(action, HttpRequest), action
        self.add(
            RequestSent(
                action.request_id, action.purpose, action.method, action.url, {}, action.json_body
            )
        )
        return action.request_id

    def answer(
        self, purpose: str, status: int, body: Any = None, headers: dict[str, str] | None = None
    ) -> History:
        """The answer to the latest request, which must be of `purpose`."""
        rid = self._pending(purpose)
        return self.add(ResponseReceived(rid, purpose, status, headers or {}, body))

    def fail(
        self, what: str | HttpRequest, error: str = "network", message: str = "reset"
    ) -> History:
        """Nothing came back: to the latest request of purpose `what`, or to the request
        `what` (sent first)."""
        if isinstance(what, HttpRequest):
            self.send(what)
            what = what.purpose
        return self.add(RequestFailed(self._pending(what), what, error, message))

    def do(self, action: Action, body: Any = None, status: int = 200) -> History:
        """Send an HttpRequest and record its answer (or a RequestFailed given as `body`)."""
        assert isinstance(action, HttpRequest), action
        self.send(action)
        if isinstance(body, RequestFailed):
            return self.add(body)
        return self.answer(action.purpose, status, body)

    def opened(self, action: OpenStream) -> History:
        """A websocket the runner opened for `action`."""
        rid = self.send(action)
        return self.add(
            ResponseReceived(rid, "stream", 101), StreamOpened(action.url, action.client_id)
        )

    def apply(self, action: Action) -> History:
        """Record what a Record action decided."""
        assert isinstance(action, Record), action
        return self.add(*action.events)

    def step(self) -> Action:
        """Decide; record a request as sent (unanswered), or the events a Record decided."""
        action = self.decide()
        if isinstance(action, HttpRequest | StoreImage):
            self.send(action)
        elif isinstance(action, Record):
            self.add(*action.events)
        return action

    def _pending(self, purpose: str) -> str:
        sent = [r.event for r in self.records if isinstance(r.event, RequestSent)]
        assert sent and sent[-1].purpose == purpose, (purpose, sent[-1:] or None)
        return sent[-1].request_id
