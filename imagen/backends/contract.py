"""What a backend adapter is: the `Backend` protocol every adapter module satisfies, and
`Option`, how it declares its configuration keys (validated by imagen.app.config).

Callers (app/prepare.py, app/config.py, cli/backends.py, runner/loop.py) use only what this
protocol declares; tests/test_backend_conformance.py checks every registered adapter against it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from imagen.core.actions import Action, FrameOutcome
    from imagen.core.inputs import GenerateInputs
    from imagen.core.job import JobState


@dataclass(frozen=True)
class Option:
    types: tuple[type, ...]
    default: Any = None
    help: str = ""
    choices: tuple[Any, ...] = ()
    url: bool = False  # an http(s) URL with a host
    minimum: float | None = None  # inclusive
    maximum: float | None = None  # inclusive
    positive: bool = False  # strictly above zero

    def describe(self) -> str:
        if self.choices:
            return " | ".join(repr(c) for c in self.choices)
        if self.url:
            return "an http(s) URL such as http://127.0.0.1:8188"
        kind = " or ".join("number" if t is float else t.__name__ for t in self.types)
        if self.positive:
            kind += " above 0"
        if self.minimum is not None:
            kind += f" >= {self.minimum:g}"
        if self.maximum is not None:
            kind += f" <= {self.maximum:g}"
        return kind


COMMON: dict[str, Option] = {
    "type": Option((str,), help="backend type"),
    "model": Option((str,), help="model reference"),
    "price_usd": Option((float, int), help="per-image price override, USD", minimum=0),
    "timeout_s": Option(
        (float, int), help="give up (and cancel remotely) after this many seconds", positive=True
    ),
    "default_steps": Option((int,), help="inference steps when --steps is not given", minimum=1),
    "max_concurrency": Option(
        (int,),
        help="jobs in flight at once in a batch (default 12 on Replicate, 2 on ComfyUI)",
        minimum=1,
        maximum=64,
    ),
}


class Backend(Protocol):
    """A backend type: a module of pure functions and constants (no I/O, clock or randomness).

    A module satisfies this protocol structurally; `imagen.backends.load` returns it typed so.
    """

    CONFIG: Mapping[str, Option]
    """Its configuration keys beyond COMMON."""
    DEFAULT_MODEL: str
    """The model used when the config names none."""
    FILE_OPTIONS: tuple[str, ...]
    """Options naming a file whose content is recorded with the request (as `<key>_content`),
    so a resume uses what the first run read."""
    RECORDED_HEADERS: frozenset[str]
    """Response headers (lower case) the runner records with each response: what decide reads
    (Retry-After, rate limits) and what an audit wants. Everything else is dropped."""

    def decide(self, state: JobState) -> Action:
        """The next action for a job, a pure function of its recorded events. Never raises."""
        ...

    def interpret_frame(self, context: dict[str, Any], frame: str | bytes) -> FrameOutcome:
        """What one frame of a followed stream means (FollowStream): events to record,
        progress to show, whether following is done. Pure; never raises."""
        ...

    def describe_model(self, options: Mapping[str, Any], configured: str) -> str:
        """What the job's model column and sidecar call the model, given the options as
        recorded (with FILE_OPTIONS' contents) and the model the config names."""
        ...

    def normalise(self, inputs: GenerateInputs, options: Mapping[str, Any]) -> dict[str, Any]:
        """The request's params (seed, width, height, steps, output_format, extra...), or
        BadInput naming what to fix."""
        ...

    def validate_request(self, params: Mapping[str, Any], options: Mapping[str, Any]) -> None:
        """Last checks once files are read (FILE_OPTIONS), before anything is recorded:
        raises BadInput."""
        ...

    def sent_inputs(self, state: JobState) -> dict[str, Any]:
        """The inputs of the job's last submission as the backend received them (seed, steps,
        count, output_format, aspect_ratio, extra...), read back from the recorded request
        body: what sidecars and usage report. {} when nothing was sent. Never raises."""
        ...

    def status(self, options: Mapping[str, Any], env: Mapping[str, str]) -> str:
        """'ok', or why the backend cannot be used (e.g. its token variable is not set)."""
        ...

    def probe_request(self, options: Mapping[str, Any]) -> tuple[str, str, str | None]:
        """(method, url, token env var) for `imagen backends --check`."""
        ...

    def check_requests(self, options: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(method, url) of further requests `backends --check` makes after a good probe
        (e.g. what model files the server lists)."""
        ...

    def check_verdict(
        self, options: Mapping[str, Any], answers: list[tuple[int | None, Any]]
    ) -> str | None:
        """None when ready; else what is missing, by name. `answers` are (status, body) per
        check request, status None when it could not be sent."""
        ...

    def probe_verdict(self, status_code: int, body: Any) -> str:
        """What the probe's answer means, in a few words ('ok (...)' when usable)."""
        ...
