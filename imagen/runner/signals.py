"""The stop signals (SIGINT, SIGTERM, SIGHUP) belong to the main thread alone.

The runner holds them back while an append commits (loop._signals_deferred) by blocking them in
the main thread. But the kernel gives a signal sent to the process to any thread that does not
block it, and when another thread takes it (a websocket's reader, an HTTP request's timer, a batch
worker) Python still runs the handler in the main thread, at its next instruction, blocked there
or not: inside the very transaction the block protects. Interrupted inside a statement, SQLAlchemy
invalidates the connection, and SQLite's write lock can stay with it: the job's next append (its
JobInterrupted, its CancelRequested) then waits out the 60 s busy timeout, or reuses the closed
connection ("Cannot operate on a closed database").

A thread starts with the signal mask of the thread that starts it, so every thread imagen starts
is started with the stop signals blocked (`start`, `blocked`), and the threads it starts in turn
inherit that. The kernel then has only the main thread to give them to: held back while it
blocks them, and at once otherwise, which also wakes a main thread waiting in a system call.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


@contextmanager
def blocked() -> Iterator[None]:
    """The stop signals blocked in this thread inside: threads started inside (by imagen or a
    library) inherit the block. One that came meanwhile is handled on leaving (Python runs
    pending handlers as the mask is restored)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def start(thread: threading.Thread) -> None:
    """Start a thread that never takes a stop signal (see the module doc)."""
    with blocked():
        thread.start()
