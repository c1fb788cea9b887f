"""The command-line interface: a thin cyclopts shell over the library.

Start-up time is a feature: this module imports nothing heavy. Commands are registered by import
path in `_COMMANDS` and imported only when run (imagen/cli/app.py builds the cyclopts app);
`imagen --version`, `imagen --help` and `imagen config path` are answered here without importing
cyclopts or rich at all (tests/test_cli_surface.py checks the answers equal cyclopts' own).

Conventions every command follows (docs/usage.md, "Output and errors"):
- data on stdout through imagen/cli/render.py: `--json` (a list is one JSON array), a table in a
  terminal, tab-separated lines with a header row when piped;
- notes and warnings on stderr through context.note / context.warn (-q silences notes);
- errors are `imagen: error: ...` on one line (raise app.errors.UserError), never a traceback;
- options are keyword-only (`*,` in the signature): a boolean flag is never also a positional;
- each command's docstring ends with an `Examples of use:` block.
"""

from __future__ import annotations

import sys

HELP = "Turn a prompt into an image through FLUX backends; every step kept in a ledger."

# Options of every command (the meta app): parameter name -> (help label, help text).
GLOBAL_OPTIONS = {
    "config": ("--config STR", "Config file (else $IMAGEN_CONFIG, else the user config dir)."),
    "quiet": ("--quiet, -q", "Only data and errors: no progress or notes."),
    "verbose": (
        "--verbose, -v",
        "Each ledger event as it is recorded, and details of unexpected errors.",
    ),
}

# name -> (import path, one-line help shown by `imagen --help`).
_COMMANDS = {
    "generate": (
        "imagen.cli.generate:generate",
        "Generate an image from a prompt, or many at once.",
    ),
    "demo": (
        "imagen.cli.demo:demo",
        "Run a real generation against the built-in ComfyUI simulator.",
    ),
    "backends": ("imagen.cli.backends:backends", "List configured backends and their status."),
    "jobs": ("imagen.cli.jobs:jobs", "List jobs from the ledger."),
    "gallery": (
        "imagen.cli.gallery:gallery",
        "Write a gallery of every image: a static site, or served on 127.0.0.1.",
    ),
    "show": ("imagen.cli.jobs:show", "Show one job's whole timeline."),
    "resume": ("imagen.cli.jobs:resume", "Finish interrupted jobs without paying twice."),
    "cancel": (
        "imagen.cli.jobs:cancel",
        "End an unfinished job: cancel remote work, record the end.",
    ),
    "audit": ("imagen.cli.audit:audit", "Verify the ledger's chain, invariants and image files."),
    "rebuild": (
        "imagen.cli.audit:rebuild",
        "Re-derive projections from the ledger and report differences.",
    ),
    "open": ("imagen.cli.preview:open_", "Open a job's image: tmux window or desktop viewer."),
    "preview": ("imagen.cli.preview:preview", "Open a job's image in a tmux window."),
    "config": ("imagen.cli.config:config_app", "Write, show or locate the config file."),
    "usage": (
        "imagen.cli.usage:usage_app",
        "Images, cost and latency by backend, model, caller or day; sync.",
    ),
    "budget": (
        "imagen.cli.budget:budget_app",
        "Cap what each caller may spend per day, week, month or in total.",
    ),
    "db": ("imagen.cli.db:db_app", "Database schema migrations (alembic)."),
    "completion": ("imagen.cli.completion:completion", "Print or install shell completion."),
    "docs": (
        "imagen.cli.docs:docs",
        "Print imagen's documentation (usage, setup-comfyui, testing, architecture).",
    ),
}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    from imagen.cli import fast

    try:
        code = fast.answer(args)
        if code is None:
            from imagen.cli.app import run

            code = run(args)
        sys.stdout.flush()
    except BrokenPipeError:
        from imagen.cli.context import silence_stdout

        silence_stdout()
        code = 141  # ExitCode.BROKEN_PIPE: the reader of stdout went away, as SIGPIPE would say
    sys.exit(code)
