"""`imagen config init | show | path`."""

from __future__ import annotations

import json

from cyclopts import App

from imagen.app.errors import UserError
from imagen.cli import context

config_app = App(name="config", help="Write, show or locate the configuration file.")


@config_app.command
def path() -> None:
    """Print the config file path in use."""
    from imagen.app.config import config_path

    print(config_path(context.CONFIG_PATH, context.ENV.env))


@config_app.command
def init(force: bool = False) -> None:
    """Write the sample config (three backends, output, ledger, usage).

    Parameters
    ----------
    force
        Overwrite an existing config file.
    """
    from imagen.app.config import SAMPLE, config_path
    from imagen.runner.files import FileExists, atomic_write

    target = config_path(context.CONFIG_PATH, context.ENV.env)
    try:
        atomic_write(target, SAMPLE.encode(), overwrite=force, mode=0o600)
    except FileExists:
        raise UserError(f"{target} already exists (use --force to overwrite)") from None
    print(target)


@config_app.command
def show(json_output: bool = False) -> None:
    """Print the effective config, secrets masked (env var names and whether they are set).

    Parameters
    ----------
    json_output
        Print JSON.
    """
    from imagen.app.config import masked

    data = masked(context.config(), context.ENV.env)
    if json_output:
        print(json.dumps(data, indent=2))
        return
    print(f"# from {data.pop('source')}")
    print(f"default_backend = {data.pop('default_backend')!r}")
    for name, opts in data.pop("backends").items():
        print(f"\n[backends.{name}]")
        for k, v in opts.items():
            print(f"{k} = {json.dumps(v)}")
    for section, opts in data.items():
        print(f"\n[{section}]")
        for k, v in opts.items():
            print(f"{k} = {json.dumps(v)}")
