"""Who owns a job: a live pid on this host, or an unexpired lease from another host."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from imagen.app.liveness import owner_alive, proc_start

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)


def test_same_host_uses_the_pid_and_its_start_time() -> None:
    me = os.getpid()
    assert owner_alive(
        pid=me,
        host="h",
        started=proc_start(me),
        claimed_at=None,
        lease_seconds=0,
        my_host="h",
        now=NOW,
    )
    # The same pid with another start time is a reused pid: the owner is gone.
    assert not owner_alive(
        pid=me, host="h", started="1", claimed_at=None, lease_seconds=0, my_host="h", now=NOW
    )
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    # A dead pid means interrupted at once, however fresh the lease.
    assert not owner_alive(
        pid=int(dead.stdout),
        host="h",
        started="",
        claimed_at=NOW,
        lease_seconds=3600,
        my_host="h",
        now=NOW,
    )


def test_another_host_relies_on_the_lease() -> None:
    claimed = NOW - timedelta(seconds=100)
    assert owner_alive(
        pid=1, host="other", started="", claimed_at=claimed, lease_seconds=120, my_host="h", now=NOW
    )
    assert not owner_alive(
        pid=1, host="other", started="", claimed_at=claimed, lease_seconds=60, my_host="h", now=NOW
    )
