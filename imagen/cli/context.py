"""What commands share: the environment, the config, the ledger; and error-to-exit mapping."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from imagen.app.errors import UserError
from imagen.app.exit_codes import ExitCode
from imagen.core.inputs import BadInput
from imagen.runner.environment import Environment

if TYPE_CHECKING:
    from imagen.app.config import Config
    from ledger import EventStore

CONFIG_PATH: str | None = None
VERBOSITY = 0  # -1 with -q (data and errors only), 1 with -v (events as recorded, error details)
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


def store(url: str | None = None) -> EventStore:
    """The configured ledger, opened (created or migrated if needed) once per process; or the
    ledger at `url`, opened the same way and not kept."""
    global _store
    if url is not None:
        return _open(url)
    if _store is None:
        from imagen.app.config import ledger_url

        cfg = config()
        _store = _open(ledger_url(cfg), cfg.ledger_durability)
    return _store


def _open(url: str, durability: str = "full") -> EventStore:
    from ledger import open_store

    try:
        return open_store(
            url,
            clock=ENV.clock,
            identity=True,
            durability="normal" if durability == "normal" else "full",
        )
    except Exception as exc:
        if not _open_failure(exc):
            raise
        raise UserError(
            f"cannot open the ledger at {_shown(url)}: {_ledger_reason(exc)}",
            ExitCode.LEDGER_ERROR,
        ) from None


def _open_failure(exc: BaseException) -> bool:
    """Is this why a ledger could not be opened (rather than a bug)?"""
    from ledger.errors import open_failure

    return open_failure(exc)


def _shown(url: str) -> str:
    """A ledger URL without its password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}@{host}"
    return url.removeprefix("sqlite:///")


def _ledger_reason(exc: BaseException) -> str:
    """One line saying what is wrong with the ledger and what to do."""
    if isinstance(exc, OSError) and not type(exc).__module__.startswith("sqlalchemy"):
        if isinstance(exc, PermissionError):
            return f"{exc.strerror} (check the file's and its directory's permissions)"
        return exc.strerror or str(exc)
    text = str(getattr(exc, "orig", None) or exc).splitlines()[0] if str(exc) else repr(exc)
    low = text.lower()
    if "not a database" in low or "malformed" in low:
        return f"{text} (not an imagen ledger, or damaged: restore it from a backup)"
    if "readonly" in low or "read-only" in low or "unable to open" in low:
        return f"{text} (check the file's and its directory's permissions)"
    if "disk is full" in low or "disk i/o" in low:
        return f"{text} (free some space; what was recorded is intact: `imagen audit`)"
    return text


def ledger_failure(exc: BaseException) -> UserError | None:
    """A database error raised while a command ran, as a one-line ledger error (or None).

    A commit shared by several appends (ledger/group.py) that failed reaches each caller as a
    LedgerError caused by the database's error: the same failure, reported the same way."""
    from ledger.errors import LedgerError, database_error

    if isinstance(exc, LedgerError) and database_error(exc.__cause__):
        assert exc.__cause__ is not None
        exc = exc.__cause__
    if database_error(exc):
        where = _shown(_config.ledger_url) if _config and _config.ledger_url else "the ledger"
        return UserError(f"ledger error ({where}): {_ledger_reason(exc)}", ExitCode.LEDGER_ERROR)
    return None


class NoLedgerYet(UserError):
    """A read-only command found no ledger: reading never creates one."""


def reader() -> Any:
    """Read-only access: the store opened without creating or migrating anything (a SQLite
    ledger this user cannot write is opened read-only by the ledger itself).

    Reading never creates a ledger: a SQLite ledger that does not exist is NoLedgerYet."""
    from imagen.app.config import ledger_url

    return _read_store(ledger_url(config()))


def _read_store(url: str) -> EventStore:
    """The store opened for reading (`create=False`): an empty database or an older schema is
    reported, never created or migrated.
    A later write in the same command reuses it: the schema is known to be at head."""
    global _store
    if _store is None:
        from ledger import NoLedgerError, open_store

        try:
            _store = open_store(url, clock=ENV.clock, create=False)
        except NoLedgerError as exc:
            raise NoLedgerYet(str(exc), ExitCode.NOT_FOUND) from None
        except Exception as exc:
            if not _open_failure(exc):
                raise
            raise UserError(
                f"cannot open the ledger at {_shown(url)}: {_ledger_reason(exc)}",
                ExitCode.LEDGER_ERROR,
            ) from None
    return _store


def jobs_reader() -> Any:
    """A reader whose jobs table is current, catching the projection up if it is behind.

    A ledger this process cannot write (read-only file or directory) is still listed: the
    projection is folded in memory instead of in the ledger."""
    from imagen.projections.jobs import query as jobs_query

    r = reader()
    if jobs_query.is_current(r):
        return r
    from imagen.projections.jobs import table as jobs_index

    try:
        writable = store()
        jobs_index.catch_up(writable)
        return writable
    except Exception as exc:
        scratch = r.scratch() if _cannot_write(exc) else None  # None on PostgreSQL
        if scratch is None:
            raise
    jobs_index.catch_up(scratch)
    return scratch


def _cannot_write(exc: BaseException) -> bool:
    if isinstance(exc, UserError):
        text = str(exc)
    elif ledger_failure(exc) is not None:
        text = str(getattr(exc, "orig", None) or exc)
    else:
        return False
    return any(
        s in text.lower() for s in ("readonly", "read-only", "permission denied", "unable to open")
    )


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
    from imagen.cli.safe import printable

    # Messages quote servers and the ledger: never let them drive the terminal.
    print(printable(message), file=ENV.stderr)


def note(message: str) -> None:
    """A remark for the person at the terminal (stderr); -q silences it."""
    if VERBOSITY >= 0:
        err(f"imagen: {message}")


def warn(message: str) -> None:
    """Something went wrong but the command's result stands (stderr, even with -q)."""
    err(f"imagen: warning: {message}")


def _parse_error(exc: Any) -> str:
    """cyclopts' message as one line, with the command's --help to read."""
    from cyclopts.exceptions import UnusedCliTokensError

    if isinstance(exc, UnusedCliTokensError) and exc.unused_tokens:
        what = " ".join(exc.unused_tokens)
        text = f"unexpected argument{'s' if len(exc.unused_tokens) > 1 else ''}: {what}"
    else:
        text = " ".join(str(exc.msg or exc).split()) if hasattr(exc, "msg") else str(exc)
        text = " ".join(text.split())
        text = text[:1].lower() + text[1:]
    bad = re.match(r'unknown command "(-[^"]*)"', text)
    if bad:  # cyclopts calls a stray option before the command a command
        text = f"unknown option: {bad.group(1)}"
    chain = " ".join(getattr(exc, "command_chain", None) or [])
    return f"{text.rstrip('.')} (see `imagen {chain + ' ' if chain else ''}--help`)"


def silence_stdout() -> None:
    """The reader of our stdout went away (`imagen jobs | head -1`): drop what is left, quietly.

    Python's own advice: point the descriptor at /dev/null so the flush at exit cannot raise."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def run_guarded(call: Callable[[], Any]) -> int:
    """Run a command; every way it can end becomes one line on stderr and an exit code."""
    try:
        try:
            result = call()
            sys.stdout.flush()
        except UserError as exc:
            err(f"imagen: error: {exc}")
            return int(exc.code)
        except BadInput as exc:  # the pure core's one-line "fix this input" (it knows no UserError)
            err(f"imagen: error: {exc}")
            return int(ExitCode.BAD_INPUT)
        except Exception as exc:
            # A parse error; only cyclopts raises those, so it was imported if this is one (the
            # generate fast path runs without it).
            cyclopts_errors = sys.modules.get("cyclopts.exceptions")
            if cyclopts_errors is None or not isinstance(exc, cyclopts_errors.CycloptsError):
                raise
            err(f"imagen: error: {_parse_error(exc)}")
            return int(ExitCode.BAD_INPUT)
        except KeyboardInterrupt:
            err("imagen: interrupted")
            return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        silence_stdout()
        return int(ExitCode.BROKEN_PIPE)
    except Exception as exc:
        failure = ledger_failure(exc)
        if failure is not None:
            err(f"imagen: error: {failure}")
            return int(failure.code)
        # A bug: still one line (the traceback with -v), never a crash dump.
        if VERBOSITY > 0:
            import traceback

            traceback.print_exc(file=ENV.stderr)
        first = (str(exc).splitlines() or [""])[0]
        err(
            f"imagen: error: internal error ({type(exc).__name__}: {first}); "
            "run again with -v for details and report it"
        )
        return int(ExitCode.INTERNAL)
    if isinstance(result, int):
        return result
    return 0
