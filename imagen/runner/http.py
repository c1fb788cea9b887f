"""The only HTTP client: urllib3 with explicit timeouts and no hidden retries (every retry is
an event, decided by an adapter).

Every request has a total deadline (`timeout_s`), not only a per-read timeout: a server that
trickles one byte at a time resets urllib3's read timeout forever, so a watchdog shuts the
request's socket down when the deadline passes. What is read of a reply is bounded too.
"""

from __future__ import annotations

import json
import math
import socket
import threading
from dataclasses import dataclass
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from imagen import __version__
from imagen.runner import signals

USER_AGENT = f"imagen/{__version__} (+urllib3)"

# API replies (JSON) are small; /queue or /object_info on a busy ComfyUI are the largest we
# expect. More than this is read no further and recorded only as a truncated excerpt.
API_MAX_BYTES = 16 * 1024 * 1024
# An error reply is recorded whole only when it is small: a 50 MB error page must not grow the
# ledger by 50 MB (nor reach stderr).
ERROR_BODY_KEEP = 64 * 1024
EXCERPT_CHARS = 2000
_CHUNK = 256 * 1024


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    data: bytes
    truncated: bool = False  # the server sent more than was read

    def body(self) -> Any:
        """JSON when it parses, else text (gateways answer 5xx with HTML); an excerpt when the
        reply was cut short or is a large error."""
        if self.truncated or (self.status >= 300 and len(self.data) > ERROR_BODY_KEEP):
            excerpt = self.data[:EXCERPT_CHARS].decode("utf-8", "replace")
            more = "more than " if self.truncated else ""
            return f"{excerpt}… [reply cut: {more}{len(self.data)} bytes]"
        text = self.data.decode("utf-8", "replace")
        try:
            # NaN/Infinity are not JSON (Python accepts them), and 1e400 would parse to inf:
            # the ledger could not record them, so such a reply is kept as text. So is one
            # nested past any API's depth (a RecursionError in the parser or, later, in the
            # event checks and the scrubber that walk it).
            value = json.loads(text, parse_constant=_not_json, parse_float=_finite)
        except (ValueError, RecursionError):
            return text[:EXCERPT_CHARS]
        return value if depth_at_most(value, MAX_DEPTH) else text[:EXCERPT_CHARS]


# Replicate's predictions and ComfyUI's /history (graphs included) nest about ten deep.
MAX_DEPTH = 64


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is not a finite number")
    return value


def depth_at_most(value: Any, limit: int) -> bool:
    """Is `value` nested no deeper than `limit`? (Walked without recursion.)"""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            if depth >= limit:
                return False
            stack.extend((child, depth + 1) for child in item)
    return True


class TransportFailure(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # refused | timeout | network | too_large


class _Watch:
    """The connections one request used; shut down together when its deadline passes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.conns: list[Any] = []
        self.expired = False

    def register(self, conn: Any) -> None:
        with self.lock:
            self.conns.append(conn)
            if self.expired:
                _shut(conn)

    def expire(self) -> None:
        with self.lock:
            self.expired = True
            for conn in self.conns:
                _shut(conn)


def _shut(conn: Any) -> None:
    sock = getattr(conn, "sock", None)
    if sock is not None:
        try:
            # shutdown (not close) wakes a recv blocked in another thread; works under TLS too.
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


_current = threading.local()


class _Watched:
    """Mixed into urllib3's connections: each request registers with the caller's watch."""

    def request(self, *args: Any, **kwargs: Any) -> Any:
        watch = getattr(_current, "watch", None)
        if watch is not None:
            watch.register(self)
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_Watched, HTTPConnection):
    pass


class _HTTPSConnection(_Watched, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class Http:
    def __init__(self) -> None:
        self.pool = urllib3.PoolManager(retries=False, maxsize=4)
        self.pool.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    def send(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        json_body: Any = None,
        timeout_s: float,
        max_bytes: int | None = None,
        keep_bytes: int = API_MAX_BYTES,
    ) -> Reply:
        """One request, finished (headers and body) within `timeout_s` in total.

        `max_bytes`: a larger reply is a failure ("too_large", for image downloads).
        `keep_bytes`: read at most this much; a longer reply comes back `truncated`."""
        headers = {"User-Agent": USER_AGENT, **headers}
        body = None
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        timeout = urllib3.Timeout(connect=min(5.0, timeout_s), read=timeout_s)
        watch = _Watch()
        timer = threading.Timer(timeout_s, watch.expire)
        timer.daemon = True
        _current.watch = watch
        try:
            signals.start(timer)  # a stop signal is the main thread's (runner/signals.py)
            return self._send(method, url, headers, body, timeout, max_bytes, keep_bytes, watch)
        except TransportFailure as failure:
            if watch.expired and failure.kind != "too_large":
                raise TransportFailure(
                    "timeout", f"no complete reply within {timeout_s:g} s"
                ) from None
            raise
        finally:
            timer.cancel()
            _current.watch = None

    def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | None,
        timeout: urllib3.Timeout,
        max_bytes: int | None,
        keep_bytes: int,
        watch: _Watch,
    ) -> Reply:
        limit = max_bytes if max_bytes is not None else keep_bytes
        try:
            resp = self.pool.request(
                method,
                url,
                body=body,
                headers=headers,
                timeout=timeout,
                preload_content=False,
                redirect=False,
            )
            complete = False
            try:
                chunks: list[bytes] = []
                size = 0
                while size <= limit:
                    chunk = resp.read(amt=min(_CHUNK, limit + 1 - size))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
                data = b"".join(chunks)
                if watch.expired:
                    # The deadline cut the reply short; an EOF after shutdown looks like an end.
                    raise TransportFailure("timeout", "deadline passed")
                truncated = len(data) > limit
                if truncated and max_bytes is not None:
                    raise TransportFailure("too_large", f"response larger than {max_bytes} bytes")
                complete = not truncated
                return Reply(
                    resp.status,
                    {k.lower(): v for k, v in resp.headers.items()},
                    data[:limit],
                    truncated,
                )
            finally:
                if not complete:
                    resp.close()  # the rest is never read: do not reuse this connection
                resp.release_conn()
        except (NewConnectionError, ConnectionRefusedError) as exc:
            raise TransportFailure("refused", _short(exc)) from None
        except (ConnectTimeoutError, ReadTimeoutError, TimeoutError) as exc:
            raise TransportFailure("timeout", _short(exc)) from None
        except MaxRetryError as exc:
            reason = exc.reason
            kind = (
                "refused"
                if isinstance(reason, NewConnectionError)
                else "timeout"
                if isinstance(reason, ConnectTimeoutError | ReadTimeoutError)
                else "network"
            )
            raise TransportFailure(kind, _short(reason or exc)) from None
        except (ProtocolError, HTTPError, OSError) as exc:
            raise TransportFailure("network", _short(exc)) from None


def _short(exc: BaseException) -> str:
    text = str(exc)
    # urllib3 messages embed object reprs; keep the human part.
    if "Failed to establish a new connection:" in text:
        text = text.split("Failed to establish a new connection:", 1)[1].strip()
    return f"{type(exc).__name__}: {text}"[:300]
