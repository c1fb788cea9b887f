"""Stop signals (SIGINT, SIGTERM, SIGHUP) are the main thread's alone: every thread imagen starts
blocks them, so the main thread's block around an append (runner/loop.py _signals_deferred)
holds them back for real (runner/signals.py says what happened when it did not)."""

from __future__ import annotations

import io
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from imagen.cli.progress import RichReporter
from imagen.runner.http import Http
from imagen.runner.transports import Websockets
from imagen.testing.comfyui import ComfyUIDouble
from tests.support.doubles import comfy  # noqa: F401  (fixture)

STOP = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _blocked(thread: threading.Thread) -> set[signal.Signals]:
    """The stop signals `thread` blocks, from the kernel's own view of it."""
    with open(f"/proc/self/task/{thread.native_id}/status") as fh:
        mask = next(int(line.split()[1], 16) for line in fh if line.startswith("SigBlk:"))
    return {s for s in STOP if mask & (1 << (s - 1))}


@contextmanager
def _started(found: dict[str, set[signal.Signals]]) -> Iterator[Callable[[], None]]:
    """Note the stop signals each thread started inside blocks (call the yielded function while
    they run), started by a main thread that itself takes the stop signals, as imagen's does."""
    before = set(threading.enumerate())

    def note() -> None:
        for t in set(threading.enumerate()) - before:
            if t.is_alive():
                found[t.name] = _blocked(t)

    previous = signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP)
    try:
        yield note
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def test_threads_imagen_starts_block_the_stop_signals(comfy: ComfyUIDouble) -> None:  # noqa: F811
    found: dict[str, set[signal.Signals]] = {}
    assert threading.current_thread() is threading.main_thread()

    # A websocket (its reader and keepalive threads), as the runner opens one to ComfyUI.
    with _started(found) as note:
        ws = Websockets().connect(
            f"ws{comfy.url.removeprefix('http')}/ws?clientId=sig", headers={}, timeout_s=10
        )
        note()
    ws.close()

    # An HTTP request (its deadline's timer), noted while the server holds the reply.
    with socket.create_server(("127.0.0.1", 0)) as server, _started(found) as note:

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(65536)
                note()  # the request is sent: its timer runs
                conn.sendall(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")

        replier = threading.Thread(target=answer)
        replier.start()
        port = server.getsockname()[1]
        reply = Http().send("GET", f"http://127.0.0.1:{port}/", headers={}, timeout_s=30)
        replier.join()
        assert reply.status == 204
    found.pop(replier.name)  # the test's own

    # The progress line in a terminal (rich's refresh thread).
    with _started(found) as note:
        reporter = RichReporter(io.StringIO(), enabled=True)
        note()
    reporter.close()

    assert len(found) >= 4, found  # reader, keepalive, timer, refresh
    assert {name: set(STOP) for name in found} == found
