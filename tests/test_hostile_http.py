"""Hostile servers: a trickle never holds a request past its deadline, a huge reply is never
read, recorded or printed whole. Real sockets on 127.0.0.1; the server may dawdle, the test
never sleeps."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from imagen.runner.http import ERROR_BODY_KEEP, Http, TransportFailure
from tests.support.cli import Sandbox
from tests.support.echo import ECHO_CLI

Behaviour = Callable[[socket.socket, threading.Event], None]


class HostileServer:
    """A raw TCP server whose every connection runs `behaviour` (after reading the request)."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.stop = threading.Event()
        self.requests = 0
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data = b""
                while b"\r\n\r\n" not in data:
                    got = self.request.recv(65536)
                    if not got:
                        return
                    data += got
                outer.requests += 1
                try:
                    behaviour(self.request, outer.stop)
                except OSError:
                    pass  # the client hung up, as it should

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/render"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hostile() -> Iterator[Callable[[Behaviour], HostileServer]]:
    servers: list[HostileServer] = []

    def make(behaviour: Behaviour) -> HostileServer:
        servers.append(HostileServer(behaviour))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def trickle_body(sock: socket.socket, stop: threading.Event) -> None:
    """Headers at once, then one body byte every 0.2 s: each read succeeds well within any
    per-read timeout, the whole takes 8 s."""
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n")
    for _ in range(40):
        if stop.wait(0.2):
            return
        sock.sendall(b" ")


def trickle_headers(sock: socket.socket, stop: threading.Event) -> None:
    head = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 30 + b"\r\nContent-Length: 2\r\n\r\n{}"
    for i in range(len(head)):
        if stop.wait(0.2):
            return
        sock.sendall(head[i : i + 1])


def huge_error(sock: socket.socket, stop: threading.Event) -> None:
    """A 50 MB JSON error (valid JSON: recorded whole, it would be 50 MB in the ledger),
    written until the client hangs up."""
    size = 50 * 1024 * 1024
    sock.sendall(
        f"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
        f"Content-Length: {size}\r\n\r\n".encode()
    )
    sock.sendall(b'{"detail": "')
    sent, block = 12, b"e" * (1 << 20)
    while sent < size - 2 and not stop.is_set():
        part = block[: size - 2 - sent]
        sock.sendall(part)
        sent += len(part)
    sock.sendall(b'"}')


@pytest.mark.parametrize("behaviour", [trickle_body, trickle_headers])
def test_trickling_server_cannot_hold_a_request_past_its_deadline(hostile, behaviour) -> None:  # type: ignore[no-untyped-def]
    server = hostile(behaviour)
    with pytest.raises(TransportFailure) as failure:
        Http().send("GET", server.url, headers={}, timeout_s=1.0)
    assert failure.value.kind == "timeout"
    assert "within 1 s" in str(failure.value)


def test_huge_error_reply_is_read_and_kept_only_in_part(hostile) -> None:  # type: ignore[no-untyped-def]
    server = hostile(huge_error)
    reply = Http().send("GET", server.url, headers={}, timeout_s=30, keep_bytes=1024 * 1024)
    assert reply.status == 500 and reply.truncated
    assert len(reply.data) == 1024 * 1024
    body = reply.body()
    assert isinstance(body, str) and len(body) < 2100 and "reply cut" in body


def test_large_error_reply_within_the_read_limit_is_recorded_as_an_excerpt() -> None:
    from imagen.runner.http import Reply

    reply = Reply(502, {}, b'{"detail": "' + b"x" * ERROR_BODY_KEEP + b'"}')
    assert len(reply.body()) < 2100
    small = Reply(422, {}, b'{"detail": "bad seed"}')
    assert small.body() == {"detail": "bad seed"}


def test_download_larger_than_max_bytes_fails_without_reading_it_all(hostile) -> None:  # type: ignore[no-untyped-def]
    server = hostile(huge_error)
    with pytest.raises(TransportFailure) as failure:
        Http().send("GET", server.url, headers={}, timeout_s=30, max_bytes=1000)
    assert failure.value.kind == "too_large"


def test_a_50_mb_error_body_neither_grows_the_ledger_nor_floods_stderr(
    hostile, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    server = hostile(huge_error)
    box = Sandbox(tmp_path, entry=ECHO_CLI)
    box.write_backend("echo", "echo", url=server.url)
    result = box.run("generate", "a cat")
    assert result.returncode != 0
    assert server.requests == 2  # the echo adapter retries a 5xx once
    ledger = tmp_path / "ledger.db"
    on_disk = sum(p.stat().st_size for p in tmp_path.glob("ledger.db*"))
    assert ledger.exists() and on_disk < 2 * 1024 * 1024, on_disk
    assert len(result.stderr) < 5000, len(result.stderr)
    assert "Traceback" not in result.stderr


def test_a_trickling_backend_fails_the_job_at_its_request_deadline(hostile, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """End to end: the echo adapter's 5 s request timeout ends each trickled request."""

    def endless(sock: socket.socket, stop: threading.Event) -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        while not stop.wait(0.5):
            sock.sendall(b" ")

    server = hostile(endless)
    box = Sandbox(tmp_path, entry=ECHO_CLI)
    box.write_backend("echo", "echo", url=server.url)
    result = box.run("generate", "a cat", timeout=60)
    assert result.returncode == 1, result.stderr  # the echo job fails after its one retry
    assert "no complete reply within 5 s" in result.stderr
    assert "Traceback" not in result.stderr
