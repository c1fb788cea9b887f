"""Running the real CLI in a subprocess with an isolated config, ledger and output dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger import IDENTITY_STREAM, open_store

ROOT = Path(__file__).resolve().parents[2]

# Every process a test started with `Sandbox.popen`; tests/conftest.py kills the ones still
# running when their test ends. A stray imagen outlives its test's double, and its port may be
# handed to a later test's double, which the stray would then talk to (reconnect, resubmit).
STARTED: list[subprocess.Popen[str]] = []


@dataclass
class Sandbox:
    root: Path
    ledger_url: str = ""
    env: dict[str, str] = field(default_factory=dict)
    # The module run as the CLI: "imagen", or "tests.support.imagen_cli" (imagen plus the
    # test-only echo adapter).
    entry: str = "imagen"

    def __post_init__(self) -> None:
        self.ledger_url = self.ledger_url or f"sqlite:///{self.root / 'ledger.db'}"
        self.out = self.root / "out"
        self.env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("IMAGEN_", "REPLICATE_", "TMUX", "MAI_"))
            },
            "IMAGEN_CONFIG": str(self.root / "config.toml"),
            "IMAGEN_LEDGER_URL": self.ledger_url,
            "IMAGEN_TESTING": "1",
            "IMAGEN_PREVIEW": "off",
            "PYTHONPATH": str(ROOT),
            **self.env,
        }

    def write_config(self, text: str) -> None:
        (self.root / "config.toml").write_text(text)

    def write_backend(self, name: str, type_: str, **options: object) -> None:
        """A config with one backend (the default) and the output dir inside the sandbox."""
        lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in options.items())
        self.write_config(
            f'default_backend = "{name}"\n[backends.{name}]\ntype = "{type_}"\n{lines}\n'
            f'[output]\ndirectory = "{self.root / "out"}"\n'
        )

    def only_job(self) -> str:
        [job_id] = self.job_ids()
        return job_id

    def cmd(self, *args: str, env: dict[str, str] | None = None) -> list[str]:
        return [sys.executable, "-m", self.entry, *args]

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.cmd(*args),
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**self.env, **(env or {})},
            cwd=self.root,
        )

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            self.cmd(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**self.env, **(env or {})},
            cwd=self.root,
        )
        STARTED.append(proc)
        return proc

    def store(self):  # type: ignore[no-untyped-def]
        return open_store(self.ledger_url)

    def events(self, job_id: str | None = None) -> list[Any]:
        store = self.store()
        try:
            if job_id is None:
                return list(store.read_all())
            return store.read_stream(job_id)
        finally:
            store.close()

    def job_ids(self) -> list[str]:
        seen: dict[str, None] = {}
        for e in self.events():
            if e.stream_id != IDENTITY_STREAM and not e.stream_id.startswith("$"):
                seen.setdefault(e.stream_id, None)  # "$budgets" and the like: not jobs
        return list(seen)

    def types(self, job_id: str) -> list[str]:
        return [e.type for e in self.events(job_id)]

    def ledger_text(self) -> str:
        return "\n".join(json.dumps([e.type, e.data_json]) for e in self.events())
