"""Input at the edge of its type: digits of other scripts, hostile paths to the gallery server."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from imagen.app.gallery_server import GalleryServer
from imagen.core import budgets as rules
from imagen.core.inputs import BadInput, parse_size
from imagen.core.times import parse_moment


@pytest.mark.parametrize("text", ["١٢", "۵", "１２", "1.٥", "٠.٢٥"])
def test_budget_amounts_take_ascii_digits_only(text: str) -> None:
    with pytest.raises(rules.BadBudget, match="plain decimal"):
        rules.parse_amount(text)


@pytest.mark.parametrize("text", ["١٠٢٤x١٠٢٤", "１０２４x768"])
def test_sizes_take_ascii_digits_only(text: str) -> None:
    with pytest.raises(BadInput, match="WIDTHxHEIGHT"):
        parse_size(text)


@pytest.mark.parametrize("text", ["٣d", "2026-١٢-01"])
def test_ages_and_dates_take_ascii_digits_only(text: str) -> None:
    from datetime import UTC, datetime

    with pytest.raises(BadInput):
        parse_moment(text, datetime(2026, 12, 6, tzinfo=UTC), UTC)


def _ask(port: int, path: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"GET " + path + b" HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("tail", [b"%00", b"a%00.png", b"images/%00x", b"..%5c..%5cetc"])
def test_gallery_server_answers_hostile_paths_without_a_traceback(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], tail: bytes
) -> None:
    (tmp_path / "index.html").write_text("<p>gallery</p>")
    warned: list[str] = []
    server = GalleryServer(tmp_path, 0, head=lambda: 0, rebuild=lambda: 0)
    server.warn = warned.append
    thread = server.start()
    try:
        answer = _ask(server.server_address[1], f"/{server.token}/".encode() + tail)
        ok = _ask(server.server_address[1], f"/{server.token}/index.html".encode())
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)
    assert answer.startswith(b"HTTP/1.0 404"), answer[:80]
    assert ok.startswith(b"HTTP/1.0 200") and b"gallery" in ok
    assert warned == []
    err = capfd.readouterr().err
    assert "Traceback" not in err, err


def test_gallery_server_says_nothing_when_a_client_hangs_up_mid_answer(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import struct

    (tmp_path / "big.png").write_bytes(b"\0" * (16 << 20))  # more than the socket buffers hold
    (tmp_path / "index.html").write_text("<p>gallery</p>")
    warned: list[str] = []
    server = GalleryServer(tmp_path, 0, head=lambda: 0, rebuild=lambda: 0)
    server.warn = warned.append
    thread = server.start()
    port = server.server_address[1]
    try:
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(f"GET /{server.token}/big.png HTTP/1.0\r\n\r\n".encode())
            assert s.recv(1024).startswith(b"HTTP/1.0 200")
            # Gone with a reset (SO_LINGER 0), as a closed tab: the server is mid-answer.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        ok = _ask(port, f"/{server.token}/index.html".encode())
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)
    assert ok.startswith(b"HTTP/1.0 200")
    assert warned == []
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Error" not in err, err


def test_a_name_imagen_chose_that_is_taken_gets_the_next_free_one(tmp_path: Path) -> None:
    # Two agents, one prompt and seed, one second: the same stamped name. The second job takes
    # name_2 (every one of its image names free) instead of failing on the first's file.
    from imagen.app.prepare import _free_name

    name = "20261206-045644-twin-foxes-7.png"
    assert _free_name(tmp_path, name, 1) == tmp_path / name
    (tmp_path / name).write_bytes(b"")
    assert _free_name(tmp_path, name, 1) == tmp_path / "20261206-045644-twin-foxes-7_2.png"
    (tmp_path / "20261206-045644-twin-foxes-7_2-2.png").write_bytes(b"")  # image 2 of _2
    assert _free_name(tmp_path, name, 2) == tmp_path / "20261206-045644-twin-foxes-7_3.png"


def test_whoami_never_prints_a_callers_control_characters_raw(tmp_path: Path) -> None:
    # The caller is whatever MAI_FROM_ID or a tmux option says: a terminal escape in it is
    # shown, not played.
    from tests.support.cli import Sandbox

    box = Sandbox(tmp_path, env={"MAI_FROM_ID": "ev\x1b[31mil"})
    box.write_backend("local", "comfyui", url="http://127.0.0.1:9")
    shown = box.run("whoami")
    assert shown.returncode == 0, shown.stderr
    assert "\x1b" not in shown.stdout and shown.stdout.startswith("ev\\e[31mil\t")
    refused = box.run("generate", "x", "--dry-run", "--detach")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
