"""Where imagen's files live. Kept apart from config.py so `imagen config path` imports only this."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

APP = "imagen"


def config_path(explicit: str | None = None, env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if explicit:
        return Path(explicit).expanduser()
    if env.get("IMAGEN_CONFIG"):
        return Path(env["IMAGEN_CONFIG"]).expanduser()
    from platformdirs import user_config_path

    return user_config_path(APP) / "config.toml"


def default_ledger_url() -> str:
    from platformdirs import user_data_path

    return f"sqlite:///{user_data_path(APP) / 'ledger.db'}"
