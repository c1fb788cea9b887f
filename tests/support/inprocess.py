"""Driving a job in this process: the real app layer (config, prepare) and the real Runner,
with its transports and environment passed in. The backends are the doubles on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from imagen.app.config import parse_config
from imagen.app.prepare import Prepared, prepare
from imagen.app.runners import new_runner
from imagen.core.inputs import GenerateInputs
from imagen.core.job import JobState
from imagen.runner.environment import Environment
from imagen.runner.transports import HttpTransport, StreamTransport


@dataclass
class ManualTime:
    """A clock that moves only when the runner sleeps: waits cost no wall time and are seen."""

    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    slept: list[float] = field(default_factory=list)

    def clock(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)


def environment(
    env: Mapping[str, str] | None = None, time: ManualTime | None = None
) -> Environment:
    if time is None:
        return Environment(env=dict(env or {}))
    return Environment(env=dict(env or {}), clock=time.clock, sleep=time.sleep)


def prepared(
    out: Path,
    backend_type: str,
    options: Mapping[str, Any],
    inputs: GenerateInputs,
    envt: Environment,
) -> Prepared:
    """A job request exactly as `imagen generate` would record it."""
    config = parse_config(
        {
            "default_backend": "b",
            "backends": {"b": {"type": backend_type, **options}},
            "output": {"directory": str(out)},
        },
        "test config",
        envt.env,
    )
    return prepare(config, None, inputs, output=None, overwrite=False, env=envt, caller="test")


def drive(
    store: Any,
    job: Prepared,
    envt: Environment,
    *,
    http: HttpTransport | None = None,
    streams: StreamTransport | None = None,
) -> JobState:
    runner = new_runner(store, envt, http=http, streams=streams)
    runner.submit(job.job_id, job.request)
    return runner.run(job.job_id)
