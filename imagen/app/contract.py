"""The JSON contract (docs/usage.md, "The JSON contract"): the one job object and the one error
object every `--json` output and the MCP server print, with their shapes declared as TypedDicts
and turned into JSON Schema here (`json_schema`), so `imagen discover` publishes what the code
builds and the tests validate real outputs against it.

- A job is `job_object(state)` everywhere: `generate`, `resume`, `wait`, `jobs`, `show`,
  `gallery --json`, MCP tool results. Paths in `image` (the first, or null) and `images` (all);
  money as a six-place decimal string (`cost_usd`, final once the job ended: `cost_final`);
  times in the one machine form, UTC ending in `Z` (core/times.py); `seed` an integer.
- A failure is `error_object(...)`: `{"error": {"code", "exit", "message", "hint", "job_id"}}`,
  where `code` is the stable snake_case name of the exit code (app/exit_codes.py). A failed job's
  object carries the same inner object in its `error` key, so `.error.code` reads both.

Pure apart from the lazy projection imports: no heavy module at import time (start-up).
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, NotRequired, TypedDict

from imagen.app.exit_codes import ExitCode, code_name, hint_for

if typing.TYPE_CHECKING:
    from imagen.core.job import JobState

Status = Literal["requested", "running", "interrupted", "succeeded", "failed", "cancelled"]


class Money(str):
    """A six-place decimal string of US dollars ("0.003000"): the schema says so."""

    PATTERN = r"^-?[0-9]+\.[0-9]{6}$"


class Moment(str):
    """A time in the one machine form, UTC with a `Z` (2026-11-25T12:00:00.000000Z)."""

    PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z$"


class CallerBudget(TypedDict):
    """A budget as it stands for one caller (`usage --by caller --json`, `whoami --json`)."""

    per: Literal["day", "week", "month", "total"]
    backend: str | None
    amount: Money
    spent: Money
    left: Money
    default: bool  # the `*` budget, governing a caller without one of its own


class StandingObject(TypedDict):
    caller: str
    spent: Money
    left: Money


class BudgetObject(TypedDict):
    """One budget as `budget list --json` prints it (the default's standing per caller)."""

    caller: str
    per: Literal["day", "week", "month", "total"]
    backend: str | None
    amount: Money
    window_start: Moment | None
    window_end: Moment | None
    set_by: str
    set_at: Moment
    zone: str | None
    spent: Money | None
    left: Money | None
    callers: NotRequired[list[StandingObject]]


class ErrorBody(TypedDict):
    code: str  # ExitCode's name in snake_case: "over_budget", "not_found", ...
    exit: int  # the process's exit code
    message: str  # the one line also printed on stderr (without "imagen: error: ")
    hint: str | None  # what to do next, when there is something to do
    job_id: str | None  # the job the failure belongs to, if any


class ErrorObject(TypedDict):
    error: ErrorBody


class JobObject(TypedDict):
    job_id: str
    status: Status
    created_at: Moment | None
    finished_at: Moment | None
    backend: str | None
    model: str | None
    caller: str | None
    prompt: str | None
    seed: int | None
    width: int | None
    height: int | None
    steps: int | None
    image: str | None
    images: list[str]
    sidecar: str | None
    sidecars: list[str]
    cost_usd: Money | None  # null when no price is known (local ComfyUI)
    cost_final: bool  # false while the job may still be billed more (not ended)
    latency_ms: int | None
    prediction_id: str | None
    batch: str | None
    batch_index: int | None
    server: str | None  # the ComfyUI pool member, or the overflow backend; null otherwise
    error: ErrorBody | None
    asked: NotRequired[dict[str, Any]]  # what was asked when it differs from what was sent
    expected_size: NotRequired[str]  # the size asked for, when the backend made another


class GeneratedJob(JobObject):
    """`generate --json` (one per line in a batch, with its input's `index`) and `resume`."""

    index: NotRequired[int]


def error_body(
    code: ExitCode | int,
    message: str,
    *,
    hint: str | None = None,
    job_id: str | None = None,
) -> ErrorBody:
    code = ExitCode(code)
    return {
        "code": code_name(code),
        "exit": int(code),
        "message": message,
        "hint": hint if hint is not None else hint_for(code, job_id),
        "job_id": job_id,
    }


def error_object(
    code: ExitCode | int,
    message: str,
    *,
    hint: str | None = None,
    job_id: str | None = None,
) -> ErrorObject:
    """What a failing `--json` command prints on stdout (its one stderr line stays)."""
    return {"error": error_body(code, message, hint=hint, job_id=job_id)}


def job_object(state: JobState, *, status: str | None = None, env: Any = None) -> JobObject:
    """The job as every `--json` output and the MCP server show it. `status` overrides the
    recorded one where the shell decided liveness (a dead owner's `running` is `interrupted`);
    `env`, the process's Environment, tells a Ctrl-C of this run from a recorded cancellation
    (app/outcome.py exit_code)."""
    from imagen.app.outcome import exit_code, failure_message
    from imagen.core.job import iso
    from imagen.projections.cost import cost_usd
    from imagen.projections.sidecar import job_fields, server_of, sidecar

    data = sidecar(state) or job_fields(state)
    req = state.request
    paths = [i.path for i in state.images]
    shown = status or state.status
    # A job under way has no error yet (a requested one waits for its runner: --detach).
    code = ExitCode.OK if shown in ("running", "requested") else exit_code(state, env)
    error = (
        None
        if code == ExitCode.OK
        else error_body(code, failure_message(state) or shown, job_id=state.job_id)
    )
    first = state.history[0].at if state.history else None
    out: JobObject = {
        "job_id": state.job_id,
        "status": shown,  # type: ignore[typeddict-item]
        "created_at": Moment(iso(first)) if first else None,
        "finished_at": Moment(iso(state.history[-1].at)) if state.finished else None,
        "backend": req.backend if req else None,
        "model": req.model if req else None,
        "caller": (req.caller or None) if req else None,
        "prompt": req.prompt if req else None,
        "seed": _integer(data.get("seed")),
        "width": _integer(data.get("width")),
        "height": _integer(data.get("height")),
        "steps": _integer(data.get("steps")),
        "image": paths[0] if paths else None,
        "images": paths,
        "sidecar": f"{paths[0]}.json" if paths else None,
        "sidecars": [f"{p}.json" for p in paths],
        "cost_usd": _money(cost_usd(state)),
        "cost_final": state.finished,
        "latency_ms": _integer(data.get("latency_ms")),
        "prediction_id": data.get("prediction_id"),
        "batch": (req.batch or None) if req else None,
        "batch_index": req.batch_index if req and req.batch else None,
        "server": server_of(state),
        "error": error,
    }
    if "asked" in data:
        out["asked"] = data["asked"]
    if "expected_size" in data:
        out["expected_size"] = data["expected_size"]
    return out


def _integer(value: object) -> int | None:
    """Seeds and sizes as integers whatever the adapter read back (a seed may be sent as text)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _money(value: str | None) -> Money | None:
    return None if value is None else Money(value)


def seed_integer(value: object) -> int | None:
    """A seed as an integer (usage rows keep it as text: 0..2^64-1 fits no SQL integer)."""
    return _integer(value)


# -- JSON Schema from the TypedDicts above (and the other outputs' declarations) ----------------


def json_schema(tp: Any) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12 subset) of a type: TypedDicts become closed objects with
    their required keys, `X | None` allows null, list[X] arrays, Literal enums, Money and
    Moment patterned strings."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any or tp is object:
        return {}
    if tp is type(None) or tp is None:
        return {"type": "null"}
    if origin in (typing.Union, types.UnionType):
        options = [json_schema(a) for a in args]
        return {"anyOf": options}
    if origin is Literal:
        return {"enum": list(args)}
    if origin is NotRequired:
        return json_schema(args[0])
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        return {"type": "array", **({"items": json_schema(args[0])} if args else {})}
    if origin is dict or tp is dict:
        return {"type": "object"}
    if isinstance(tp, type) and issubclass(tp, (Money, Moment)):
        return {"type": "string", "pattern": tp.PATTERN}
    if isinstance(tp, type) and typing.is_typeddict(tp):
        # NotRequired is read from the hints: under `from __future__ import annotations` the
        # class's own __required_keys__ cannot see it (it sees strings).
        hints = typing.get_type_hints(tp, include_extras=True)
        return {
            "type": "object",
            "properties": {k: json_schema(v) for k, v in hints.items()},
            "required": [k for k, v in hints.items() if typing.get_origin(v) is not NotRequired],
            "additionalProperties": False,
        }
    simple = {str: "string", bool: "boolean", int: "integer", float: "number"}
    if tp in simple:
        return {"type": simple[tp]}
    raise TypeError(f"no JSON Schema for {tp!r}")


def array_of(tp: Any) -> dict[str, Any]:
    return {"type": "array", "items": json_schema(tp)}
