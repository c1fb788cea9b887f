"""imagen's commands: name -> where the command lives and its one-line help, and the global
options. Plain data, imported by the cyclopts app (cli/app.py) and by the fast answers
(cli/fast.py) alike, so both say the same."""

from __future__ import annotations

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
COMMANDS = {
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
    "wait": (
        "imagen.cli.worker:wait",
        "Wait for jobs to end (from generate --detach); print them as generate would.",
    ),
    "worker": (
        "imagen.cli.worker:worker",
        "Drive jobs recorded for workers, on this machine, until stopped.",
    ),
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
    "skills": (
        "imagen.cli.skills:skills_app",
        "Install the /imagine skill that teaches agents imagen.",
    ),
    "whoami": (
        "imagen.cli.whoami:whoami",
        "Who this process generates as, and what it may still spend.",
    ),
    "discover": (
        "imagen.cli.discover:discover",
        "Describe imagen for programs: commands, JSON schemas, exit codes.",
    ),
    "db": ("imagen.cli.db:db_app", "Database schema migrations (alembic)."),
    "completion": ("imagen.cli.completion:completion", "Print or install shell completion."),
    "mcp": ("imagen.cli.mcp_server:mcp", "Serve imagen's tools to agents over MCP (stdio)."),
    "docs": (
        "imagen.cli.docs:docs",
        "Print imagen's documentation (usage, setup-comfyui, testing, architecture).",
    ),
}
