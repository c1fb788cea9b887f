"""Answers that need no cyclopts: `--version`, `--help`, `config path` and the common forms of
`imagen generate` (start-up budget: cyclopts costs ~45 ms, more than all of `--help`).

`imagen --help` is composed here from `_COMMANDS` with the same layout functions the cyclopts
app's formatter uses (helptext.py); tests/test_cli_surface.py checks both give the same text.

`imagen generate` is parsed here only when every word is one this parser knows for certain
(the options in `GENERATE_OPTIONS`, plain prompts, the global options); anything else —
--help, an unknown or misspelled option, a value that starts with `-`, `--`, a repeated
option, text that is not UTF-8 — goes to cyclopts, so help and errors are cyclopts' own.
tests/test_cli_surface.py checks that what is parsed here is what cyclopts binds.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any


def top_help() -> str:
    from imagen.cli import _COMMANDS, GLOBAL_OPTIONS, HELP
    from imagen.cli.helptext import description, panel, usage

    commands = [(name, text) for name, (_, text) in sorted(_COMMANDS.items())]
    commands += [("--help, -h", "Display this message and exit."), ("--version", VERSION_HELP)]
    options = [(label, text) for label, text in GLOBAL_OPTIONS.values()]
    return (
        usage("imagen COMMAND [OPTIONS]")
        + description(HELP)
        + panel("Commands", commands)
        + panel("Parameters", options)
    )


VERSION_HELP = "Display application version."


def answer(args: list[str]) -> int | None:
    """The exit code if `args` was answered here, else None (the full app takes over)."""
    if args == ["--version"]:
        from imagen import __version__

        sys.stdout.write(f"{__version__}\n")
        return 0
    if args in ([], ["--help"], ["-h"]):
        sys.stdout.write(top_help())
        return 0
    if args == ["config", "path"]:
        from imagen.app.paths import config_path

        sys.stdout.write(f"{config_path()}\n")
        return 0
    parsed = parse_generate(args)
    if parsed is not None:
        return run_generate(parsed)
    return None


# `imagen generate`'s options: word -> (parameter, kind). A kind is `int`, `str`, `list` (a
# repeatable str) or the value of a flag. It mirrors generate()'s signature (a test checks).
GENERATE_OPTIONS: dict[str, tuple[str, object]] = {
    "--backend": ("backend", str),
    "-b": ("backend", str),
    "--size": ("size", str),
    "--aspect": ("aspect", str),
    "--seed": ("seed", int),
    "--steps": ("steps", int),
    "--count": ("count", int),
    "-n": ("count", int),
    "--per-job": ("per_job", int),
    "--from": ("from_", str),
    "--concurrency": ("concurrency", int),
    "--option": ("option", list),
    "-o": ("option", list),
    "--output": ("output", str),
    "--format": ("format", str),
    "--force": ("force", True),
    "--json": ("json_output", True),
    "--preview": ("preview", True),
    "--no-preview": ("preview", False),
}
# The meta app's options, accepted before or after the command's words as cyclopts does.
GLOBAL_OPTIONS: dict[str, tuple[str, object]] = {
    "--config": ("config", str),
    "--quiet": ("quiet", True),
    "-q": ("quiet", True),
    "--verbose": ("verbose", True),
    "-v": ("verbose", True),
}


@dataclass(frozen=True, slots=True)
class ParsedGenerate:
    prompts: tuple[str, ...]
    options: dict[str, Any]  # generate()'s keyword arguments that were given
    config: str | None = None
    quiet: bool = False
    verbose: bool = False


def parse_generate(args: list[str]) -> ParsedGenerate | None:
    """`imagen [GLOBAL...] generate WORDS...` as generate()'s arguments, or None for anything
    this parser is not certain to read as cyclopts does (cyclopts then parses it)."""
    prompts: list[str] = []
    given: dict[str, Any] = {}
    command_seen = False
    try:
        "".join(args).encode("utf-8")
    except UnicodeEncodeError:
        return None  # the full app refuses it with its own message
    words = iter(args)
    for word in words:
        if not command_seen:
            if word == "generate":
                command_seen = True
                continue
            if word not in GLOBAL_OPTIONS and not word.startswith("--config="):
                return None
        if word.startswith("-") and (command_seen or word != "-"):
            name, eq, inline = word.partition("=")
            known = GLOBAL_OPTIONS.get(name) or (command_seen and GENERATE_OPTIONS.get(name))
            if not known:
                if word == "-" and not prompts:
                    prompts.append(word)  # the prompt from standard input
                    continue
                return None
            param, kind = known
            if kind in (str, int, list):
                value = inline if eq else next(words, None)
                if value is None or value.startswith("-"):
                    return None
                if kind is int:
                    if not value.isascii() or not value.isdigit():
                        return None
                    value = int(value)
            elif eq:
                return None  # --flag=value: cyclopts' business
            else:
                value = kind
            if kind is list:
                given.setdefault(param, []).append(value)
            elif param in given:
                return None  # given twice
            else:
                given[param] = value
            continue
        prompts.append(word)
    if not command_seen:
        return None
    meta = {k: given.pop(k) for k in ("config", "quiet", "verbose") if k in given}
    return ParsedGenerate(tuple(prompts), given, **meta)


def run_generate(parsed: ParsedGenerate) -> int:
    from imagen.cli import context
    from imagen.cli.generate import generate

    context.CONFIG_PATH = parsed.config
    context.VERBOSITY = -1 if parsed.quiet else 1 if parsed.verbose else 0
    return context.run_guarded(lambda: generate(*parsed.prompts, **parsed.options))
