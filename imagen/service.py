"""The library behind the CLI: prepare a job, run it, map its end to an exit code."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagen import __version__, backends
from imagen.config import BackendConfig, Config
from imagen.environment import Environment
from imagen.errors import UserError
from imagen.events import JobCancelled, JobFailed, JobRequested, JobSucceeded
from imagen.exit_codes import ExitCode
from imagen.job import JobState
from imagen.pricing import price_for
from imagen.request import BadInput, GenerateInputs, file_name


def new_job_id() -> str:
    return secrets.token_hex(8)


def new_seed() -> int:
    return secrets.randbelow(2**31)


@dataclass(frozen=True)
class Prepared:
    job_id: str
    request: JobRequested


def prepare(
    config: Config,
    backend_name: str | None,
    inputs: GenerateInputs,
    *,
    output: str | None,
    overwrite: bool,
    env: Environment,
    caller: str,
) -> Prepared:
    """Validate everything before anything is recorded: a bad input costs nothing."""
    backend: BackendConfig = config.backend(backend_name)
    module = backends.load(backend.type)
    try:
        params = module.normalise(inputs, backend.options)
    except BadInput as exc:
        raise UserError(str(exc), ExitCode.BAD_INPUT) from None
    status = module.status(backend.options, env.env)
    if status != "ok":
        raise UserError(f"backend {backend.name} is {status}", ExitCode.BAD_INPUT)
    options = dict(backend.options)
    for key in getattr(module, "FILE_OPTIONS", ()):
        if options.get(key):
            path = Path(options[key]).expanduser()
            try:
                options[f"{key}_content"] = path.read_text()
            except OSError as exc:
                raise UserError(
                    f"backends.{backend.name}.{key}: cannot read {path}: {exc.strerror}",
                    ExitCode.BAD_INPUT,
                ) from None
    if output:
        dest = Path(output).expanduser()
    else:
        date = env.clock().strftime("%Y%m%d-%H%M%S")
        dest = Path(config.output.directory).expanduser() / file_name(
            date, inputs.prompt, inputs.seed, params["output_format"]
        )
    dest = dest.absolute()
    if dest.exists() and not overwrite:
        raise UserError(f"{dest} already exists (use --force to overwrite)", ExitCode.BAD_INPUT)
    if dest.is_dir():
        raise UserError(f"--output {dest} is a directory; give a file path", ExitCode.BAD_INPUT)
    if hasattr(module, "validate_request"):
        try:
            module.validate_request(params, options)
        except BadInput as exc:
            raise UserError(str(exc), ExitCode.BAD_INPUT) from None
    request = JobRequested(
        backend=backend.name,
        backend_type=backend.type,
        model=backend.model,
        prompt=inputs.prompt,
        params=params,
        backend_config=options,
        output_path=str(dest),
        overwrite=overwrite,
        caller=caller,
        price_usd=price_for(backend.model, options.get("price_usd")),
        imagen_version=__version__,
    )
    return Prepared(new_job_id(), request)


def exit_code(state: JobState) -> ExitCode:
    t = state.terminal
    if isinstance(t, JobSucceeded):
        return ExitCode.OK
    if isinstance(t, JobCancelled):
        return ExitCode.INTERRUPTED if t.reason == "user" else ExitCode.JOB_FAILED
    if isinstance(t, JobFailed):
        return (
            ExitCode(t.exit_code)
            if t.exit_code in ExitCode._value2member_map_
            else ExitCode.JOB_FAILED
        )
    return ExitCode.TERMINATED


def failure_message(state: JobState) -> str | None:
    t = state.terminal
    if isinstance(t, JobFailed):
        return t.message
    if isinstance(t, JobCancelled):
        return f"job {state.job_id} cancelled ({t.reason})" + (
            "; the remote job was cancelled" if t.remote_cancelled else ""
        )
    if t is None:
        return f"job {state.job_id} interrupted; finish it with `imagen resume {state.job_id}`"
    return None


def resolve_job_id(store: Any, prefix: str) -> str:
    found = store.streams_with_prefix(prefix, limit=2) if prefix else []
    if not found:
        raise UserError(f"no job matches {prefix!r} (see `imagen jobs`)", ExitCode.NOT_FOUND)
    if len(found) > 1 and prefix not in found:
        raise UserError(
            f"{prefix!r} matches several jobs; give more characters", ExitCode.BAD_INPUT
        )
    return prefix if prefix in found else found[0]


def summary(state: JobState) -> dict[str, Any]:
    from imagen.projections.sidecar import sidecar

    data = sidecar(state) or {}
    return {
        "job_id": state.job_id,
        "status": state.status,
        "image": state.image.path if state.image else None,
        "sidecar": f"{state.image.path}.json" if state.image else None,
        **{
            k: data.get(k)
            for k in (
                "backend",
                "model",
                "seed",
                "width",
                "height",
                "steps",
                "latency_ms",
                "cost_usd_estimate",
                "prediction_id",
            )
        },
        "error": failure_message(state),
    }
