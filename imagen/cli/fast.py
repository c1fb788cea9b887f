"""Answers that need no cyclopts: `--version`, `--help` and `config path` (start-up budget:
cyclopts costs ~45 ms, more than all of `--help`). Everything else, `generate` included, is
parsed by cyclopts (imagen/cli/app.py): one parser.

`imagen --help` is composed here from imagen/cli/commands.py with the same layout functions the
cyclopts app's formatter uses (helptext.py); tests/test_cli_surface.py checks both give the same
text, and that `--version` and `config path` answer as cyclopts' app does.
"""

from __future__ import annotations

import sys


def top_help() -> str:
    from imagen.cli.commands import COMMANDS, GLOBAL_OPTIONS, HELP
    from imagen.cli.helptext import description, panel, usage

    commands = [(name, text) for name, (_, text) in sorted(COMMANDS.items())]
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
    return None
