"""A TCP forwarder on 127.0.0.1 that can cut its connections one side at a time, for tests,
benchmarks and checks by hand against a real server.

    with CutProxy(comfy.port) as proxy:      # imagen talks to proxy.url
        proxy.cut_clients()                  # imagen's side ends now ...
        proxy.cut_servers()                  # ... the server notices later (a half-open drop)

Between the two cuts the server still holds the old connections open while the client may
already have connected again: the state a Wi-Fi, VPN or tunnel drop leaves behind.

Standalone (a real ComfyUI on 8192, imagen configured for 8191; type `cut` to cut):

    python -m imagen.testing.netcut 8191 8192 2.0
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from collections.abc import Sequence


class CutProxy:
    """Forwards 127.0.0.1:`port` (0: any free port) to 127.0.0.1:`target_port`; ready when the
    constructor returns."""

    def __init__(self, target_port: int, port: int = 0, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._cut_clients: list[socket.socket] = []
        self._deliberate: set[int] = set()  # ids of client sockets cut on purpose
        self.accepted = 0  # connections accepted so far (a readiness check for tests)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, port))
        self._listener.listen(64)
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://{host}:{self.port}"
        self._closed = False
        threading.Thread(target=self._accept, name="netcut-accept", daemon=True).start()

    def cut_clients(self) -> int:
        """End every open connection on the client's side (it sees the connection close); the
        server's side stays open and silent until cut_servers(). Returns how many were cut."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
            self._cut_clients.extend(server for _, server in pairs)
            self._deliberate.update(id(client) for client, _ in pairs)
        for client, _ in pairs:
            _end(client)
        return len(pairs)

    def cut_servers(self) -> int:
        """End the server's side of the connections cut_clients() left open."""
        with self._lock:
            servers, self._cut_clients = self._cut_clients, []
        for server in servers:
            _end(server)
        return len(servers)

    def close(self) -> None:
        self._closed = True
        _end(self._listener)
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, server in pairs:
            _end(client)
            _end(server)
        self.cut_servers()

    def __enter__(self) -> CutProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=10)
                server.settimeout(None)
            except OSError:
                _end(client)
                continue
            with self._lock:
                self._pairs.append((client, server))
                self.accepted += 1
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        """Copy until either side ends, then end the other, unless the end was a deliberate
        client cut (the server's side then stays open until cut_servers). A write to a side
        already cut is dropped: the bytes a half-open connection's sender believes it sent."""
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                with self._lock:
                    deliberate = id(src) in self._deliberate
                if not deliberate:
                    _end(dst)
                return
            with contextlib.suppress(OSError):
                dst.sendall(data)


def _end(sock: socket.socket) -> None:
    # shutdown wakes a thread blocked in recv on it (close alone does not on Linux).
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) not in (2, 3):
        print("usage: python -m imagen.testing.netcut PORT TARGET_PORT [SERVER_AFTER_S]")
        return 2
    after = float(args[2]) if len(args) == 3 else 2.0
    with CutProxy(int(args[1]), int(args[0])) as proxy:
        print(f"forwarding {proxy.url} -> 127.0.0.1:{args[1]}; type `cut` (Ctrl-D ends)")
        for line in sys.stdin:
            if line.strip() == "cut":
                n = proxy.cut_clients()
                print(f"{time.strftime('%H:%M:%S')} cut {n} client side(s)", flush=True)
                time.sleep(after)
                m = proxy.cut_servers()
                print(f"{time.strftime('%H:%M:%S')} cut {m} server side(s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
