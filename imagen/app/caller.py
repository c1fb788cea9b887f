"""Who is generating: MAI_FROM_ID, else the tmux pane's @mai-name, else the OS user."""

from __future__ import annotations

import getpass
import shutil
import subprocess
from collections.abc import Mapping


def resolve_caller(env: Mapping[str, str]) -> str:
    return resolve_caller_source(env)[0]


def resolve_caller_source(env: Mapping[str, str]) -> tuple[str, str]:
    """The caller and where it came from: "env" (MAI_FROM_ID), "tmux" (the pane's @mai-name)
    or "default" (the OS user), as `imagen whoami` reports."""
    if env.get("MAI_FROM_ID"):
        return env["MAI_FROM_ID"], "env"
    pane = env.get("TMUX_PANE")
    if pane and env.get("TMUX") and shutil.which("tmux"):
        try:
            out = subprocess.run(
                ["tmux", "display-message", "-p", "-t", pane, "#{@mai-name}"],
                capture_output=True,
                text=True,
                timeout=2,
                env=dict(env),
            )
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip(), "tmux"
        except (OSError, subprocess.TimeoutExpired):
            pass
    try:
        return getpass.getuser(), "default"
    except Exception:
        return "unknown", "default"
