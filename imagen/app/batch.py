"""Batches: many images from one command, each its own job, run by a few workers at once.

A batch is recorded in its members: every job's JobRequested carries the batch id, its place in
the batch and the index of the input it came from (docs/architecture.md, "Batches"). The steps:

1. validate: every input is parsed and prepared exactly as a lone `generate` would be (backend,
   ranges, output names), streaming the source; the first bad one is a one-line error naming its
   line, and nothing is recorded (exit 2);
2. record: the same inputs again (the same seeds and file names), each job's output names
   reserved and its request recorded, claimed by this process, a chunk per transaction. From here
   every member is a job that `imagen resume` can finish whatever happens to this process;
3. run: worker threads, a few per backend, each with its own Runner (the loop that drives a lone
   job), sharing the store, a rate-limit gate per backend and the stop flag set by Ctrl-C or
   SIGTERM/SIGHUP. A finished job's state is dropped once reported: memory stays flat however
   long the source.
"""

from __future__ import annotations

import dataclasses
import os
import random
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from imagen.app.config import Config
from imagen.app.errors import UserError
from imagen.app.exit_codes import ExitCode
from imagen.core.batch import Input, Member, inputs_from_lines, inputs_from_prompts, members
from imagen.core.events import JobRequested
from imagen.core.inputs import BadInput, GenerateInputs, parse_options, parse_size
from imagen.core.job import JobState, image_count, image_path
from imagen.runner import signals
from imagen.runner.environment import Environment

DEFAULT_CONCURRENCY = {"replicate": 12, "comfyui": 2}  # ComfyUI: one running, the next queued
FALLBACK_CONCURRENCY = 4
CHUNK = 64  # members recorded per transaction


def new_batch_id() -> str:
    return secrets.token_hex(8)


# -- the source ----------------------------------------------------------------------------------


class Source:
    """The prompts of a batch, readable twice (validate, then record) without holding them:
    positional prompts, a file, or standard input spooled to a temporary file."""

    def __init__(self, prompts: list[str] | None = None, path: str | None = None) -> None:
        self.prompts = prompts
        self.path = path
        self._spool: IO[bytes] | None = None

    @classmethod
    def from_stream(cls, stream: IO[bytes]) -> Source:
        import tempfile

        spool = tempfile.TemporaryFile()
        while chunk := stream.read(1 << 16):
            spool.write(chunk)
        src = cls(path="-")
        src._spool = spool
        return src

    def lines(self) -> Iterator[tuple[int, str]]:
        if self._spool is not None:
            self._spool.seek(0)
            yield from _decoded(self._spool, "standard input")
            return
        assert self.path is not None
        try:
            fh = open(Path(self.path).expanduser(), "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise UserError(f"--from {self.path}: {exc.strerror}") from None
        with fh:
            yield from _decoded(fh, self.path)

    def inputs(self, defaults: Input) -> Iterator[Input]:
        if self.prompts is not None:
            return inputs_from_prompts(self.prompts, defaults)
        return inputs_from_lines(self.lines(), defaults)

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()


def _decoded(fh: IO[bytes], name: str) -> Iterator[tuple[int, str]]:
    for n, raw in enumerate(fh, start=1):
        try:
            yield n, raw.decode("utf-8").lstrip("\ufeff") if n == 1 else raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadInput(f"line {n} of {name}: not valid UTF-8") from None


# -- planning: the same members, the same names, twice ------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What the command asked for, fixed once so validating and recording see the same batch."""

    config: Config
    env: Environment  # its clock is frozen at the batch's start: file names do not drift
    defaults: Input
    per_job: int
    output_dir: str | None
    overwrite: bool
    caller: str
    overflow: str | None = None  # --overflow: the paid backend a pool's member job may go to
    seed_of_seeds: int = field(default_factory=lambda: secrets.randbits(64))

    def members(self, source: Source) -> Iterator[Member]:
        rng = random.Random(self.seed_of_seeds)
        return members(source.inputs(self.defaults), lambda: rng.randint(1, 2**31 - 1))

    def prepare(self, member: Member) -> Any:
        from imagen.app.prepare import prepare

        item = member.input
        try:
            inputs = GenerateInputs(
                prompt=item.prompt,
                seed=member.seed,
                size=parse_size(item.size) if item.size else None,
                aspect=item.aspect,
                steps=item.steps,
                output_format=item.format,
                extra=dict(item.options),
                count=self.per_job,
            )
            if item.size and item.aspect:
                raise BadInput("give size or aspect, not both")
            return prepare(
                self.config,
                item.backend,
                inputs,
                output=self.output_dir,
                overwrite=self.overwrite,
                env=self.env,
                caller=self.caller,
                overflow=self.overflow,
            )
        except (BadInput, UserError) as exc:
            code = exc.code if isinstance(exc, UserError) else ExitCode.BAD_INPUT
            raise UserError(f"{item.where}: {exc}", code) from None


def make_plan(
    config: Config,
    env: Environment,
    *,
    backend: str | None,
    size: str | None,
    aspect: str | None,
    seed: int | None,
    steps: int | None,
    output_format: str | None,
    options: list[str],
    count: int,
    per_job: int,
    output: str | None,
    overwrite: bool,
    caller: str,
    overflow: str | None = None,
) -> Plan:
    from imagen.core.batch import check_count
    from imagen.core.inputs import EXTENSION_FORMATS

    try:
        check_count(count)
        extra = parse_options(options)
        if size:
            parse_size(size)
    except BadInput as exc:
        raise UserError(str(exc)) from None
    if size and aspect:
        raise UserError("give --size or --aspect, not both")
    output_dir = None
    if output:
        dest = Path(output).expanduser()
        if dest.exists() and not dest.is_dir():
            raise UserError(f"--output {output} is a file; with several images, give a directory")
        if not dest.exists() and dest.suffix.lower() in EXTENSION_FORMATS:
            raise UserError(
                f"--output {output} names one image; with several images, give a directory"
            )
        output_dir = str(dest) + os.sep
    now = env.clock()
    frozen = dataclasses.replace(env, clock=lambda: now)
    defaults = Input(
        index=0,
        where="",
        prompt="",
        count=count,
        seed=seed,
        size=size,
        aspect=aspect,
        steps=steps,
        backend=backend,
        format=output_format,
        options=extra,
    )
    if overflow is not None:
        from imagen.app.prepare import check_overflow

        check_overflow(config, overflow)  # once, before any line is read
    return Plan(config, frozen, defaults, per_job, output_dir, overwrite, caller, overflow)


def validate(plan: Plan, source: Source, note: Callable[[str], None]) -> int:
    """Check every member as `generate` would, before anything is recorded. Returns how many.

    File names are remembered (one string per image) so that two members never write one file."""
    names: dict[str, str] = {}
    notes: set[str] = set()
    n = 0
    for member in plan.members(source):
        prepared = plan.prepare(member)
        for text in prepared.notes:
            if text not in notes:
                notes.add(text)
                note(text)
        for i in range(image_count(prepared.request)):
            path = image_path(prepared.request.output_path, i)
            other = names.get(path)
            if other is not None:
                raise UserError(
                    f"{member.input.where}: writes {path}, as {other} does (same prompt and "
                    "seed); give another seed"
                )
            names[path] = member.input.where
        n += 1
    if n == 0:
        raise UserError("no prompts: the input has no lines to draw")
    return n


# -- recording ----------------------------------------------------------------------------------


@dataclass
class Recorded:
    batch_id: str
    queues: dict[str, deque[str]]  # backend -> job ids, in batch order
    backend_types: dict[str, str]
    total: int = 0
    refused: list[tuple[str, UserError]] = field(default_factory=list)  # not recorded


def record(
    plan: Plan,
    source: Source,
    runner: Any,
    batch_id: str,
    stop: Stop | None = None,
    *,
    detached: bool = False,
    reserve: bool = True,
) -> Recorded:
    """Record every member (its output names reserved first), a chunk per transaction.
    `detached`: recorded unclaimed, for a worker (`generate --detach`); `reserve=False`: the
    names are left to the machine that writes them (a worker elsewhere).

    A member whose output name was taken since validation (another process) is not recorded
    and is reported; the others go ahead. Ctrl-C stops recording where it is: what is recorded
    is then cancelled by the run, as the rest of the batch would be. SIGTERM/SIGHUP do not:
    recording is quick, and every member recorded is one `imagen resume` can finish."""
    from imagen.app.prepare import release_output, reserve_output

    out = Recorded(batch_id, {}, {})
    chunk: list[tuple[str, JobRequested]] = []

    def flush() -> None:
        try:
            runner.submit_many(chunk, claimed=not detached)
        except BaseException:
            for _, req in chunk:
                release_output(req, False)
            raise
        for job_id, req in chunk:
            out.queues.setdefault(req.backend, deque()).append(job_id)
            out.backend_types[req.backend] = req.backend_type
            out.total += 1
        chunk.clear()

    for member in plan.members(source):
        if stop is not None and stop.value == "cancel":
            break
        try:
            prepared = plan.prepare(member)
        except UserError as exc:  # changed since validation (a file made by another process)
            out.refused.append((member.input.where, exc))
            continue
        request = dataclasses.replace(
            prepared.request,
            batch=batch_id,
            batch_index=member.index,
            batch_input=member.input.index,
        )
        try:
            if reserve:
                reserve_output(request)
        except UserError as exc:
            out.refused.append((member.input.where, exc))
            continue
        chunk.append((prepared.job_id, request))
        if len(chunk) >= CHUNK:
            flush()
    if chunk:
        flush()
    return out


# -- running ------------------------------------------------------------------------------------


class Stop:
    """What the main thread was told: None, "cancel" (Ctrl-C) or a signal name (SIGTERM,
    SIGHUP). Workers read it between steps (Runner's `interrupt`)."""

    def __init__(self) -> None:
        self.value: str | None = None

    def cancel(self) -> None:
        if self.value is None:
            self.value = "cancel"

    def terminate(self, signame: str) -> None:
        self.value = signame

    def get(self) -> str | None:
        return self.value

    @property
    def terminating(self) -> bool:
        return self.value not in (None, "cancel")


class Gate:
    """Per backend: the time before which no request may be sent (a 429's Retry-After)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until: dict[str, float] = {}

    def hold(self, key: str, seconds: float) -> None:
        with self._lock:
            until = time.monotonic() + seconds
            if until > self._until.get(key, 0.0):
                self._until[key] = until

    def wait(self, key: str, sleep: Callable[[float], None]) -> None:
        while True:
            with self._lock:
                left = self._until.get(key, 0.0) - time.monotonic()
            if left <= 0:
                return
            sleep(left)


@dataclass(frozen=True)
class Outcome:
    """One member's end as the command reports it (the state itself is not kept)."""

    job_id: str
    code: ExitCode
    message: str | None
    summary: dict[str, Any]
    images: tuple[str, ...]
    status: str
    spent: str | None


def run_one(
    runner: Any,
    store: Any,
    job_id: str,
    sidecar_mode: int,
    resume: Callable[[JobState], None] | None = None,
) -> Outcome:
    """Drive one member to its end (or to a stop) and write its files, as `generate` does.

    With `resume` (`imagen resume` of many jobs): the job is claimed anew (RunnerClaimed,
    resumed), after `resume(state)` has checked it may be (raising UserError if not)."""
    from imagen.app.contract import job_object
    from imagen.app.outcome import FAILURE_EXIT_CODES, exit_code, failure_message
    from imagen.app.prepare import release_output
    from imagen.app.sidecars import write_sidecar
    from imagen.repository import load
    from imagen.runner.loop import Halted, JobTakenOver, MissingCredential

    message: str | None = None
    code: ExitCode | None = None
    try:
        state0 = load(store, job_id)
        if resume is None:
            runner.run(job_id, state0)
        elif not state0.finished:
            resume(state0)
            # Taken anew; a job recorded unclaimed (`generate --detach`) is taken, not resumed.
            runner.run(job_id, state0, resumed=state0.claim is not None, claim=True)
    except UserError as exc:
        code, message = exc.code, str(exc)
    except JobTakenOver as exc:
        code, message = ExitCode.CONFLICT, str(exc)
    except MissingCredential as exc:
        code, message = ExitCode.BACKEND_UNAVAILABLE, str(exc)
    except Halted as exc:
        code = FAILURE_EXIT_CODES[exc.category] if exc.category else ExitCode.CONFLICT
        message = f"job {job_id}: {exc}"
    except KeyboardInterrupt:
        code = ExitCode.INTERRUPTED
    state: JobState = load(store, job_id)
    if state.finished:
        release_output(state.request, {i.path for i in state.images})
    write_sidecar(state, sidecar_mode)
    if code is None:
        code = exit_code(state, runner.envt)
    if message is None and code != ExitCode.OK:
        message = failure_message(state)
    req = state.request
    where = (
        {"index": req.batch_input, "batch": req.batch, "batch_index": req.batch_index}
        if req is not None and req.batch
        else {}
    )
    return Outcome(
        job_id,
        code,
        message,
        {**where, **job_object(state, env=runner.envt)},
        tuple(i.path for i in state.images),
        state.status,
        _spent(state),
    )


def _spent(state: JobState) -> str | None:
    """What the job cost: the one figure (imagen/projections/cost.py)."""
    from imagen.projections.cost import cost_usd

    return cost_usd(state)


def concurrency(recorded: Recorded, config: Config, override: int | None) -> dict[str, int]:
    limits: dict[str, int] = {}
    for backend, queue in recorded.queues.items():
        if override is not None:
            limit = override
        else:
            known = config.backends.get(backend)  # a backend since removed from the config
            configured = known.options.get("max_concurrency") if known else None
            # A ComfyUI pool (`urls`): every member gets the depth one server gets.
            servers = len(known.options.get("urls") or ()) if known else 0
            limit = (
                int(configured)
                if configured
                else DEFAULT_CONCURRENCY.get(
                    recorded.backend_types.get(backend, ""), FALLBACK_CONCURRENCY
                )
                * max(servers, 1)
            )
        limits[backend] = max(1, min(limit, len(queue)))
    return limits


def start_workers(
    store: Any,
    env: Environment,
    recorded: Recorded,
    limits: dict[str, int],
    stop: Stop,
    on_done: Callable[[Outcome], None],
    *,
    sidecar_mode: int,
    reporter: Callable[[], Any] | None = None,
    on_start: Callable[[str], None] | None = None,
    resume: Callable[[JobState], None] | None = None,
) -> list[threading.Thread]:
    """Start the workers (daemon threads: a second Ctrl-C exits without waiting for them)."""
    from imagen.app.runners import new_runner

    gate = Gate()
    threads: list[threading.Thread] = []

    def work(queue: deque[str]) -> None:
        runner = new_runner(
            store,
            env,
            reporter() if reporter else None,
            interrupt=stop.get,
            gate=gate,
            image_mode=sidecar_mode,
        )
        while not stop.terminating:
            try:
                job_id = queue.popleft()
            except IndexError:
                return
            if on_start is not None:
                on_start(job_id)
            try:
                outcome = run_one(runner, store, job_id, sidecar_mode, resume)
            except Exception as exc:  # a bug or the ledger failing: this member, said once
                outcome = Outcome(
                    job_id,
                    ExitCode.INTERNAL,
                    f"job {job_id}: internal error ({type(exc).__name__}: {str(exc)[:200]}); "
                    f"`imagen resume {job_id}` may finish it",
                    {"job_id": job_id, "status": "interrupted"},
                    (),
                    "interrupted",
                    None,
                )
            on_done(outcome)

    for backend, queue in recorded.queues.items():
        for n in range(limits[backend]):
            t = threading.Thread(
                target=work, args=(queue,), name=f"imagen-{backend}-{n}", daemon=True
            )
            signals.start(t)  # a stop signal is the main thread's: it tells the workers
            threads.append(t)
    return threads


def left_over(recorded: Recorded) -> int:
    """Members never started (a stop came first): each is a recorded, resumable job."""
    return sum(len(q) for q in recorded.queues.values())


def sources_of(prompts: Iterable[str]) -> Source:
    return Source(prompts=list(prompts))


def wait_for_workers(threads: list[threading.Thread], stop: Stop) -> None:
    """Wait for the workers to end every job (or to stop: a stop's grace is 5 s)."""
    grace_until: float | None = None
    while any(t.is_alive() for t in threads):
        for t in threads:
            t.join(0.05)
        if stop.terminating:
            # Workers stop at their next step; one blocked in a long request (a create that
            # waits for its result) is not waited for: its job stays resumable, as after a
            # kill, and the resume finds what the request did.
            grace_until = grace_until or time.monotonic() + 5.0
            if time.monotonic() > grace_until:
                return


# -- the use case -------------------------------------------------------------------------------


class Watcher(Protocol):
    """Who follows a batch as it runs (the CLI: a display, stdout, signals; the agent server:
    its own). Called from the workers' threads: on_start, on_done, reporter."""

    def begin(self, total: int, stop: Stop) -> None:
        """`total` members, about to be recorded or run: from here `stop` (set by Ctrl-C or
        SIGTERM: install signal handlers now) stops them."""

    def refused(self, where: str, exc: UserError) -> None:
        """A member not recorded: its output name was taken since validation."""

    def on_start(self, job_id: str) -> None: ...

    def on_done(self, outcome: Outcome) -> None: ...

    def reporter(self) -> Any:
        """A Reporter for one worker's jobs."""

    def close(self) -> None:
        """Recorded and run, or stopped by an error: tidy up (always called after begin)."""

    def finish(self, recorded: Recorded | None, what: str, resume_hint: str) -> int:
        """The batch ran to its end: `what` it was, how to resume what is left; the exit code."""


def drive_recorded(
    session: Any,
    store: Any,
    recorded: Recorded,
    concurrency_override: int | None,
    stop: Stop,
    watcher: Watcher,
    resume: Callable[[JobState], None] | None = None,
) -> None:
    """Run recorded jobs with a few workers per backend until each has ended (or a stop)."""
    cfg = session.config()
    limits = concurrency(recorded, cfg, concurrency_override)
    threads = start_workers(
        store,
        session.env,
        recorded,
        limits,
        stop,
        watcher.on_done,
        sidecar_mode=cfg.output.sidecar_mode,
        reporter=watcher.reporter,
        on_start=watcher.on_start,
        resume=resume,
    )
    wait_for_workers(threads, stop)


def run_batch(
    session: Any,
    plan: Plan,
    source: Source,
    *,
    concurrency_override: int | None,
    watcher: Watcher,
) -> int:
    """`generate` of many images: validate every member, record them all, run them; the exit
    code `watcher.finish` gives. Usage is synced after, best effort."""
    from imagen.app.drive import sync_usage_best_effort
    from imagen.app.liveness import mention_interrupted
    from imagen.app.runners import new_runner
    from imagen.projections.jobs import table as jobs_index

    try:
        try:
            total = validate(plan, source, lambda text: session.note(f"note: {text}"))
        except BadInput as exc:
            raise UserError(str(exc)) from None
        store = session.store()
        jobs_index.catch_up(store)
        mention_interrupted(session, store)
        batch_id = new_batch_id()
        stop = Stop()
        watcher.begin(total, stop)
        recorded = None
        try:
            recorded = record(plan, source, new_runner(store, session.env), batch_id, stop)
            for where, exc in recorded.refused:
                watcher.refused(where, exc)
            drive_recorded(session, store, recorded, concurrency_override, stop, watcher)
        except KeyboardInterrupt:
            # A second Ctrl-C: what is unfinished stays resumable, by the batch's id.
            raise KeyboardInterrupt(
                f"batch {batch_id} is left unfinished: finish it with `imagen resume {batch_id}`"
            ) from None
        finally:
            watcher.close()
        return watcher.finish(recorded, f"batch {batch_id}", f"imagen resume {batch_id}")
    finally:
        source.close()
        if session.store_opened:
            sync_usage_best_effort(session, session.store())
