"""`imagen discover`: imagen described for programs, generated from the code (never kept by
hand): the commands and their parameters from the cyclopts app itself, the JSON Schema of each
command's --json output from the shape its renderer declares (render.outputs, built by
app/contract.py json_schema), the error object, and the exit codes with their meanings."""

from __future__ import annotations

import inspect
from typing import Any, TypedDict

from imagen.app.contract import ErrorObject, JobObject, json_schema
from imagen.app.exit_codes import MEANINGS, code_name
from imagen.cli import render


class ParameterInfo(TypedDict):
    names: list[str]
    kind: str  # "positional", "option" (takes a value) or "flag" (a boolean)
    type: str
    required: bool
    repeatable: bool
    default: Any
    choices: list[Any] | None
    help: str


class CommandInfo(TypedDict):
    name: str  # as typed after `imagen`: "budget list"
    help: str
    parameters: list[ParameterInfo]
    json_output: dict[str, Any] | None  # the JSON Schema of its --json output (None: no --json)


class ExitCodeInfo(TypedDict):
    exit: int
    code: str  # the error object's `code`
    meaning: str


class DiscoverObject(TypedDict):
    name: str
    version: str
    global_options: list[ParameterInfo]
    commands: list[CommandInfo]
    job_schema: dict[str, Any]  # the one job object (app/contract.py)
    error_schema: dict[str, Any]  # what every failing --json command prints on stdout
    exit_codes: list[ExitCodeInfo]


@render.outputs(DiscoverObject)
def discover() -> None:
    """Describe imagen for programs: commands, JSON schemas, exit codes.

    One JSON document on stdout, generated from the code: every command with its parameters,
    the JSON Schema of its --json output, the job object and the error object every failing
    --json command prints, and what each exit code means.

    Examples of use:
      imagen discover | jq -r '.commands[].name'
      imagen discover | jq '.exit_codes[] | select(.exit == 9)'
      imagen discover | jq '.commands[] | select(.name == "jobs") | .json_output'
    """
    render.print_json(describe())


def describe() -> DiscoverObject:
    from imagen import __version__
    from imagen.cli.app import app
    from imagen.cli.commands import COMMANDS

    commands: list[CommandInfo] = []
    for name in sorted(COMMANDS):
        commands += _commands(app, app[name], [name])
    return {
        "name": "imagen",
        "version": __version__,
        "global_options": _parameters(app.meta, app),
        "commands": commands,
        "job_schema": json_schema(JobObject),
        "error_schema": json_schema(ErrorObject),
        "exit_codes": [
            {"exit": int(c), "code": code_name(c), "meaning": m} for c, m in MEANINGS.items()
        ],
    }


def _commands(root: Any, sub: Any, path: list[str]) -> list[CommandInfo]:
    found: list[CommandInfo] = []
    fn = sub.default_command
    if fn is not None:
        shape = getattr(fn, "__json_output__", None)
        doc = inspect.getdoc(fn) or ""
        found.append(
            {
                "name": " ".join(path),
                "help": doc.split("\n\n")[0].replace("\n", " "),
                "parameters": _parameters(sub, root),
                "json_output": None if shape is None else json_schema(shape),
            }
        )
    for key in sub:
        if not key.startswith("-"):
            found += _commands(root, sub[key], [*path, key])
    return found


def _parameters(sub: Any, root: Any) -> list[ParameterInfo]:
    out: list[ParameterInfo] = []
    arguments = sub.assemble_argument_collection(
        default_parameter=root.default_parameter, parse_docstring=True
    )
    for a in arguments:
        if not a.show:
            continue
        kind = a.field_info.kind
        positional = kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.VAR_POSITIONAL)
        hint = a.hint
        default = a.field_info.default
        out.append(
            {
                "names": list(a.names),
                "kind": "positional" if positional else "flag" if _is_bool(hint) else "option",
                "type": _type_name(hint),
                "required": bool(a.required),
                "repeatable": kind == inspect.Parameter.VAR_POSITIONAL or _is_list(hint),
                "default": None if default is inspect.Parameter.empty else default,
                "choices": _choices(hint),
                "help": " ".join((a.parameter.help or "").split()),
            }
        )
    return out


def _args(hint: Any) -> tuple[Any, ...]:
    import typing

    return typing.get_args(hint) if typing.get_origin(hint) is not None else (hint,)


def _is_bool(hint: Any) -> bool:
    return all(h in (bool, type(None)) for h in _args(hint))


def _is_list(hint: Any) -> bool:
    import typing

    return any(typing.get_origin(h) in (list, tuple) for h in _args(hint))


def _choices(hint: Any) -> list[Any] | None:
    import typing

    for h in (hint, *_args(hint)):
        if typing.get_origin(h) is typing.Literal:
            return list(typing.get_args(h))
        inner = [x for x in _args(h) if typing.get_origin(x) is typing.Literal]
        if inner and h is not hint:
            return list(typing.get_args(inner[0]))
    return None


def _type_name(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")
