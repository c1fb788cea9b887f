"""A half-open network drop mid-job (issue #25, defect 2), end to end: imagen through a TCP
forwarder (imagen/testing/netcut.py) to the ComfyUI double, whose socket table pops a client id
when any connection under it closes, as the real server's does.

imagen's side of every connection is cut; imagen reconnects; only then does the server notice
the old connections end (the worst order: a reconnect under the same client id would be popped
and hear nothing until the deadline). The prompt still runs, then finishes: imagen must end
with the image long before the deadline, in well under 200 events."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from imagen.testing.comfyui import ComfyUIDouble
from imagen.testing.netcut import CutProxy
from tests.support.cli import Sandbox

DEADLINE_S = 600  # what a silent socket would wait for; the test allows a fraction of it
WAIT_S = 120  # generous for a loaded machine, far below the deadline


@contextmanager
def reaped(proc: subprocess.Popen[str]) -> Iterator[None]:
    """A failed check leaves no imagen running."""
    try:
        yield
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_a_half_open_drop_mid_job_ends_with_the_image_not_at_the_deadline(
    tmp_path: Path,
) -> None:
    with ComfyUIDouble(step_time=0.01) as comfy, CutProxy(comfy.port) as proxy:
        box = Sandbox(tmp_path)
        box.write_backend(
            "local", "comfyui", url=proxy.url, poll_interval_s=0.05, timeout_s=DEADLINE_S
        )
        comfy.hold_at_step(2)
        out = tmp_path / "img.png"
        proc = box.popen("generate", "a fox", "--steps", "8", "--output", str(out))
        with reaped(proc):
            comfy.wait_until(lambda c: c.held is not None, timeout=WAIT_S)
            assert comfy.websockets_opened == 1
            assert proxy.cut_clients() >= 1  # imagen's side ends now
            # imagen reconnects while the server still holds the old connection open.
            comfy.wait_until(lambda c: c.websockets_opened == 2, timeout=WAIT_S)
            assert proxy.cut_servers() >= 1  # the server notices the old connection's end
            # Under the posted client id the new socket would now be out of the table, deaf.
            comfy.release()
            stdout, stderr = proc.communicate(timeout=WAIT_S)
        assert proc.returncode == 0, stderr
        assert stdout.strip() == str(out) and out.is_file()
        events = box.types(box.only_job())
        assert events[-1] == "JobSucceeded"
        assert len(events) < 200, events
        assert comfy.submitted == 1 and comfy.executed == 1  # one execution, no resubmit
        assert "CancelRequested" not in events


def test_a_server_gone_mid_job_is_said_once_with_how_to_stop_and_resume(tmp_path: Path) -> None:
    """Issue #25 defect 7: ComfyUI out of reach mid-job; with -v (as on a terminal) one line
    says since when, that imagen keeps trying until the deadline, and Ctrl-C + resume."""
    with ComfyUIDouble(step_time=0.01) as comfy:
        box = Sandbox(tmp_path)
        box.write_backend("local", "comfyui", url=comfy.url, poll_interval_s=0.05, timeout_s=60)
        comfy.hold_at_step(2)
        proc = box.popen("-v", "generate", "a fox", "--steps", "8")
        with reaped(proc):
            comfy.wait_until(lambda c: c.held is not None, timeout=WAIT_S)
            comfy.go_offline()
            assert proc.stderr is not None
            seen = []
            for line in proc.stderr:  # -v: one line per event, so this never stalls long
                seen.append(line)
                if "unreachable since" in line:
                    break
            comfy.go_online()
            comfy.release()
            rest, err = proc.communicate(timeout=WAIT_S)
        assert proc.returncode == 0, err
        said = [x for x in [*seen, *err.splitlines()] if "unreachable since" in x]
        assert len(said) == 1, seen
        job = box.only_job()
        assert "keeps trying until the deadline" in said[0]
        assert f"Ctrl-C, then `imagen resume {job}`" in said[0]
