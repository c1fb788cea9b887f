"""What commands share: the environment, the config, the ledger; and error-to-exit mapping."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from imagen.app.errors import UserError
from imagen.app.exit_codes import ExitCode
from imagen.runner.environment import Environment

if TYPE_CHECKING:
    from imagen.app.config import Config
    from ledger import EventStore

CONFIG_PATH: str | None = None
ENV = Environment()
_config: Config | None = None
_store: EventStore | None = None


def config() -> Config:
    global _config
    if _config is None:
        from imagen.app.config import ConfigError, load_config

        try:
            _config = load_config(CONFIG_PATH, ENV.env)
        except ConfigError as exc:
            raise UserError(str(exc), ExitCode.BAD_INPUT) from None
    return _config


def store() -> EventStore:
    global _store
    if _store is None:
        from sqlalchemy.exc import OperationalError

        from imagen.app.config import ledger_url
        from ledger import LedgerError, open_store

        url = ledger_url(config())
        try:
            _store = open_store(url, clock=ENV.clock)
        except (LedgerError, OperationalError) as exc:
            raise UserError(
                f"cannot open the ledger: {str(exc).splitlines()[0]}", ExitCode.LEDGER_ERROR
            ) from None
    return _store


def reader() -> Any:
    """Read-only access: stdlib sqlite3 when possible (fast start), else the full store."""
    from imagen.app.config import ledger_url
    from ledger import open_reader

    return open_reader(ledger_url(config())) or store()


def jobs_reader() -> Any:
    """A reader whose jobs table is current, catching the projection up if it is behind."""
    from imagen.projections.jobs import query as jobs_query

    r = reader()
    if jobs_query.is_current(r):
        return r
    from imagen.projections.jobs import table as jobs_index

    jobs_index.catch_up(store())
    return store()


def usage_reader() -> Any:
    """A reader whose usage table is current, catching the projection up if it is behind."""
    from imagen.projections.usage import query as usage_query

    r = reader()
    if usage_query.is_current(r):
        return r
    from imagen.projections.usage import table as usage_local

    usage_local.catch_up(store())
    return store()


def err(message: str) -> None:
    print(message, file=ENV.stderr)


def run_guarded(call: Callable[[], Any]) -> int:
    try:
        result = call()
    except UserError as exc:
        err(f"imagen: error: {exc}")
        return int(exc.code)
    except KeyboardInterrupt:
        err("imagen: interrupted")
        return int(ExitCode.INTERRUPTED)
    finally:
        sys.stdout.flush()
    if isinstance(result, int):
        return result
    return 0
