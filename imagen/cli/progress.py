"""Progress on stderr with rich: status, elapsed time, retries, and a step bar when known."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from imagen.core.events import (
    ImageStored,
    ProgressObserved,
    RemoteJobAccepted,
    RequestFailed,
    RequestSent,
    ResponseReceived,
    RetryScheduled,
)
from imagen.core.job import JobState, Recorded


class RichReporter:
    """A progress line in a terminal (off with -q); with -v (`events`), each recorded event as a
    plain line instead, the same text `imagen show` prints."""

    def __init__(self, stderr: Any, enabled: bool | None = None, events: bool = False) -> None:
        self.enabled = stderr.isatty() if enabled is None else enabled
        self._stderr = stderr if events else None
        self.retries = 0
        self._down_since: datetime | None = None  # the server out of reach since (said once)
        self._progress: Any = None
        self._task: Any = None
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            class Steps(MofNCompleteColumn):
                """n/N once the server counts steps; nothing before (never `0/?`)."""

                def render(self, task: Any) -> Any:
                    return super().render(task) if task.total is not None else ""

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                Steps(),
                TimeElapsedColumn(),
                console=Console(file=stderr),
                transient=True,
            )
            self._task = self._progress.add_task("starting", total=None)
            from imagen.runner import signals

            with signals.blocked():  # its refresh thread never takes a stop signal
                self._progress.start()

    def _say(self, text: str) -> None:
        if self._progress is not None:
            suffix = (
                f" · {self.retries} retr{'y' if self.retries == 1 else 'ies'}"
                if self.retries
                else ""
            )
            self._progress.update(self._task, description=text + suffix)

    def event(self, state: JobState, rec: Recorded) -> None:
        e = rec.event
        if self._stderr is not None:
            from imagen.projections.timeline import describe

            print(f"imagen: {describe(e)}", file=self._stderr, flush=True)
        if isinstance(e, RequestSent):
            self._say(f"{e.purpose}: waiting for {_server(state)}")
        elif isinstance(e, ResponseReceived):
            self._down_since = None  # it answers again: a later outage is said again
            body = e.body if isinstance(e.body, dict) else {}
            self._say(
                f"{e.purpose}: HTTP {e.status}"
                + (f" ({body['status']})" if "status" in body else "")
            )
        elif isinstance(e, RequestFailed):
            self._say(f"{e.purpose}: {e.error}")
            self._unreachable(state, rec)
        elif isinstance(e, RetryScheduled):
            self.retries += 1
            self._say(f"retrying {e.purpose} in {e.delay_s:g}s ({e.reason})")
        elif isinstance(e, RemoteJobAccepted):
            self._say(f"accepted as {e.remote_id}")
        elif isinstance(e, ProgressObserved):
            self._say(e.status)
        elif isinstance(e, ImageStored):
            self._say(f"stored {e.width}x{e.height} {e.format}")

    def _unreachable(self, state: JobState, rec: Recorded) -> None:
        """Once per outage of a job the server has accepted (it may still be running there):
        since when, that imagen keeps trying until the deadline, and how to stop and resume.
        On a terminal and with -v; a pipe without -v stays quiet."""
        if self._down_since is not None or state.remote_id is None or state.request is None:
            return
        if rec.event.error not in ("refused", "timeout", "network", "unreachable"):  # type: ignore[attr-defined]
            return
        self._down_since = rec.at
        deadline = _deadline(state)
        until = f" (until {deadline.astimezone():%H:%M:%S})" if deadline else ""
        text = (
            f"imagen: {state.request.backend} is unreachable since "
            f"{rec.at.astimezone():%H:%M:%S}; imagen keeps trying until the deadline{until}. "
            f"To stop now and go on later: Ctrl-C, then `imagen resume {state.job_id}`"
        )
        if self._stderr is not None:
            print(text, file=self._stderr, flush=True)
        elif self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)

    def progress(self, step: int | None, total: int | None, label: str = "") -> None:
        """`label` names what runs (e.g. the sampler node); work without steps shows no bar."""
        if self._progress is None:
            return
        if total is None:
            # Work without steps comes after the stepped work (the sampler) has ended, which
            # ComfyUI may have counted 0..n-1: the bar stays full, never back to 0/n.
            shown = self._progress.tasks[0].total
            self._progress.update(self._task, completed=shown or 0, description=label or "sampling")
            return
        self._progress.update(
            self._task, completed=step or 0, total=total, description=label or "sampling"
        )

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _server(state: JobState) -> str:
    return state.request.backend if state.request is not None else "the server"


def _deadline(state: JobState) -> datetime | None:
    """The adapter's deadline for this run, when its backend says (`deadline(state)`)."""
    from imagen import backends

    assert state.request is not None
    try:
        find = getattr(backends.load(state.request.backend_type), "deadline", None)
        return find(state) if find is not None else None
    except Exception:  # a display never fails a job
        return None
