"""A long catch-up or audit shows how far it got on a terminal (issue #29): a bar with events/s
on stderr, cleared when it ends; nothing with --json or when stderr is not a terminal.

Run through a real pseudo-terminal. IMAGEN_PROGRESS_AFTER=0 shows the bar at once (a real one
waits a second), so the verdict does not depend on the machine's speed."""

from __future__ import annotations

import os
import pty
import subprocess

from tests.support.cli import Sandbox


def _on_a_terminal(sandbox: Sandbox, *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, what the terminal on stderr showed)."""
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            sandbox.cmd(*args),
            stdout=subprocess.PIPE,
            stderr=follower,
            env={**sandbox.env, "IMAGEN_PROGRESS_AFTER": "0"},
            cwd=sandbox.root,
            text=True,
        )
        os.close(follower)
        follower = -1
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the command ended and closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        out, _ = proc.communicate(timeout=120)
        return proc.returncode, out, shown.decode(errors="replace")
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)


def test_a_catch_up_and_an_audit_show_a_bar_that_is_cleared(sandbox: Sandbox) -> None:
    for prompt in ("a fox", "a cat"):
        assert sandbox.run("generate", prompt).returncode == 0
    code, out, shown = _on_a_terminal(sandbox, "usage")  # its table is behind: never caught up
    assert code == 0 and "echo" in out
    assert "catching up usage [" in shown and "events, " in shown and "/s" in shown
    assert shown.rstrip().endswith("\x1b[K")  # the line cleared: the table is what remains
    code, out, shown = _on_a_terminal(sandbox, "audit")
    assert code == 0 and "audit [" in shown and "events/s" not in out
    # --json prints no bar, even on a terminal
    assert sandbox.run("generate", "a dog").returncode == 0
    code, out, shown = _on_a_terminal(sandbox, "usage", "--json")
    assert code == 0 and "catching up" not in shown
    code, out, shown = _on_a_terminal(sandbox, "-q", "audit")  # -q: only data and errors
    assert code == 0 and "audit [" not in shown
