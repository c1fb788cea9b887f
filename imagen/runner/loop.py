"""The one loop that does I/O: load the job's events, fold, ask the adapter, perform, record.

Because the ledger is the only state, the same loop starts a job (`generate`) and finishes an
interrupted one (`resume`). Why it pays at most once per job, under which preconditions, and
which step of the argument each method here carries: docs/architecture.md, "The guarantee".
Crash points are named by event type (IMAGEN_CRASH_AFTER=<type>[:n], tests only).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from imagen import backends
from imagen.core.actions import (
    Action,
    CheckHeld,
    FollowStream,
    Halt,
    HttpRequest,
    OpenStream,
    ProbeMembers,
    Record,
    StoreImage,
)
from imagen.core.events import (
    SECRET_HEADERS,
    TERMINAL_TYPES,
    AcceptedVia,
    Event,
    ImageStored,
    JobFailed,
    JobInterrupted,
    JobMoved,
    JobOverflowed,
    JobPlaced,
    JobRequested,
    JobSucceeded,
    MembersProbed,
    PollsUnchanged,
    RemoteIdsHeld,
    RemoteJobAccepted,
    RequestFailed,
    RequestSent,
    ResponseReceived,
    RunnerClaimed,
    RunnerRenewed,
    StreamClosed,
    StreamOpened,
    StreamQuiet,
    redact_headers,
)
from imagen.core.failures import Failure
from imagen.core.job import JobState, Recorded, evolve, parse_time
from imagen.repository import load, to_recorded
from imagen.runner import redact, signals
from imagen.runner.admission import Admission, HeldIds, Refused
from imagen.runner.environment import Environment, proc_start
from imagen.runner.transports import (
    HttpTransport,
    Stream,
    StreamDropped,
    StreamRejected,
    StreamTransport,
    Websockets,
)
from ledger import ConcurrencyError, NewEvent

if TYPE_CHECKING:
    from ledger import EventStore
    from ledger.projection import Guard, LockedView

LEASE_SECONDS = 120.0


def lease_seconds(env: Any) -> float:
    """How long a claim holds without renewal: IMAGEN_LEASE_SECONDS (at least 1), else 120 s.
    Other hosts' workers take a job over once it lapses; it must outlast the longest single
    request (renewals happen between steps)."""
    try:
        return max(1.0, float(env.get("IMAGEN_LEASE_SECONDS") or LEASE_SECONDS))
    except ValueError:
        return LEASE_SECONDS


MAX_STEPS = 5000


class Reporter(Protocol):
    def event(self, state: JobState, rec: Recorded) -> None: ...
    def progress(self, step: int | None, total: int | None, label: str = "") -> None: ...


class NullReporter:
    def event(self, state: JobState, rec: Recorded) -> None:
        pass

    def progress(self, step: int | None, total: int | None, label: str = "") -> None:
        pass


class RunnerError(Exception):
    pass


class JobTakenOver(RunnerError):
    """Another process appended to the job: it is being driven elsewhere, so we stop."""


class MissingCredential(RunnerError):
    def __init__(self, env_name: str) -> None:
        super().__init__(f"set {env_name} (the backend's token is read from it)")
        self.env_name = env_name


class Halted(RunnerError):
    """The adapter needs a person to decide; the job stays resumable."""

    def __init__(self, message: str, category: Failure | None = None) -> None:
        super().__init__(message)
        self.category = category


class Terminated(BaseException):
    """SIGTERM/SIGHUP: stop driving, leave the job resumable."""

    def __init__(self, signame: str) -> None:
        super().__init__(signame)
        self.signame = signame


class _RemoteIdTaken(Exception):
    """Another job adopted this remote id first (found under the write lock)."""

    def __init__(self, remote_id: str, holder: str) -> None:
        super().__init__(f"remote job {remote_id} is already held by job {holder}")
        self.remote_id = remote_id
        self.holder = holder


class Gate(Protocol):
    """Shared by the runners of one process (a batch's workers): a 429 that asks one of them to
    wait holds every request to that backend until then."""

    def wait(self, key: str, sleep: Callable[[float], None]) -> None: ...
    def hold(self, key: str, seconds: float) -> None: ...


class InFlight:
    """Jobs this process placed on each pool member and has not ended (thread-safe): a
    member's /queue shows a job only once it is posted, so two workers placing at once would
    both see an empty queue without this."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_job: dict[str, str] = {}
        self._placed_at: dict[str, datetime] = {}
        # Per member: when one of our jobs there last finished, and how long it ran (from its
        # placement or the one before it finishing, whichever was later): the queue-wait
        # estimate's time per prompt (the pool's overflow_after_s), recorded in MembersProbed.
        self._ended_at: dict[str, datetime] = {}
        self._run_s: dict[str, float] = {}
        # Held from a probe until its job's placement is recorded: two workers probing at once
        # would both see the same queues and pick the same member.
        self.placing = threading.Lock()

    def place(self, job_id: str, server: str | None, at: datetime | None = None) -> None:
        with self._lock:
            if server is None:
                self._by_job.pop(job_id, None)
                self._placed_at.pop(job_id, None)
            else:
                self._by_job[job_id] = server
                if at is not None:
                    self._placed_at[job_id] = at

    def succeeded(self, job_id: str, at: datetime) -> None:
        with self._lock:
            server, since = self._by_job.get(job_id), self._placed_at.get(job_id)
            if server is None or since is None:
                return
            start = max(since, self._ended_at.get(server, since))
            self._run_s[server] = max((at - start).total_seconds(), 0.0)
            self._ended_at[server] = at

    def run_times(self, urls: tuple[str, ...]) -> dict[str, float]:
        with self._lock:
            return {u: self._run_s[u] for u in urls if u in self._run_s}

    def counts(self, urls: tuple[str, ...]) -> dict[str, int]:
        with self._lock:
            placed = list(self._by_job.values())
        return {u: placed.count(u) for u in urls}


IN_FLIGHT = InFlight()  # one per process: every runner of a batch shares it


class Runner:
    """Drives jobs. Everything it touches outside the ledger comes in as an argument:
    `environment` (clock, sleep, env, pid, host), `http` and `streams` (the transports; the
    real urllib3 client and websocket by default), so a test can run it in-process.

    A runner in a worker thread (a batch) receives no signals: `interrupt` says what the main
    thread was told ("cancel" for Ctrl-C, a signal name for SIGTERM/SIGHUP, else None), and the
    runner acts on it between steps and while it waits, as the signal would in the main thread.
    `gate` (optional) is shared with the other workers of the process (see Gate).

    `admission` (the caller's budgets) and `held` (who holds a remote id) come from the
    application (runner/admission.py; imagen/app/runners.py wires them): the runner reads no
    projection and knows no budget. `image_mode` is the most an image file may allow (the
    umask takes away from it): the sidecar's privacy, which the application's config sets
    (`[output] private_sidecars`); private unless told otherwise."""

    def __init__(
        self,
        store: EventStore,
        environment: Environment | None = None,
        reporter: Reporter | None = None,
        *,
        http: HttpTransport | None = None,
        streams: StreamTransport | None = None,
        interrupt: Callable[[], str | None] | None = None,
        gate: Gate | None = None,
        admission: Admission,
        held: HeldIds,
        image_mode: int = 0o600,
        in_flight: InFlight | None = None,
    ) -> None:
        if http is None:
            from imagen.runner.http import Http

            http = Http()
        self.store = store
        self.envt = environment or Environment()
        self.reporter = reporter or NullReporter()
        self.http: HttpTransport = http
        self.streams: StreamTransport = streams or Websockets()
        self._stream: Stream | None = None
        self._secrets: set[str] = set()
        self._crash = self._crash_spec()
        self._appended: dict[str, int] = {}
        self._interrupt = interrupt
        self._delivered: str | None = None
        self._gate = gate
        self._admission = admission
        self._held = held
        self._image_mode = image_mode
        self._lease = lease_seconds(self.envt.env)
        self._in_flight = in_flight or IN_FLIGHT
        self._placing = False  # this runner holds self._in_flight.placing

    # -- the loop ----------------------------------------------------------------------------

    def submit(self, job_id: str, request: JobRequested) -> JobState:
        """Record a new job and claim it in one atomic append, if the caller's budgets allow
        its price (checked in the same step, under the ledger's write lock). Over budget, the
        job is recorded as failed (category budget) and nothing will be sent."""
        state = JobState(job_id)
        check = self._admission.guard(request)
        if check is not None:
            self._admission.prepare(request)
        try:
            return self._append(state, [request, self._claim(resumed=False)], guard=check)
        except Refused as refused:
            failed = JobFailed(refused.reason, f"job {job_id}: {refused}", refused.category)
            return self._append(state, [request, failed])

    def submit_many(self, jobs: list[tuple[str, JobRequested]], *, claimed: bool = True) -> None:
        """Record several new jobs, each claimed by this process, in one transaction (a batch
        records its members before running any, so a crash leaves each one resumable).
        Unclaimed (`generate --detach`): recorded for a worker to claim and drive."""
        if not jobs:
            return
        claim = [self._claim(resumed=False)] if claimed else []
        checks = [self._admission.guard(request) for _, request in jobs]
        for (_, request), check in zip(jobs, checks, strict=True):
            if check is not None:
                self._admission.prepare(request)
                break
        with _signals_deferred(), self.store.transaction() as conn:
            for (job_id, request), check in zip(jobs, checks, strict=True):
                new = [self._to_new(e) for e in (request, *claim)]
                try:
                    # Each member's budget check sees the members recorded before it in this
                    # transaction: a batch cannot overrun a budget any more than 8 processes.
                    self.store.append(job_id, new, 0, conn=conn, guard=check)
                except Refused as refused:
                    failed = JobFailed(refused.reason, f"job {job_id}: {refused}", refused.category)
                    self.store.append(job_id, [new[0], self._to_new(failed)], 0, conn=conn)
                except ConcurrencyError as exc:
                    raise JobTakenOver(f"job {job_id} already exists") from exc

    def run(
        self,
        job_id: str,
        state: JobState | None = None,
        *,
        resumed: bool = False,
        claim: bool = False,
        extra: list[Event] | None = None,
    ) -> JobState:
        """Drive the job to its end. `resumed` or `claim`: take it first (a RunnerClaimed
        appended at the version read, so of two processes taking one job, one fails with
        JobTakenOver); `claim` alone takes a job recorded unclaimed (`generate --detach`)."""
        state = state or load(self.store, job_id)
        if state.request is None:
            raise RunnerError(f"job {job_id} has no request")
        if state.from_newer_imagen:
            # Deciding without events this imagen cannot read could re-create a remote job
            # that a newer imagen already holds (and pay twice): let the newer imagen finish it.
            first = state.from_newer_imagen[0]
            raise Halted(
                f"event {first.version} ({_event_name(first)}) was written by a newer imagen; "
                "resume this job with that version"
            )
        self._delivered = None
        if resumed or claim:
            state = self._append(state, [self._claim(resumed=resumed), *(extra or [])])
        elif extra:
            state = self._append(state, list(extra))
        self._adapter = backends.load(state.request.backend_type)
        with self._signals():
            try:
                for _ in range(MAX_STEPS):
                    if state.finished or state.interrupted is not None:
                        break  # interrupted: the adapter left the job for `imagen resume`
                    try:
                        self._check_interrupt()
                        state = self._renew_lease(state)
                        # The adapter of the job's backend now (an overflow changes it).
                        state = self._perform(state, self._adapter.decide(state))
                    except KeyboardInterrupt:
                        state = load(self.store, job_id)
                        if state.cancel is not None or state.finished:
                            raise
                        from imagen.core.events import CancelRequested

                        state = self._append(state, [CancelRequested("user")])
                else:
                    state = self._append(
                        state,
                        [JobFailed("internal", "the adapter did not finish", Failure.UNEXPECTED)],
                    )
            except Terminated as t:
                state = load(self.store, job_id)
                if not state.finished:
                    state = self._append(state, [JobInterrupted(t.signame)])
            finally:
                self._close_stream()
                self._release_placing()
                self._in_flight.place(job_id, None)
        return state

    # -- performing actions ------------------------------------------------------------------

    def _perform(self, state: JobState, action: Action) -> JobState:
        if isinstance(action, Record):
            return self._record(state, list(action.events))
        if isinstance(action, Halt):
            raise Halted(action.message, action.category)
        if isinstance(action, HttpRequest):
            return self._http(state, action)
        if isinstance(action, StoreImage):
            return self._store_image(state, action)
        if isinstance(action, OpenStream):
            return self._open_stream(state, action)
        if isinstance(action, FollowStream):
            return self._follow_stream(state, action)
        if isinstance(action, CheckHeld):
            return self._check_held(state, action)
        if isinstance(action, ProbeMembers):
            return self._probe_members(state, action)
        raise RunnerError(f"unknown action {action!r}")

    def _record(self, state: JobState, events: list[Event]) -> JobState:
        """Append what the adapter decided; an adoption of a looked-up remote job is guarded,
        so that no other job adopted it since this job's RemoteIdsHeld check."""
        spill = next((e for e in events if isinstance(e, JobOverflowed)), None)
        if spill is not None:
            return self._overflow(state, spill)
        adopted = [
            e.remote_id
            for e in events
            if isinstance(e, RemoteJobAccepted) and e.via is AcceptedVia.LOOKUP
        ]
        if not adopted:
            return self._append(state, events)

        def check(view: LockedView) -> None:
            for remote_id in adopted:
                holder = self._held.holder_under_lock(view, remote_id, except_job=state.job_id)
                if holder is not None:
                    raise _RemoteIdTaken(remote_id, holder)

        try:
            return self._append(state, events, guard=check)
        except _RemoteIdTaken as taken:
            # Recorded as the answer to a check, so the adapter decides again without it.
            held = RemoteIdsHeld([taken.remote_id], {taken.remote_id: taken.holder})
            return self._append(state, [held])

    def _probe_members(self, state: JobState, a: ProbeMembers) -> JobState:
        """Ask every member the same GET; record what each said (sizes of its lists), with this
        process's jobs in flight on each."""
        from imagen.runner.http import TransportFailure

        self._release_placing()
        self._wait_until(a.not_before)
        while not self._in_flight.placing.acquire(timeout=0.1):
            self._check_interrupt()
        self._placing = True
        headers = self._auth(a.auth_env)
        answers: dict[str, Any] = {}
        for url in a.urls:
            try:
                reply = self.http.send(
                    "GET", f"{url}{a.path}", headers=headers, timeout_s=a.timeout_s
                )
            except TransportFailure as f:
                answers[url] = {"error": f.kind, "message": str(f)[:200]}
                continue
            body = reply.body()
            sizes = (
                {k: len(v) for k, v in body.items() if isinstance(v, list)}
                if isinstance(body, dict)
                else {}
            )
            answers[url] = {"status": reply.status, "sizes": sizes}
        ours = self._in_flight.counts(a.urls)
        ran = self._in_flight.run_times(a.urls)
        return self._append(state, [MembersProbed(answers, ours, ran)])

    def _overflow(self, state: JobState, spill: JobOverflowed) -> JobState:
        """The job becomes the overflow backend's, a paid job: admitted against the caller's
        budgets under the write lock as it is recorded, exactly as a paid job is when first
        recorded (over budget: the job fails, nothing sent)."""
        after = evolve(state, Recorded(spill, state.version + 1, state.now or self.envt.clock()))
        assert after.request is not None
        check = self._admission.guard(after.request)
        if check is not None:
            self._admission.prepare(after.request)
        try:
            state = self._append(state, [spill], guard=check)
        except Refused as refused:
            failed = JobFailed(
                refused.reason, f"job {state.job_id}: overflow {spill.backend}: {refused}",
                refused.category,
            )  # fmt: skip
            return self._append(state, [failed])
        assert state.request is not None
        self._adapter = backends.load(state.request.backend_type)
        return state

    def _release_placing(self) -> None:
        if self._placing:
            self._placing = False
            self._in_flight.placing.release()

    def _check_held(self, state: JobState, a: CheckHeld) -> JobState:
        """Ask the ledger which remote ids other jobs hold, and record the answer."""
        held = self._held.holders(list(a.remote_ids), except_job=state.job_id)
        return self._append(state, [RemoteIdsHeld(list(a.remote_ids), held)])

    def _auth(self, auth_env: str | None, url: str = "") -> dict[str, str]:
        if not auth_env:
            return {}
        if _has_userinfo(url):
            # Defence in depth (adapters compare origins): `http://api@evil/` goes to evil.
            return {}
        token = self.envt.env.get(auth_env, "")
        if not token:
            raise MissingCredential(auth_env)
        self._secrets.add(token)
        return {"Authorization": f"Bearer {token}"}

    def _check_interrupt(self) -> None:
        """In a worker thread: act once on what the main thread was told (see the class doc)."""
        if self._interrupt is None:
            return
        what = self._interrupt()
        if what is None or what == self._delivered:
            return
        self._delivered = what
        if what == "cancel":
            raise KeyboardInterrupt
        raise Terminated(what)

    def _sleep(self, seconds: float) -> None:
        self.envt.sleep(seconds)
        self._check_interrupt()

    def _wait_until(self, when: str | None) -> None:
        if when:
            delay = (parse_time(when) - self.envt.clock()).total_seconds()
            if delay > 0:
                self._sleep(delay)

    def _through_gate(self, state: JobState) -> None:
        if self._gate is not None and state.request is not None:
            self._gate.wait(state.request.backend, self._sleep)

    def _after_reply(self, state: JobState, status: int, headers: Any) -> None:
        """A 429 asking to wait holds the other workers of this backend too (their requests
        would only be refused); the retry itself is the adapter's, recorded as ever."""
        if self._gate is None or status != 429 or state.request is None:
            return
        seconds = _retry_after_s(headers, self.envt.clock())
        if seconds is not None:
            self._gate.hold(state.request.backend, seconds)

    def _http(self, state: JobState, a: HttpRequest) -> JobState:
        from imagen.runner.http import TransportFailure

        self._wait_until(a.not_before)
        self._through_gate(state)
        headers = {**dict(a.headers), **self._auth(a.auth_env, a.url)}
        state = self._append(
            state,
            [
                RequestSent(
                    a.request_id, a.purpose, a.method, a.url, redact_headers(headers), a.json_body
                )
            ],
        )
        # Again: a 429 answered to another worker while this one recorded its request.
        self._through_gate(state)
        started = time.perf_counter()
        try:
            reply = self.http.send(
                a.method, a.url, headers=headers, json_body=a.json_body, timeout_s=a.timeout_s
            )
        except TransportFailure as f:
            return self._append(
                state, [RequestFailed(a.request_id, a.purpose, f.kind, str(f), _ms(started))]
            )
        self._after_reply(state, reply.status, reply.headers)
        summary: list[Event] = []
        if a.repeat_for_s > 0 and a.method == "GET":
            state, reply, summary, failure = self._repeat(state, a, headers, reply)
            if failure is not None:
                return self._append(state, [*summary, failure])
        keep = self._adapter.RECORDED_HEADERS
        kept = {k: v for k, v in reply.headers.items() if k.lower() in keep}
        return self._append(
            state,
            [
                *summary,
                ResponseReceived(
                    a.request_id, a.purpose, reply.status, kept, reply.body(), _ms(started)
                ),
            ],
        )

    def _repeat(
        self, state: JobState, a: HttpRequest, headers: dict[str, str], reply: Any
    ) -> tuple[JobState, Any, list[Event], Event | None]:
        """Send the same GET again while its answer stays the same (a poll): the repeats are
        summarised as one PollsUnchanged. Returns the answer to record (the first different
        one, or the last when the time is up) or the failure that ended the polling."""
        from imagen.runner.http import TransportFailure

        begun = self.envt.clock()
        until = begun + timedelta(seconds=a.repeat_for_s)
        delay = max(a.repeat_every_s, 0.05)
        first, repeats = (reply.status, reply.body()), 0
        failure: Event | None = None
        while self.envt.clock() + timedelta(seconds=delay) < until:
            self._sleep(delay)
            state = self._renew_lease(state)
            delay = min(delay * 1.5, 5.0)
            started = time.perf_counter()
            try:
                again = self.http.send(a.method, a.url, headers=headers, timeout_s=a.timeout_s)
            except TransportFailure as f:
                failure = RequestFailed(a.request_id, a.purpose, f.kind, str(f), _ms(started))
                break
            if (again.status, again.body()) != first:
                reply = again
                break
            repeats += 1
        seconds = round((self.envt.clock() - begun).total_seconds(), 3)
        summary: list[Event] = (
            [PollsUnchanged(a.request_id, a.purpose, repeats, seconds)] if repeats else []
        )
        return state, reply, summary, failure

    def _store_image(self, state: JobState, a: StoreImage) -> JobState:
        from imagen.runner.files import FileExists, NotRegular, atomic_write
        from imagen.runner.http import TransportFailure
        from imagen.runner.images import InvalidImage, check, decode_data_uri

        self._wait_until(a.not_before)
        is_data = a.url.startswith("data:")
        shown = f"{a.url.split(',', 1)[0]},…({len(a.url)} chars)" if is_data else a.url
        headers = {**dict(a.headers), **self._auth(a.auth_env, a.url)}
        purpose = "check" if a.check_only else "download"
        state = self._append(
            state, [RequestSent(a.request_id, purpose, "GET", shown, redact_headers(headers))]
        )
        started = time.perf_counter()

        def failed(kind: str, message: str) -> JobState:
            return self._append(
                state, [RequestFailed(a.request_id, purpose, kind, message, _ms(started))]
            )

        try:
            if is_data:
                data = decode_data_uri(a.url)
            else:
                reply = self.http.send(
                    "GET", a.url, headers=headers, timeout_s=a.timeout_s, max_bytes=a.max_bytes
                )
                if reply.status != 200:
                    body = reply.data[:500].decode("utf-8", "replace")
                    return self._append(
                        state,
                        [
                            ResponseReceived(
                                a.request_id, purpose, reply.status, {}, body, _ms(started)
                            )
                        ],
                    )
                data = reply.data
            info = check(data, a.expected_format)
        except TransportFailure as f:
            return failed(f.kind, str(f))
        except InvalidImage as exc:
            return failed("invalid_image", str(exc))
        if a.check_only:
            checked = {"bytes": len(data), "format": info.format}
            return self._append(
                state, [ResponseReceived(a.request_id, purpose, 200, {}, checked, _ms(started))]
            )
        import hashlib

        dest = Path(a.dest)
        try:
            atomic_write(dest, data, overwrite=a.overwrite, mode=self._image_mode)
        except (FileExists, NotRegular) as exc:
            return failed("exists", str(exc))
        except OSError as exc:
            return failed("write", f"cannot write {dest}: {exc.strerror}")
        return self._append(
            state,
            [
                ResponseReceived(
                    a.request_id, "download", 200, {}, {"bytes": len(data)}, _ms(started)
                ),
                ImageStored(
                    str(dest),
                    hashlib.sha256(data).hexdigest(),
                    len(data),
                    info.format,
                    info.width,
                    info.height,
                    shown,
                    a.index,
                    info.frames,
                ),
            ],
        )

    def _open_stream(self, state: JobState, a: OpenStream) -> JobState:
        self._close_stream()
        self._wait_until(a.not_before)
        rid = f"stream-{state.version + 1}"
        headers = self._auth(a.auth_env)
        state = self._append(
            state, [RequestSent(rid, "stream", "GET", a.url, redact_headers(headers))]
        )
        started = time.perf_counter()
        try:
            self._stream = self.streams.connect(a.url, headers=headers, timeout_s=a.timeout_s)
        except StreamRejected as exc:  # the server answered, but not as a websocket
            return self._append(
                state, [RequestFailed(rid, "stream", "handshake", str(exc)[:300], _ms(started))]
            )
        except Exception as exc:  # refused, reset, timeout: nothing answered
            return self._append(
                state, [RequestFailed(rid, "stream", "unreachable", _short(exc), _ms(started))]
            )
        return self._append(
            state,
            [
                ResponseReceived(rid, "stream", 101, {}, None, _ms(started)),
                StreamOpened(a.url, a.client_id),
            ],
        )

    def _follow_stream(self, state: JobState, a: FollowStream) -> JobState:
        """Read frames and hand each to the adapter's pure `interpret_frame`; record the
        events it returns and show the progress it returns. No protocol knowledge lives here."""
        if self._stream is None:
            return self._append(state, [StreamClosed("not open", "no stream in this process")])
        deadline = parse_time(a.deadline) if a.deadline else None
        context = a.context
        if a.waiting is not None:
            self.reporter.progress(a.waiting.step, a.waiting.total, a.waiting.label)
        heard = self.envt.clock()  # the last frame the adapter said something of
        while True:
            now = self.envt.clock()
            if deadline is not None and now >= deadline:
                return self._append(
                    state, [StreamClosed("deadline", "no result before the deadline")]
                )
            wait = 1.0
            if a.quiet_s is not None:
                left = a.quiet_s - (now - heard).total_seconds()
                if left <= 0:
                    return self._append(state, [StreamQuiet(round(a.quiet_s, 3))])
                wait = min(wait, max(left, 0.01))
            try:
                frame = self._stream.recv(timeout=wait)
            except TimeoutError:
                self._check_interrupt()
                state = self._renew_lease(state)
                continue
            except StreamDropped as exc:
                self._stream = None
                return self._append(state, [StreamClosed("dropped", str(exc)[:300])])
            try:
                out = self._adapter.interpret_frame(context, frame)
                if not all(map(_recordable_depth, out.events)):
                    out = None
            except (ValueError, TypeError, RecursionError):
                out = None
            # None: a frame no event can hold (1e400, nesting past any API's depth) is skipped,
            # as adapters skip any malformed frame; the job's polling still finds its end.
            if out is not None:
                context = out.context
                if out.events or out.progress is not None or out.done:
                    heard = self.envt.clock()
                if out.progress is not None:
                    self.reporter.progress(
                        out.progress.step, out.progress.total, out.progress.label
                    )
                if out.events:
                    state = self._append(state, list(out.events))
                if out.done:
                    return state
            self._check_interrupt()
            state = self._renew_lease(state)

    def _close_stream(self) -> None:
        if self._stream is not None:
            try:
                self._stream.close()
            except Exception:
                pass
            self._stream = None

    # -- recording ---------------------------------------------------------------------------

    def _claim(self, *, resumed: bool) -> RunnerClaimed:
        return RunnerClaimed(
            self.envt.pid,
            self.envt.host,
            self._lease,
            proc_start(self.envt.pid),
            resumed,
        )

    def _renew_lease(self, state: JobState) -> JobState:
        if state.claim_at is None or state.claim is None:
            return state
        if (self.envt.clock() - state.claim_at).total_seconds() > self._lease / 3:
            return self._append(state, [RunnerRenewed(self.envt.pid, self._lease)])
        return state

    def _to_new(self, event: Event) -> NewEvent:
        data = event.to_data()
        if self._secrets:
            data = redact.scrub(data, redact.secret_pattern(frozenset(self._secrets)))
        return NewEvent(event.type_name(), data, event.SCHEMA_VERSION)

    def _append(self, state: JobState, events: list[Event], guard: Guard | None = None) -> JobState:
        if not events:
            return state
        events = self._spend_at_end(state, events)
        new = [self._to_new(e) for e in events]
        with _signals_deferred():
            try:
                recorded = self.store.append(
                    state.job_id, new, expected_version=state.version, guard=guard
                )
            except ConcurrencyError as exc:
                raise JobTakenOver(
                    f"job {state.job_id} was changed by another process; it is driven elsewhere"
                ) from exc
            for rec in recorded:
                state = evolve(state, to_recorded(rec))
        for rec in state.history[-len(recorded) :]:
            if isinstance(rec.event, JobPlaced):
                self._in_flight.place(state.job_id, rec.event.server, rec.at)
            elif isinstance(rec.event, JobMoved):
                self._in_flight.place(state.job_id, None)
            elif isinstance(rec.event, JobSucceeded):
                self._in_flight.succeeded(state.job_id, rec.at)
        if self._placing and not any(isinstance(e, MembersProbed) for e in events):
            self._release_placing()  # what the probe led to is recorded (a placement, a failure)
        for rec in state.history[-len(recorded) :]:
            self.reporter.event(state, rec)
            self._maybe_crash(rec)
        return state

    def _spend_at_end(self, state: JobState, events: list[Event]) -> list[Event]:
        """Each terminal event with what its job commits against budgets (SPEND_AT_END),
        computed by the application over the job as it will be once the end is recorded."""
        if not any(type(e).__name__ in TERMINAL_TYPES for e in events):
            return events
        out: list[Event] = []
        ahead = state
        for e in events:
            if type(e).__name__ in TERMINAL_TYPES and getattr(e, "spend", None) is None:
                at = ahead.now or datetime.now(UTC)  # the time plays no part in the figure
                spend = self._admission.at_end(evolve(ahead, Recorded(e, ahead.version + 1, at)))
                if spend is not None:
                    e = dataclasses.replace(e, spend=spend)  # type: ignore[type-var]
            ahead = evolve(ahead, Recorded(e, ahead.version + 1, ahead.now or datetime.now(UTC)))
            out.append(e)
        return out

    # -- crash injection (tests only) --------------------------------------------------------

    def _crash_spec(self) -> tuple[str, int] | None:
        if not self.envt.testing or not self.envt.env.get("IMAGEN_CRASH_AFTER"):
            return None
        name, _, n = self.envt.env["IMAGEN_CRASH_AFTER"].partition(":")
        return name, int(n or 1)

    def _maybe_crash(self, rec: Recorded) -> None:
        if self._crash is None:
            return
        name = type(rec.event).__name__
        self._appended[name] = self._appended.get(name, 0) + 1
        if name == self._crash[0] and self._appended[name] == self._crash[1]:
            os.kill(os.getpid(), signal.SIGKILL)

    @contextmanager
    def _signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def stop(signum: int, _frame: object) -> None:
            raise Terminated(signal.Signals(signum).name)

        old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
        try:
            yield
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP while an append commits and the state catches up, so an
    interruption never lands between the database and our view of it. Blocking them here holds
    them only because no other thread of the process takes them (runner/signals.py)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with signals.blocked():
        yield


def _has_userinfo(url: str) -> bool:
    from urllib.parse import urlsplit

    try:
        return "@" in urlsplit(url).netloc
    except ValueError:
        return True


def _retry_after_s(headers: Any, now: Any) -> float | None:
    """Retry-After as seconds from now (delta-seconds or an HTTP date), or None."""
    value = None
    for k, v in dict(headers or {}).items():
        if k.lower() == "retry-after":
            value = str(v).strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            seconds = (parsedate_to_datetime(value) - now).total_seconds()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    # A server asking for a day is the adapter's to refuse (a resumable stop), not a reason to
    # freeze every worker that long.
    return min(max(seconds, 0.0), 60.0) if seconds == seconds else None


def _recordable_depth(event: Event) -> bool:
    """Is the event nested no deeper than a reply may be (runner/http.py MAX_DEPTH)? Deeper,
    recording it would overflow the recursive walks that check, scrub and encode it."""
    from dataclasses import fields

    from imagen.runner.http import MAX_DEPTH, depth_at_most

    return depth_at_most([getattr(event, f.name) for f in fields(event)], MAX_DEPTH + 1)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


__all__ = ["Runner", "load", "SECRET_HEADERS"]


def _event_name(rec: Recorded) -> str:
    from imagen.core.events import UnknownEvent

    e = rec.event
    return e.type if isinstance(e, UnknownEvent) else type(e).__name__
