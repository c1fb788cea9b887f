"""The only HTTP client: urllib3 with explicit timeouts and no hidden retries (every retry is
an event, decided by an adapter)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from imagen import __version__

USER_AGENT = f"imagen/{__version__} (+urllib3)"


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    data: bytes

    def body(self) -> Any:
        """JSON when it parses, else text (gateways answer 5xx with HTML)."""
        text = self.data.decode("utf-8", "replace")
        try:
            return json.loads(text)
        except ValueError:
            return text[:2000]


class TransportFailure(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # refused | timeout | network


class Http:
    def __init__(self) -> None:
        self.pool = urllib3.PoolManager(retries=False, maxsize=4)

    def send(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        json_body: Any = None,
        timeout_s: float,
        max_bytes: int | None = None,
    ) -> Reply:
        headers = {"User-Agent": USER_AGENT, **headers}
        body = None
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        timeout = urllib3.Timeout(connect=min(5.0, timeout_s), read=timeout_s)
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
            try:
                data = resp.read(amt=max_bytes + 1) if max_bytes else resp.read()
                if max_bytes and len(data) > max_bytes:
                    raise TransportFailure("too_large", f"response larger than {max_bytes} bytes")
                return Reply(resp.status, {k.lower(): v for k, v in resp.headers.items()}, data)
            finally:
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
