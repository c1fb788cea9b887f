"""The cyclopts app: commands from imagen/cli/commands.py, global options in the meta app,
parse errors turned into imagen's own one-line errors (context.run_guarded)."""

from __future__ import annotations

from typing import Annotated

from cyclopts import App, Parameter

from imagen import __version__
from imagen.cli.commands import COMMANDS, GLOBAL_OPTIONS, HELP
from imagen.cli.helptext import HelpFormatter


class _App(App):
    def __getitem__(self, key: str) -> App:
        sub = super().__getitem__(key)
        # `imagen --help` lists COMMANDS' one-liners without importing the commands; a command's
        # own --help shows its whole docstring (description, Examples:, parameters).
        if key in COMMANDS and sub.default_command is not None:
            sub.help = None
        return sub


app = _App(
    name="imagen",
    help=HELP,
    version=__version__,
    help_format="plaintext",
    help_formatter=HelpFormatter(),
    # Flags are --x only: no --no-x twins or --empty-x for lists (a command that needs a
    # negative, like --no-preview, names it).
    default_parameter=Parameter(negative=(), negative_iterable=()),
    print_error=False,
    exit_on_error=False,
    help_on_error=False,
    result_action="return_value",
    # A Ctrl-C reaches context.run_guarded, which names what it left unfinished; cyclopts
    # would exit 130 silently.
    suppress_keyboard_interrupt=False,
)

app.meta.suppress_keyboard_interrupt = False

for _name, (_path, _help) in COMMANDS.items():
    app.command(_path, name=_name, help=_help)


@app.meta.default
def _meta(
    *tokens: Annotated[str, Parameter(show=False, allow_leading_hyphen=True)],
    config: Annotated[str | None, Parameter(help=GLOBAL_OPTIONS["config"][1])] = None,
    quiet: Annotated[
        bool, Parameter(name=["--quiet", "-q"], help=GLOBAL_OPTIONS["quiet"][1])
    ] = False,
    verbose: Annotated[
        bool, Parameter(name=["--verbose", "-v"], help=GLOBAL_OPTIONS["verbose"][1])
    ] = False,
) -> int | None:
    import gc

    from imagen.cli import context

    # The command line is parsed: what start-up built lives as long as the process, so the
    # collector need not look at it again; the command itself runs collected as usual. Only
    # when cli/__init__.py main turned collection off for start-up (run() called in-process
    # by a test leaves the caller's collector alone).
    if not gc.isenabled():
        gc.freeze()
        gc.enable()
    context.session().config_path = config
    context.session().verbosity = -1 if quiet else 1 if verbose else 0
    return app(tokens)


def run(argv: list[str]) -> int:
    from imagen.cli.context import run_guarded

    # --json anywhere on the line (before `--`, after which words are prompts): a failure,
    # a parse error included, also prints the JSON error object on stdout.
    words = argv[: argv.index("--")] if "--" in argv else argv
    return run_guarded(lambda: app.meta(_utf8_args(argv)), json_errors="--json" in words)


def _utf8_args(argv: list[str]) -> list[str]:
    """Arguments that are not valid UTF-8 reach Python as lone surrogates; they could never be
    hashed, recorded or shown, so they are refused before anything runs."""
    from imagen.app.errors import UserError

    for n, arg in enumerate(argv, start=1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError as exc:
            bad = arg[exc.start].encode("utf-8", "surrogateescape")
            raise UserError(
                f"argument {n} is not valid UTF-8 (byte 0x{bad[0]:02x} at character {exc.start}); "
                "pass text in UTF-8"
            ) from None
    return argv
