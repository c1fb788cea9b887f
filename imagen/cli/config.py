"""`imagen config init | show | path`."""

from __future__ import annotations

import json
from typing import Annotated, Any

from cyclopts import App, Parameter

from imagen.app.errors import UserError
from imagen.cli import context, render

config_app = App(name="config", help="Write, show or locate the configuration file.")


@config_app.command
def path() -> None:
    """Print the config file path in use.

    Examples of use:
      imagen config path
      $EDITOR "$(imagen config path)"
    """
    from imagen.app.config import config_path

    print(config_path(context.session().config_path, context.session().env.env))


@config_app.command
def init(
    *, path: Annotated[str | None, Parameter(name="--path")] = None, force: bool = False
) -> None:
    """Write the sample config (three backends, output, ledger, usage).

    Examples of use:
      imagen config init
      imagen config init --path ./imagen.toml && imagen --config ./imagen.toml backends

    Parameters
    ----------
    path
        Write this file instead of the config path in use (`imagen config path`).
    force
        Overwrite an existing config file.
    """
    from pathlib import Path

    from imagen.app.config import SAMPLE, config_path
    from imagen.runner.files import FileExists, atomic_write

    target = (
        Path(path).expanduser()
        if path
        else config_path(context.session().config_path, context.session().env.env)
    )
    exists = UserError(f"{target} already exists (use --force to overwrite)")
    if target.exists() and not force:
        # Even when it still holds the sample: `config init` on an existing file is a mistake
        # worth saying (atomic_write treats identical bytes as already written).
        raise exists
    try:
        atomic_write(target, SAMPLE.encode(), overwrite=force, mode=0o600)
    except FileExists:
        raise exists from None
    print(target)


@config_app.command
@render.outputs(dict[str, Any])  # the configuration as loaded: its keys are the config file's
def show(*, json_output: Annotated[bool, Parameter(name="--json")] = False) -> None:
    """Print the effective config, secrets masked (env var names and whether they are set).

    Examples of use:
      imagen config show
      imagen config show --json | jq .output

    Parameters
    ----------
    json_output
        Print one JSON object.
    """
    from imagen.app.config import masked

    data = masked(context.session().config(), context.session().env.env)
    if json_output:
        print(json.dumps(data))
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
