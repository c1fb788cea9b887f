"""The echo test adapter's server and a CLI sandbox configured for it (pytest plugin).

The plugin registers the echo adapter (tests/support/echo_backend.py) in this process; CLI
subprocesses get it by running `tests.support.imagen_cli` (Sandbox.entry).
"""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from tests.support.cli import Sandbox
from tests.support.echo_backend import register

ECHO_CLI = "tests.support.imagen_cli"


def pytest_configure(config: pytest.Config) -> None:
    register()


TOKEN = "echo-secret-token-123"


class EchoServer:
    """Answers GET with {"image": data:URI of a PNG}; can fail the first N requests."""

    def __init__(self) -> None:
        self.fail = 0
        self.auth: list[str | None] = []
        self.hold = threading.Event()
        self.hold.set()
        self.arrived = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.auth.append(self.headers.get("Authorization"))
                outer.arrived.set()
                outer.hold.wait(30)
                if outer.fail:
                    outer.fail -= 1
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                buf = io.BytesIO()
                Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, "PNG")
                body = json.dumps(
                    {"image": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/render"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def echo_server() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def sandbox(tmp_path: Path, echo_server: EchoServer) -> Sandbox:
    box = Sandbox(tmp_path, env={"ECHO_TOKEN": TOKEN}, entry=ECHO_CLI)
    box.write_config(f"""
default_backend = "echo"
[backends.echo]
type = "echo"
url = "{echo_server.url}"
token_env = "ECHO_TOKEN"
[output]
directory = "{tmp_path / "out"}"
""")
    return box
