"""Preparing a job: validate everything the user gave before anything is recorded."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from imagen import __version__, backends
from imagen.app.config import BackendConfig, Config
from imagen.app.errors import UserError
from imagen.app.exit_codes import ExitCode
from imagen.core.events import JobRequested
from imagen.core.inputs import BadInput, GenerateInputs, file_name
from imagen.core.pricing import price_for
from imagen.runner.environment import Environment


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
    for key in module.FILE_OPTIONS:
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
