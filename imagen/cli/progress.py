"""Progress on stderr with rich: status, elapsed time, retries, and a step bar when known."""

from __future__ import annotations

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

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(file=stderr),
                transient=True,
            )
            self._task = self._progress.add_task("starting", total=None)
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
            self._say(f"{e.purpose} …")
        elif isinstance(e, ResponseReceived):
            body = e.body if isinstance(e.body, dict) else {}
            self._say(
                f"{e.purpose}: HTTP {e.status}"
                + (f" ({body['status']})" if "status" in body else "")
            )
        elif isinstance(e, RequestFailed):
            self._say(f"{e.purpose}: {e.error}")
        elif isinstance(e, RetryScheduled):
            self.retries += 1
            self._say(f"retrying {e.purpose} in {e.delay_s:g}s ({e.reason})")
        elif isinstance(e, RemoteJobAccepted):
            self._say(f"accepted as {e.remote_id}")
        elif isinstance(e, ProgressObserved):
            self._say(e.status)
        elif isinstance(e, ImageStored):
            self._say(f"stored {e.width}x{e.height} {e.format}")

    def progress(self, step: int | None, total: int | None, label: str = "") -> None:
        """`label` names what runs (e.g. the sampler node); work without steps shows no bar."""
        if self._progress is not None:
            self._progress.update(
                self._task, completed=step or 0, total=total, description=label or "sampling"
            )

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
