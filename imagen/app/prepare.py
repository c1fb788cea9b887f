"""Preparing a job: validate everything the user gave before anything is recorded."""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from imagen import __version__, backends
from imagen.app.config import BackendConfig, Config
from imagen.app.errors import UserError
from imagen.app.exit_codes import ExitCode
from imagen.core.events import JobRequested
from imagen.core.inputs import EXTENSION_FORMATS, BadInput, GenerateInputs, file_name
from imagen.core.job import image_count, image_path
from imagen.core.pricing import below_table, price_for
from imagen.core.times import file_stamp
from imagen.runner.environment import Environment


def new_job_id() -> str:
    return secrets.token_hex(8)


def new_seed() -> int:
    """1..2^31-1: inside every backend's seed range (Replicate treats 0 as "random")."""
    return 1 + secrets.randbelow(2**31 - 1)


@dataclass(frozen=True)
class Prepared:
    job_id: str
    request: JobRequested
    notes: tuple[str, ...] = ()  # what will differ from what was asked (shown on stderr)


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # a name too long for the file system: check_destination says so
        return False


def output_target(output: str | None, inputs: GenerateInputs) -> tuple[Path | None, GenerateInputs]:
    """Where --output points, and the format its name asks for.

    A name ending .png/.jpg/.jpeg/.webp sets the format (a different --format is an error); any
    other extension is refused, since the bytes would not match the name. A directory (an
    existing one, or a path ending in /) means: the default file name inside it.
    """
    if not output:
        return None, inputs
    dest = Path(output).expanduser()
    if output.endswith(("/", os.sep)) or _is_dir(dest):
        return dest, inputs
    ext = dest.suffix.lower()
    if not ext:
        return dest, inputs
    fmt = EXTENSION_FORMATS.get(ext)
    if fmt is None:
        raise UserError(
            f"--output {output}: imagen writes png, jpg or webp; end the name with .png, .jpg or "
            ".webp",
            ExitCode.BAD_INPUT,
        )
    asked = {"jpeg": "jpg"}.get(inputs.output_format or "", inputs.output_format)
    if asked and asked != fmt:
        raise UserError(
            f"--output {output} names a {fmt} file but --format is {inputs.output_format}; "
            "make them agree",
            ExitCode.BAD_INPUT,
        )
    return dest, replace(inputs, output_format=fmt)


def prepare(
    config: Config,
    backend_name: str | None,
    inputs: GenerateInputs,
    *,
    output: str | None,
    overwrite: bool,
    env: Environment,
    caller: str,
    overflow: str | None = None,
) -> Prepared:
    """Validate everything before anything is recorded: a bad input costs nothing.
    `overflow` (or a ComfyUI pool's `overflow` option) names the paid backend a pool's job
    goes to when no member answers: its request is prepared now, checked like any other."""
    backend: BackendConfig = config.backend(backend_name)
    module = backends.load(backend.type)
    target, inputs = output_target(output, inputs)
    try:
        params = module.normalise(inputs, backend.options)
    except BadInput as exc:
        raise UserError(str(exc), ExitCode.BAD_INPUT) from None
    status = module.status(backend.options, env.env)
    if status != "ok":
        raise UserError(f"backend {backend.name} is {status}", ExitCode.BAD_INPUT)
    options = dict(backend.options)
    spill = overflow or options.get("overflow")
    if spill:
        label = "--overflow" if overflow else f"backends.{backend.name}.overflow"
        options["overflow_request"] = _overflow_request(
            config, backend, str(spill), inputs, params, env, label
        )
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
    if target is not None and not (output or "").endswith(("/", os.sep)) and not _is_dir(target):
        dest = target
    else:
        date = file_stamp(env.clock(), env.tz)  # local time: the name people see
        folder = target if target is not None else Path(config.output.directory).expanduser()
        name = file_name(date, inputs.prompt, inputs.seed, params["output_format"])
        dest = _free_name(folder.absolute(), name, inputs.count)
    dest = dest.absolute()
    for index in range(inputs.count):
        check_destination(Path(image_path(str(dest), index)), overwrite=overwrite)
    check_parent(dest)
    try:
        module.validate_request(params, options)
    except BadInput as exc:
        raise UserError(str(exc), ExitCode.BAD_INPUT) from None
    request = JobRequested(
        backend=backend.name,
        backend_type=backend.type,
        model=module.describe_model(options, backend.model),
        prompt=inputs.prompt,
        params=params,
        backend_config=options,
        output_path=str(dest),
        overwrite=overwrite,
        caller=caller,
        price_usd=price_for(backend.model, options.get("price_usd")),
        imagen_version=__version__,
    )
    notes = tuple(
        f"--{key} {value} is made as {params.get('width')}x{params.get('height')} "
        f"(aspect {params.get('aspect_ratio')}): {backend.type} makes sizes by aspect ratio"
        for key, value in (params.get("asked") or {}).items()
    )
    floor = below_table(backend.model, options.get("price_usd"))
    if floor is not None:
        notes += (
            f"backends.{backend.name}.price_usd {float(options['price_usd']):g} is below imagen's rate "
            f"for {backend.model} (${floor} an image); ${floor} is recorded and counted",
        )
    return Prepared(new_job_id(), request, notes)


def prepare_for(
    session: Any,
    job_inputs: GenerateInputs,
    *,
    backend: str | None = None,
    output: str | None = None,
    overwrite: bool = False,
    overflow: str | None = None,
) -> Prepared:
    """`prepare` for a Session's use case (generate, --detach, --dry-run): its config, its
    environment and the caller that environment names."""
    from imagen.app.caller import resolve_caller

    env = session.env
    return prepare(
        session.config(),
        backend,
        job_inputs,
        output=output,
        overwrite=overwrite,
        env=env,
        caller=resolve_caller(env.env),
        overflow=overflow,
    )


def check_overflow(config: Config, name: str, label: str = "--overflow") -> None:
    """`--overflow NAME` names a configured Replicate backend (checked like --backend)."""
    if name not in config.backends or config.backends[name].type != "replicate":
        paid = [n for n, b in config.backends.items() if b.type == "replicate"]
        raise UserError(
            f"{label} {name}: not a configured Replicate backend; configured: "
            f"{', '.join(paid) or 'none'} (see `imagen backends`)",
            ExitCode.BAD_INPUT,
        )


def _overflow_request(
    config: Config,
    pool: BackendConfig,
    name: str,
    inputs: GenerateInputs,
    params: dict[str, object],
    env: Environment,
    label: str,
) -> dict[str, object]:
    """The overflow backend's request for the same image (same seed, size, format), recorded
    inside the pool's request so the pure adapter can switch to it (JobOverflowed)."""
    check_overflow(config, name, label)
    if not pool.options.get("urls"):
        raise UserError(
            f"{label} {name}: backend {pool.name} is not a ComfyUI pool (urls = [...])",
            ExitCode.BAD_INPUT,
        )
    other = config.backends[name]
    module = backends.load(other.type)
    same = replace(inputs, output_format=str(params.get("output_format") or "png"))
    try:
        other_params = module.normalise(same, other.options)
        module.validate_request(other_params, other.options)
    except BadInput as exc:
        raise UserError(f"{label} {name}: {exc}", ExitCode.BAD_INPUT) from None
    status = module.status(other.options, env.env)
    if status != "ok":
        raise UserError(f"{label} {name}: backend {name} is {status}", ExitCode.BAD_INPUT)
    return {
        "backend": other.name,
        "backend_type": other.type,
        "model": module.describe_model(other.options, other.model),
        "params": other_params,
        "backend_config": dict(other.options),
        "price_usd": price_for(other.model, other.options.get("price_usd")),
    }


def _free_name(folder: Path, name: str, count: int) -> Path:
    """A name imagen chooses (no --output file): the first of name, name_2, name_3... whose
    every image name is free. Two jobs of one prompt and seed in one second (two agents at
    once) each get their own; a name the caller gave is never changed (check_destination)."""
    stem, dot, ext = name.rpartition(".")
    for n in range(1, 100):
        candidate = folder / (name if n == 1 else f"{stem}_{n}{dot}{ext}")
        if not any(os.path.lexists(image_path(str(candidate), i)) for i in range(count)):
            return candidate
    return folder / name  # 99 taken: check_destination names the one that exists


# The longest name imagen writes beside an image is its sidecar's temp file,
# ".<name>.json.<8 random>.tmp": 19 bytes more than the image's own name.
_NAME_OVERHEAD = 19


def check_destination(dest: Path, *, overwrite: bool) -> None:
    """The image and its sidecar can be written: names the file system takes, nothing but
    regular files replaced, and no sidecar name taken by a file imagen did not write for it."""
    from imagen.app.sidecars import sidecar_owner, sidecar_path

    limit = _name_max(dest.parent) - _NAME_OVERHEAD
    size = len(os.fsencode(dest.name))
    if size > limit:
        raise UserError(
            f"--output file name is {size} bytes; at most {limit} here (the file system allows "
            f"{limit + _NAME_OVERHEAD}, and imagen adds .json and temp suffixes)",
            ExitCode.BAD_INPUT,
        )
    try:
        st = dest.lstat()
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise UserError(f"--output {dest}: {exc.strerror}", ExitCode.BAD_INPUT) from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise UserError(f"--output {dest} is a directory; give a file path", ExitCode.BAD_INPUT)
        if not overwrite:
            raise UserError(f"{dest} already exists (use --force to overwrite)", ExitCode.BAD_INPUT)
        if not stat.S_ISREG(st.st_mode):
            raise UserError(
                f"{dest} is not a regular file (a device, FIFO, socket or link); "
                "--force only replaces regular files",
                ExitCode.BAD_INPUT,
            )
    side = sidecar_path(str(dest))
    if side.exists() or side.is_symlink():
        owner = sidecar_owner(side)
        if owner != str(dest):
            raise UserError(
                f"{side} exists and is not imagen's sidecar for {dest.name}; "
                "move it or choose another --output",
                ExitCode.BAD_INPUT,
            )


def _name_max(directory: Path) -> int:
    for d in (directory, *directory.parents):
        try:
            return os.pathconf(d, "PC_NAME_MAX")
        except (OSError, ValueError):
            continue
    return 255


def check_parent(dest: Path) -> None:
    """The directory can be made and written: checked before paying, since a local failure
    after payment leaves a paid image without a home."""
    ancestor = dest.parent
    while not (ancestor.exists() or ancestor.is_symlink()):
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"--output {dest}: {ancestor} is not a directory", ExitCode.BAD_INPUT)
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"--output {dest}: {ancestor} is not writable", ExitCode.BAD_INPUT)


def reserve_output(request: JobRequested) -> None:
    """Claim the output names before paying: empty files that only this job may replace.

    Two jobs given the same --output would otherwise both pay and one would lose its image. An
    empty file holds nothing to lose, so the runner replaces it (and removes it if the job ends
    without that image). A job making several images claims every name."""
    if request.overwrite:
        return
    made: list[Path] = []
    for index in range(image_count(request)):
        dest = Path(image_path(request.output_path, index))
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(dest, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            for path in made:  # give back what this call claimed
                path.unlink(missing_ok=True)
            if isinstance(exc, FileExistsError):
                raise UserError(
                    f"{dest} already exists (use --force to overwrite)", ExitCode.BAD_INPUT
                ) from None
            raise UserError(f"--output {dest}: {exc.strerror}", ExitCode.BAD_INPUT) from None
        os.close(fd)
        made.append(dest)


def release_output(request: JobRequested | None, stored: set[str] | bool) -> None:
    """A job that ended gives back the reserved (still empty) names of images it did not make.
    `stored`: the paths of its stored images (True/False: the first image, or none); a file
    stored under another extension than reserved (a ComfyUI .webp) leaves its name to give back."""
    if request is None or request.overwrite:
        return
    # No backend takes more than 4096 images a job (ComfyUI's batch_size): a record saying
    # more reserved no more, and must not keep `imagen cancel` looping.
    for index in range(min(image_count(request), 4096)):
        dest = Path(image_path(request.output_path, index))
        if (index == 0 and stored is True) or (isinstance(stored, set) and str(dest) in stored):
            continue
        try:
            st = os.lstat(dest)
            if stat.S_ISREG(st.st_mode) and st.st_size == 0:
                dest.unlink()
        except OSError:
            pass
