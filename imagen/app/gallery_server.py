"""`imagen gallery --serve`: the gallery on 127.0.0.1, rebuilt when the ledger moves.

A standard-library server in a thread. It is bound to 127.0.0.1 only and serves under a random
path (like a notebook server's token), so other users of the machine cannot read the prompts;
the page polls `head.json`, which rebuilds the site when the ledger's head has moved.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from imagen.app.gallery import CSP


class _Handler(SimpleHTTPRequestHandler):
    server: GalleryServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        pass  # requests are not news; errors reach the page

    def handle(self) -> None:
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):
            # The browser hung up mid-answer (a reload, a closed tab): no news, no traceback.
            self.close_connection = True

    def end_headers(self) -> None:
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Cache-Control", "no-store")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Content-Type-Options", "nosniff")
        super().end_headers()

    def list_directory(self, path: Any) -> None:  # type: ignore[override]
        self.send_error(404)
        return None

    def do_HEAD(self) -> None:
        self._route(super().do_HEAD)

    def do_GET(self) -> None:
        self._route(super().do_GET)

    def _route(self, serve_file: Callable[[], None]) -> None:
        prefix = f"/{self.server.token}/"
        path = self.path.split("?", 1)[0]
        if path == prefix.rstrip("/"):
            self.send_response(302)
            self.send_header("Location", prefix)
            self.end_headers()
            return
        if not path.startswith(prefix):
            self.send_error(404)
            return
        if path == prefix + "head.json":
            body = json.dumps({"head": self.server.refresh()}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(body)
            return
        if "\x00" in unquote(path) or "\\" in unquote(path):
            # The standard handler maps the path onto the disk: a NUL byte raises inside it
            # (a traceback on stderr), a backslash is no part of any gallery file's name.
            self.send_error(404)
            return
        self.path = "/" + self.path[len(prefix) :]
        serve_file()


class GalleryServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, directory: Path, port: int, *, head: Callable[[], int], rebuild: Callable[[], int]
    ) -> None:
        self.token = secrets.token_urlsafe(16)
        self.warn: Callable[[str], None] | None = None
        self._head, self._rebuild = head, rebuild
        self._lock = threading.Lock()
        self.built_head = rebuild()
        super().__init__(("127.0.0.1", port), partial(_Handler, directory=str(directory)))

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A request that failed in a way the handler did not foresee: one line, never the
        standard library's traceback on stderr (a client that hung up mid-answer is no news)."""
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError) or self.warn is None:
            return
        self.warn(f"the gallery server could not answer a request ({type(exc).__name__}: {exc})")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{self.token}/"

    def refresh(self) -> int:
        """The head the site shows, rebuilding it first if the ledger has moved (one at a time)."""
        with self._lock:
            try:
                if self._head() != self.built_head:
                    self.built_head = self._rebuild()
            except Exception as exc:  # a ledger or disk hiccup: the page keeps what it shows
                if self.warn is not None:
                    self.warn(f"the gallery could not be rebuilt ({type(exc).__name__}: {exc})")
            return self.built_head

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="gallery-server", daemon=True)
        thread.start()
        return thread
