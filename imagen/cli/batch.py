"""`imagen generate` with several images: a batch (imagen/app/batch.py `run_batch` does the
work; this module follows it on the terminal, as it does `imagen resume` of several jobs).

stdout: one line per image as it lands (the path), or with --json one object per job carrying
the input's index. stderr: an overall bar and the jobs in flight in a terminal, nothing on a
pipe; one line per failed job; a one-line summary at the end.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from typing import Any

from imagen.app.errors import UserError
from imagen.app.exit_codes import ExitCode, most_severe
from imagen.cli import context


class BatchProgress:
    """The overall bar and one line per job in flight (rich, on stderr, in a terminal only)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self._lock = threading.Lock()
        self._live: Any = None
        self._lines: dict[str, str] = {}
        self._task: Any = None
        if not enabled:
            return
        from rich.console import Console, Group
        from rich.live import Live
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.text import Text

        self._Group, self._Text = Group, Text
        self._bar = Progress(
            TextColumn("batch"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
        )
        self._task = self._bar.add_task("", total=total)
        self._live = Live(
            self._render(),
            console=Console(file=context.session().env.stderr),
            transient=True,
            refresh_per_second=8,
        )
        from imagen.runner import signals

        with signals.blocked():  # its refresh thread never takes a stop signal
            self._live.start()

    def _render(self) -> Any:
        rows = [
            self._Text(f"  {jid[:8]}  {text}", overflow="ellipsis", no_wrap=True)
            for jid, text in list(self._lines.items())[:12]
        ]
        return self._Group(self._bar, *rows)

    def update(self, job_id: str, text: str | None) -> None:
        if self._live is None:
            return
        with self._lock:
            if text is None:
                self._lines.pop(job_id, None)
            else:
                self._lines[job_id] = text
            self._live.update(self._render())

    def advance(self, description: str) -> None:
        if self._live is None:
            return
        with self._lock:
            self._bar.update(self._task, advance=1, description=description)
            self._live.update(self._render())

    def above(self, line: str) -> bool:
        """Print a finished line above the live region (it stays on screen; the region is
        redrawn below it); False when there is no live region (print it as usual)."""
        if self._live is None:
            return False
        from imagen.cli.safe import printable

        with self._lock:
            self._live.console.print(printable(line), markup=False, highlight=False, soft_wrap=True)
        return True

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


class _JobLine:
    """A worker's Reporter: what its current job is doing, as one line of the display."""

    def __init__(self, display: BatchProgress) -> None:
        self.display = display

    def event(self, state: Any, rec: Any) -> None:
        from imagen.cli.safe import printable
        from imagen.projections.timeline import describe

        # Events quote servers: never let them drive the terminal.
        self.display.update(state.job_id, printable(describe(rec.event))[:100])
        if context.session().verbosity > 0:
            context.err(f"imagen: {state.job_id[:8]} {describe(rec.event)}")

    def progress(self, step: int | None, total: int | None, label: str = "") -> None:
        pass


def run_batch(
    *,
    prompts: list[str],
    from_file: str | None,
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
    force: bool,
    json_output: bool,
    concurrency: int | None,
    detach: bool = False,
    overflow: str | None = None,
) -> int:
    from imagen.app import batch as b
    from imagen.app.caller import resolve_caller

    session = context.session()
    env = session.env
    plan = b.make_plan(
        session.config(),
        env,
        backend=backend,
        size=size,
        aspect=aspect,
        seed=seed,
        steps=steps,
        output_format=output_format,
        options=options,
        count=count,
        per_job=per_job,
        output=output,
        overwrite=force,
        caller=resolve_caller(env.env),
        overflow=overflow,
    )
    if from_file == "-":
        if env.env.get("IMAGEN_TESTING") != "1" and sys.stdin.isatty():
            context.note("reading prompts from standard input, one per line (end with Ctrl-D)")
        source = b.Source.from_stream(sys.stdin.buffer)
    elif from_file is not None:
        source = b.Source(path=from_file)
    else:
        source = b.Source(prompts=prompts)
    if detach:
        from imagen.app.detach import detach_batch
        from imagen.cli.worker import detached

        ids = detach_batch(session, plan, source)
        return detached(ids, json_output=json_output, concurrency=concurrency)
    return b.run_batch(
        session, plan, source, concurrency_override=concurrency, watcher=BatchDrive(json_output)
    )


class BatchDrive:
    """Follows jobs run by a batch's workers (app/batch.py Watcher) and reports each as it
    ends: stdout, errors on stderr, the display; keeps only counts and a running total (memory
    stays flat). Owns the signal handlers while the jobs run (see _install_signals)."""

    def __init__(self, json_output: bool, collect: list[Any] | None = None) -> None:
        self.display = BatchProgress(0, enabled=False)
        self.json_output = json_output
        self.collect = collect
        self.lock = threading.Lock()
        self.tally = {"succeeded": 0, "failed": 0, "cancelled": 0, "interrupted": 0}
        self.spent: str | None = None
        self.worst = ExitCode.OK
        self.stop: Any = None
        self.running = 0  # started and not yet reported
        self._old_handlers: dict[int, Any] = {}

    def begin(self, total: int, stop: Any) -> None:
        session = context.session()
        self.display = BatchProgress(
            total, enabled=session.verbosity == 0 and session.env.stderr.isatty()
        )
        self.stop = stop
        self._old_handlers = _install_signals(stop, self.note)

    def close(self) -> None:
        self.display.close()
        _restore_signals(self._old_handlers)
        self._old_handlers = {}

    def reporter(self) -> Any:
        return _JobLine(self.display)

    def err(self, line: str) -> None:
        """A line on stderr; in a terminal, above the live region (never overwritten by it)."""
        if not self.display.above(line):
            context.err(line)

    def note(self, message: str) -> None:
        if context.session().verbosity >= 0:
            self.err(f"imagen: {message}")

    def on_done(self, o: Any) -> None:
        from imagen.core import money

        env = context.session().env
        out = env.stdout
        # Both on the terminal: a path printed past the live region would be drawn over.
        above = self.display.above if env.stdout_isatty else lambda _line: False
        with self.lock:
            self.running -= 1
            self.display.update(o.job_id, None)
            status = o.status if o.status in self.tally else "interrupted"
            self.tally[status] += 1
            if o.spent:
                self.spent = money.total([self.spent or "0", o.spent])
            self.worst = most_severe(self.worst, o.code)
            try:
                if self.json_output and self.collect is not None:
                    self.collect.append(o.summary)
                elif self.json_output:
                    print(json.dumps(o.summary), file=out)
                elif o.code == ExitCode.OK:
                    for path in o.images:
                        if not above(path):
                            print(path, file=out)
                out.flush()
            except BrokenPipeError:
                # The reader of stdout went away (`| head`), in a worker's thread: the batch
                # goes on (every job is recorded; `imagen jobs` lists what was not printed),
                # and ends with the broken-pipe code as a one-image generate would.
                context.silence_stdout()
                self.worst = most_severe(self.worst, ExitCode.BROKEN_PIPE)
            if o.message and o.code != ExitCode.OK and o.code != ExitCode.INTERRUPTED:
                self.err(f"imagen: error: {o.message}")
            self.display.advance(_tally_text(self.tally))

    def on_start(self, job_id: str) -> None:
        with self.lock:
            self.running += 1
        self.display.update(job_id, "starting")

    def refused(self, where: str, exc: UserError) -> None:
        self.err(f"imagen: error: {where}: {exc}; not recorded")
        # Not 2: the rest of the batch was recorded. Another process took the name meanwhile.
        code = ExitCode.CONFLICT if exc.code == ExitCode.BAD_INPUT else exc.code
        self.worst = most_severe(self.worst, code)
        self.tally["failed"] += 1

    def finish(self, recorded: Any, what: str, resume_hint: str) -> int:
        from imagen.app import batch as b

        self.display.close()
        # Not started, or still in a request when SIGTERM's grace ran out: each resumable.
        left = (b.left_over(recorded) if recorded is not None else 0) + self.running
        if self.stop is not None and self.stop.terminating:
            self.worst = most_severe(self.worst, ExitCode.TERMINATED)
        if left:
            self.tally["interrupted"] += left
            self.worst = most_severe(self.worst, ExitCode.TERMINATED)
        t = self.tally
        line = (
            f"{what}: {t['succeeded']} done, {t['failed']} failed, {t['cancelled']} cancelled"
            + (f", {t['interrupted']} interrupted" if t["interrupted"] else "")
            + (f"; spent ${self.spent}" if self.spent is not None else "")
        )
        if t["interrupted"]:
            line += f"; finish with `{resume_hint}`"
        if self.worst == ExitCode.OK:
            context.note(line)
        else:
            context.err(f"imagen: {line}")
        return int(self.worst)


def _tally_text(tally: dict[str, int]) -> str:
    bad = tally["failed"] + tally["cancelled"] + tally["interrupted"]
    return f"{bad} not done" if bad else ""


def _install_signals(stop: Any, note: Any) -> dict[int, Any]:
    """For the whole batch: the first Ctrl-C cancels it (the workers end each job, remote work
    cancelled), a second one stops at once (what is unfinished stays resumable); SIGTERM and
    SIGHUP stop the workers at their next step, leaving every unfinished job resumable."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def on_signal(signum: int, _frame: object) -> None:
        stop.terminate(signal.Signals(signum).name)

    def on_interrupt(_signum: int, _frame: object) -> None:
        if stop.value is not None:
            raise KeyboardInterrupt
        stop.cancel()
        note("cancelling the batch (Ctrl-C again to stop at once; unfinished jobs stay resumable)")

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    old[signal.SIGINT] = signal.signal(signal.SIGINT, on_interrupt)
    return old


def _restore_signals(old: dict[int, Any]) -> None:
    for s, handler in old.items():
        signal.signal(s, handler)
