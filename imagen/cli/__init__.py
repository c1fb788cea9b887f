"""The command-line interface: a thin cyclopts shell over the library.

Commands are registered here by import path and imported only when run, so `imagen --help`
stays fast (no sqlalchemy, urllib3, alembic or supabase on that path).
"""

from __future__ import annotations

import sys
from typing import Annotated

from cyclopts import App, Parameter

from imagen import __version__

app = App(
    name="imagen",
    help="Turn a prompt into an image through FLUX backends; every step kept in a ledger.",
    version=__version__,
    help_format="plaintext",
)

_COMMANDS = {
    "generate": ("imagen.cli.generate:generate", "Generate an image from a prompt."),
    "demo": (
        "imagen.cli.demo:demo",
        "Run a real generation against the built-in ComfyUI simulator.",
    ),
    "backends": ("imagen.cli.backends:backends", "List configured backends and their status."),
    "jobs": ("imagen.cli.jobs:jobs", "List jobs from the ledger."),
    "show": ("imagen.cli.jobs:show", "Show one job's whole timeline."),
    "resume": ("imagen.cli.jobs:resume", "Finish interrupted jobs without paying twice."),
    "audit": ("imagen.cli.audit:audit", "Verify the ledger's chain, invariants and image files."),
    "rebuild": (
        "imagen.cli.audit:rebuild",
        "Re-derive projections from the ledger and report differences.",
    ),
    "preview": ("imagen.cli.preview:preview", "Open a job's image in a tmux window."),
}
for _name, (_path, _help) in _COMMANDS.items():
    app.command(_path, name=_name, help=_help)

app.command(
    "imagen.cli.config:config_app", name="config", help="Write, show or locate the config file."
)
app.command(
    "imagen.cli.usage:usage_app",
    name="usage",
    help="Usage per backend, model and caller; sync to Supabase.",
)
app.command("imagen.cli.db:db_app", name="db", help="Database schema migrations (alembic).")


@app.meta.default
def _meta(
    *tokens: Annotated[str, Parameter(show=False, allow_leading_hyphen=True)],
    config: Annotated[
        str | None, Parameter(help="Config file (else $IMAGEN_CONFIG, else the user config dir).")
    ] = None,
) -> int | None:
    from imagen.cli import context

    context.CONFIG_PATH = config
    return app(tokens)


def main(argv: list[str] | None = None) -> None:
    from imagen.cli.context import run_guarded

    sys.exit(run_guarded(lambda: app.meta(_utf8_args(argv), result_action="return_value")))


def _utf8_args(argv: list[str] | None) -> list[str] | None:
    """Arguments that are not valid UTF-8 reach Python as lone surrogates; they could never be
    hashed, recorded or shown, so they are refused before anything runs."""
    from imagen.app.errors import UserError

    for n, arg in enumerate(sys.argv[1:] if argv is None else argv, start=1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError as exc:
            bad = arg[exc.start].encode("utf-8", "surrogateescape")
            raise UserError(
                f"argument {n} is not valid UTF-8 (byte 0x{bad[0]:02x} at character {exc.start}); "
                "pass text in UTF-8"
            ) from None
    return argv
