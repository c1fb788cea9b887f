"""What the runner needs from the network, as small protocols, and the real websocket
transport. The runner takes its transports as arguments (defaults: the real ones), so a test
can drive it in-process and put a recording or faulty transport in between."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from imagen.runner.http import Reply


class HttpTransport(Protocol):
    """Sends one request, returns a Reply or raises runner.http.TransportFailure."""

    def send(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        json_body: Any = None,
        timeout_s: float,
        max_bytes: int | None = None,
    ) -> Reply: ...


class StreamDropped(Exception):
    """The stream's connection closed (the server went away or closed it)."""


class StreamRejected(Exception):
    """The server answered the upgrade, but not as a websocket (e.g. a proxy without
    websocket support): polling is the way, not reconnecting."""


class Stream(Protocol):
    def recv(self, timeout: float) -> str | bytes:
        """The next message; TimeoutError when none came in time; StreamDropped when closed."""
        ...

    def close(self) -> None: ...


class StreamTransport(Protocol):
    def connect(self, url: str, *, headers: dict[str, str], timeout_s: float) -> Stream:
        """An open stream, or any exception when it cannot be opened (refused, rejected
        handshake, timeout): the runner records that as a failed request."""
        ...


class Websockets:
    """The real stream transport: a websocket (the `websockets` library's sync client).

    A silent network drop is noticed by keepalive pings: one every `ping_interval` s, the
    connection given up when a pong takes more than `ping_timeout` s (~20 s by default, not
    the library's 40 s)."""

    def __init__(self, ping_interval: float = 10, ping_timeout: float = 10) -> None:
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout

    def connect(self, url: str, *, headers: dict[str, str], timeout_s: float) -> Stream:
        from websockets.exceptions import InvalidHandshake
        from websockets.sync.client import connect

        from imagen.runner import signals

        connection: Any = None
        try:
            # Its reader and keepalive threads are started in here: blocked, they inherit the
            # block (a stop signal is the main thread's, runner/signals.py). One that comes
            # during the handshake (open_timeout at most) is handled as this returns.
            with signals.blocked():
                connection = connect(
                    url,
                    open_timeout=timeout_s,
                    close_timeout=1,
                    additional_headers=headers or None,
                    max_size=2**24,
                    # Unbounded: with the default queue a paused reader makes close() wait out
                    # its timeout when unread messages (status, executing null) are pending.
                    max_queue=None,
                    ping_interval=self.ping_interval,
                    ping_timeout=self.ping_timeout,
                    # The library logs a keepalive timeout on a silent network as an error with its
                    # traceback (on stderr when nothing is configured). The runner records the
                    # closed stream as one event and says it in one line: the library says nothing.
                    logger=_silent_logger(),
                )
        except InvalidHandshake as exc:
            raise StreamRejected(f"{type(exc).__name__}: {exc}") from None
        except BaseException:
            if connection is not None:  # opened, then the held signal came: nobody will close it
                connection.close()
            raise
        return _Websocket(connection)


class _Websocket:
    def __init__(self, connection: Any) -> None:
        self._connection = connection

    def recv(self, timeout: float) -> str | bytes:
        from websockets.exceptions import ConnectionClosed

        try:
            return self._connection.recv(timeout=timeout)  # type: ignore[no-any-return]
        except ConnectionClosed as exc:
            raise StreamDropped(f"{type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        self._connection.close()


def _silent_logger() -> Any:
    import logging

    logger = logging.getLogger("imagen.websocket")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
        logger.propagate = False
    return logger
