"""Files as private as their sidecars, a removed image never described, a size that differs
said, an empty --aspect refused, and any answer a server gives recorded in one line: real
sockets on 127.0.0.1, the real CLI in subprocesses (issue #26 item 12, issue #25 defect 5)."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from imagen.core.events import ResponseReceived
from imagen.runner.http import Http
from ledger import open_store
from ledger.events import canonical_json
from tests.support.cli import Sandbox
from tests.support.echo import ECHO_CLI, EchoServer
from tests.test_hostile_http import HostileServer


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _generate(box: Sandbox, *args: str, umask: int = 0o022) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        box.cmd("generate", *args),
        capture_output=True,
        text=True,
        timeout=120,
        env=box.env,
        cwd=box.root,
        umask=umask,
    )


def _echo_box(tmp_path: Path, url: str, output: str = "") -> Sandbox:
    box = Sandbox(tmp_path, entry=ECHO_CLI)
    box.write_config(
        f'default_backend = "echo"\n[backends.echo]\ntype = "echo"\nurl = "{url}"\n'
        f'[output]\ndirectory = "{tmp_path / "out"}"\n{output}'
    )
    return box


# -- 1. an image is as private as its sidecar --------------------------------------------------


@pytest.mark.parametrize(("private", "expected"), [(True, 0o600), (False, 0o644)])
def test_an_image_takes_its_sidecars_privacy(
    tmp_path: Path, echo_server: EchoServer, private: bool, expected: int
) -> None:
    box = _echo_box(tmp_path, echo_server.url, f"private_sidecars = {str(private).lower()}\n")
    done = _generate(box, "a harbour", "--seed", "3", umask=0o022)
    assert done.returncode == 0, done.stderr
    image = Path(done.stdout.strip())
    assert _mode(image.with_name(image.name + ".json")) == expected
    assert _mode(image) == expected, oct(_mode(image))


# -- 2. resume never describes a removed image ------------------------------------------------


def test_resume_of_a_job_whose_image_was_removed_says_so_and_writes_no_sidecar(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    box = _echo_box(tmp_path, echo_server.url)
    done = _generate(box, "a harbour", "--seed", "3")
    assert done.returncode == 0, done.stderr
    image = Path(done.stdout.strip())
    sidecar = image.with_name(image.name + ".json")
    image.unlink()
    sidecar.unlink()
    job = box.only_job()

    again = box.run("resume", job)
    assert again.returncode == 4, again.stderr
    assert again.stdout == ""  # the path is not printed as if the image were there
    [line] = again.stderr.splitlines()
    assert "missing" in line and str(image) in line and "imagen audit" in line
    assert not sidecar.exists() and not image.exists()

    # --all does not take it for a job whose sidecar is merely missing.
    every = box.run("resume", "--all")
    assert every.returncode == 0, every.stderr
    assert not sidecar.exists()


# -- 3. a size other than the one asked for is said ---------------------------------------


def test_an_image_of_another_size_than_asked_is_kept_and_the_difference_recorded(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    box = _echo_box(tmp_path, echo_server.url)
    done = _generate(box, "a harbour", "--seed", "3", "--size", "128x96", "--json")
    assert done.returncode == 0, done.stderr  # a paid image is never refused for its size
    summary = json.loads(done.stdout)
    assert (summary["width"], summary["height"]) == (64, 64)  # what the echo server makes
    assert summary["expected_size"] == "128x96"
    sidecar = json.loads(Path(summary["sidecar"]).read_text())
    assert sidecar["size"] == "64x64" and sidecar["expected_size"] == "128x96"
    assert "64x64, not the 128x96 asked for" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_image_of_the_size_asked_has_no_expected_size(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    box = _echo_box(tmp_path, echo_server.url)
    done = _generate(box, "a harbour", "--seed", "3", "--json")
    assert done.returncode == 0, done.stderr
    assert "expected_size" not in json.loads(done.stdout)


# -- 4. an empty --aspect ---------------------------------------------------------------------


@pytest.mark.parametrize("source", ["flag", "line"])
def test_an_empty_aspect_is_refused_in_one_line(
    tmp_path: Path, echo_server: EchoServer, source: str
) -> None:
    box = _echo_box(tmp_path, echo_server.url)
    if source == "flag":
        done = _generate(box, "a harbour", "--aspect", "")
    else:
        lines = tmp_path / "prompts.jsonl"
        lines.write_text(json.dumps({"prompt": "a harbour", "aspect": " "}) + "\n")
        done = _generate(box, "--from", str(lines))
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert "--aspect is empty" in line
    assert not echo_server.auth  # nothing was sent
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# -- 5. any body a server sends is a recorded outcome ---------------------------------------

HOSTILE_BODIES = {
    "huge number": b'{"image": 1e400}',
    "huge negative number": b'{"image": [-1e400]}',
    "nesting past the parser": b"[" * 100_000 + b"]" * 100_000,
    "nesting the parser takes": b'{"image": ' + b"[" * 900 + b"]" * 900 + b"}",
    "invalid utf-8": b'{"image": "\xff\xfe\xfd"}',
    "a NUL": b'{"image": 7, "detail": "a\\u0000b"}',
}


def _answer(body: bytes) -> Callable[[socket.socket, threading.Event], None]:
    def behaviour(sock: socket.socket, stop: threading.Event) -> None:
        sock.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
        )

    return behaviour


@pytest.fixture
def hostile_server() -> Iterator[Callable[[bytes], HostileServer]]:
    servers: list[HostileServer] = []

    def make(body: bytes) -> HostileServer:
        servers.append(HostileServer(_answer(body)))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


@pytest.mark.parametrize("name", sorted(HOSTILE_BODIES))
def test_any_reply_body_can_be_recorded(hostile_server, name: str) -> None:  # type: ignore[no-untyped-def]
    server = hostile_server(HOSTILE_BODIES[name])
    reply = Http().send("GET", server.url, headers={}, timeout_s=30)
    event = ResponseReceived("render-1", "render", reply.status, {}, reply.body(), 1.0)
    canonical_json(event.to_data())  # what the ledger stores: no inf, no RecursionError


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
@pytest.mark.parametrize("name", ["huge number", "nesting past the parser", "a NUL"])
def test_a_hostile_reply_fails_the_job_in_one_line_and_the_ledger_takes_more(
    hostile_server, tmp_path: Path, request: pytest.FixtureRequest, engine: str, name: str
) -> None:  # type: ignore[no-untyped-def]
    server = hostile_server(HOSTILE_BODIES[name])
    url = "" if engine == "sqlite" else request.getfixturevalue("pg_url")
    box = Sandbox(tmp_path, ledger_url=url, entry=ECHO_CLI)
    box.write_backend("echo", "echo", url=server.url)
    done = box.run("generate", "a harbour", "--seed", "3")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    job = box.only_job()
    store = open_store(box.ledger_url)
    try:
        types = [e.type for e in store.read_stream(job)]
    finally:
        store.close()
    assert "ResponseReceived" in types and types[-1] == "JobFailed", types
    # The ledger is not poisoned: the next job records and lists as ever.
    box.write_backend("echo", "echo", url=server.url)
    listed = box.run("jobs", "--json")
    assert listed.returncode == 0, listed.stderr


# -- 6. a silent network: one line, never a traceback -------------------------------------


class SilentWebsocketServer:
    """Accepts the websocket handshake, then neither reads nor writes: pings go unanswered
    (a network that went quiet)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.url = f"ws://127.0.0.1:{self.sock.getsockname()[1]}/ws"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(4096)
        key = next(
            line.split(b":", 1)[1].strip()
            for line in data.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(
            hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
        )
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        self.stop.wait(60)
        conn.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


# In a process of its own: under pytest a handler on the root logger would take what the
# library logs, and stderr would show nothing either way.
FOLLOW = """
import sys
from imagen.runner.transports import StreamDropped, Websockets

stream = Websockets(ping_interval=0.2, ping_timeout=0.2).connect(sys.argv[1], headers={}, timeout_s=10)
try:
    for _ in range(120):  # at most 2 min; the drop comes after ~1.5 s
        try:
            stream.recv(timeout=1.0)
        except TimeoutError:
            continue
except StreamDropped as exc:
    # The keepalive thread logs (or not) as it gives up: wait for it to have ended.
    stream._connection.keepalive_thread.join(30)
    stream.close()
    print("dropped")
"""


def test_a_keepalive_timeout_on_a_silent_network_prints_no_traceback() -> None:
    import sys

    from tests.support.cli import ROOT

    server = SilentWebsocketServer()
    try:
        done = subprocess.run(
            [sys.executable, "-c", FOLLOW, server.url],
            capture_output=True,
            text=True,
            timeout=150,
            cwd=ROOT,
        )
    finally:
        server.close()
    assert done.stdout.strip() == "dropped", done.stderr
    assert "Traceback" not in done.stderr and "keepalive" not in done.stderr, done.stderr
