"""`imagen` for shell examples, without an interpreter start-up per command.

One server process imports the CLI once; each `imagen …` the shell runs is a small client that
hands the server its argv, environment, working directory and its own stdin, stdout and stderr
(the descriptors themselves, over a Unix socket), and exits with the code the command exits
with. The server forks a child per command, which runs the real CLI (`imagen.cli.main`) with
those descriptors: pipes, redirections, `$(…)` and `&&` behave as with the installed command,
because bash runs them and the CLI writes to the very descriptors bash gave it. A hundred doc
examples then cost a hundred forks instead of a hundred interpreter and library start-ups.

The server is its own process, never pytest's: forking a process with threads (the doubles
serve from threads) is unsafe, and the server has none.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CLIENT = """\
import json, os, socket, struct, sys
s = socket.socket(socket.AF_UNIX)
s.connect({sock!r})
request = {{"argv": sys.argv[1:], "env": dict(os.environ), "cwd": os.getcwd()}}
socket.send_fds(s, [json.dumps(request).encode()], [0, 1, 2])
s.shutdown(socket.SHUT_WR)
code = b""
while len(code) < 4:
    part = s.recv(4 - len(code))
    if not part:
        sys.exit("imagen (fork client): the server closed the connection without an exit code")
    code += part
sys.exit(struct.unpack("!i", code)[0])
"""


class ForkCLI:
    """Start with `with ForkCLI(directory) as cli:`; put `cli.bin` first on PATH."""

    def __init__(self, directory: Path) -> None:
        self.bin = directory / "bin"
        self.socket = directory / "imagen.sock"

    def __enter__(self) -> ForkCLI:
        self.bin.mkdir(parents=True, exist_ok=True)
        client = self.bin / "imagen"
        # -I: no site, no PYTHON* variables, no cwd on sys.path: the client is stdlib alone.
        client.write_text(f"#!{sys.executable} -I\n" + CLIENT.format(sock=str(self.socket)))
        client.chmod(0o755)
        self._server = subprocess.Popen(
            [sys.executable, "-m", "tests.support.forkcli", str(self.socket)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        ready = self._server.stdout.readline()  # type: ignore[union-attr]
        assert ready.strip() == "ready", f"fork server did not start: {ready!r}"
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.terminate()
        self._server.wait(timeout=30)
        self._server.stdout.close()  # type: ignore[union-attr]


def _run_child(conn: socket.socket) -> None:
    """In the forked child: become the command the client asked for, run it, report its code."""
    data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 3)
    while chunk := conn.recv(1 << 20):
        data += chunk
    request = json.loads(data)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the command waits for its own children
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    import time

    time.tzset()
    sys.argv = ["imagen", *request["argv"]]
    code = 70
    try:
        from imagen.cli import main

        main(request["argv"])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
    try:
        conn.sendall(struct.pack("!i", code))
    finally:
        os._exit(code)


def _preload() -> None:
    """Import every module of imagen and the ledger (and the libraries they import lazily on
    the paths commands take), once, before any fork: most of a short command's time is imports."""
    import importlib
    import pkgutil

    import imagen
    import ledger

    for package in (imagen, ledger):
        for found in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if found.name.startswith("imagen.testing") or found.name.endswith("__main__"):
                continue
            importlib.import_module(found.name)
    for name in ("sqlite3", "sqlalchemy.dialects.sqlite", "PIL.Image", "PIL.PngImagePlugin"):
        importlib.import_module(name)


def serve(path: str) -> None:
    _preload()
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(64)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children reap themselves
    print("ready", flush=True)
    while True:
        conn, _ = server.accept()
        if os.fork() == 0:
            server.close()
            _run_child(conn)
        conn.close()


if __name__ == "__main__":
    serve(sys.argv[1])
