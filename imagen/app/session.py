"""A Session: what every use case works with — the environment, the config, the ledger and
how to tell the person (or program) at the other end what is happening.

The CLI builds one per process from its global options (imagen/cli/app.py, context.session());
the agent server builds its own, without cyclopts. The config is read and the ledger opened on
first use, once per session; a read-only command never creates a ledger.

Tell-tale output goes through the session, never to print: `note` (a remark, silenced by
-q: verbosity -1), `warn` (the result stands but something went wrong), `err` (a whole line),
all ending in `lines` (stderr by default; the CLI escapes control characters first).
`reporter()` makes the Reporter one driven job reports its events and progress to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from imagen.app.errors import UserError
from imagen.app.exit_codes import ExitCode
from imagen.runner.environment import Environment

if TYPE_CHECKING:
    from imagen.app.config import Config
    from imagen.runner.loop import Reporter
    from ledger import EventStore


class NoLedgerYet(UserError):
    """A read-only command found no ledger: reading never creates one."""


class Session:
    def __init__(
        self,
        env: Environment | None = None,
        *,
        config_path: str | None = None,
        verbosity: int = 0,
        config: Config | None = None,
        store: EventStore | None = None,
        reporter: Callable[[], Reporter] | None = None,
        lines: Callable[[str], None] | None = None,
    ) -> None:
        self.env = env or Environment()
        self.config_path = config_path
        # -1: data and errors only (-q); 1: each event as recorded and error details (-v).
        self.verbosity = verbosity
        self._config = config
        self._store = store
        self._reporter = reporter
        self._lines = lines

    # -- telling ---------------------------------------------------------------------------

    def err(self, line: str) -> None:
        if self._lines is not None:
            self._lines(line)
        else:
            print(line, file=self.env.stderr)

    def note(self, message: str) -> None:
        """A remark for the person at the terminal (stderr); -q silences it."""
        if self.verbosity >= 0:
            self.err(f"imagen: {message}")

    def warn(self, message: str) -> None:
        """Something went wrong but the command's result stands (stderr, even with -q)."""
        self.err(f"imagen: warning: {message}")

    def reporter(self) -> Reporter:
        """A Reporter for one job (close it, if it has close(), when the job ends)."""
        if self._reporter is not None:
            return self._reporter()
        from imagen.runner.loop import NullReporter

        return NullReporter()

    @contextmanager
    def reporting(self) -> Iterator[Reporter]:
        """A Reporter for one job, closed when the job ends."""
        reporter = self.reporter()
        try:
            yield reporter
        finally:
            close = getattr(reporter, "close", None)
            if close is not None:
                close()

    # -- the config and the ledger ---------------------------------------------------------

    def config(self) -> Config:
        if self._config is None:
            from imagen.app.config import ConfigError, load_config

            try:
                self._config = load_config(self.config_path, self.env.env)
            except ConfigError as exc:
                raise UserError(str(exc), ExitCode.BAD_INPUT) from None
        return self._config

    @property
    def store_opened(self) -> bool:
        """Has this session opened its ledger (for what runs only if a command got that far)?"""
        return self._store is not None

    def is_its_store(self, reader: Any) -> bool:
        """Is `reader` this session's own store (kept open for the session), not a reader?"""
        return reader is self._store

    def store(self, url: str | None = None) -> EventStore:
        """The configured ledger, opened (created or migrated if needed) once per process; or the
        ledger at `url`, opened the same way and not kept."""
        if url is not None:
            return self._open(url)
        if self._store is None:
            from imagen.app.config import ledger_url

            cfg = self.config()
            self._store = self._open(ledger_url(cfg), cfg.ledger_durability)
        return self._store

    def _open(self, url: str, durability: str = "full") -> EventStore:
        from ledger import open_store

        try:
            return open_store(
                url,
                clock=self.env.clock,
                identity=True,
                durability="normal" if durability == "normal" else "full",
            )
        except Exception as exc:
            raise _cannot_open(url, exc) from None

    def ledger_failure(self, exc: BaseException) -> UserError | None:
        """A database error (or a damaged record) raised while a command ran, as a one-line
        ledger error (or None).

        A commit shared by several appends (ledger/group.py) that failed reaches each caller as a
        LedgerError caused by the database's error: the same failure, reported the same way."""
        from imagen.core.job import DamagedRecord
        from ledger.errors import LedgerError, database_error

        cfg = self._config
        where = _shown(cfg.ledger_url) if cfg and cfg.ledger_url else "the ledger"
        if isinstance(exc, DamagedRecord):  # a recorded value no imagen writes
            return UserError(f"ledger damaged ({where}): {exc}", ExitCode.LEDGER_ERROR)
        if isinstance(exc, LedgerError) and database_error(exc.__cause__):
            assert exc.__cause__ is not None
            exc = exc.__cause__
        if database_error(exc):
            return UserError(
                f"ledger error ({where}): {_ledger_reason(exc)}", ExitCode.LEDGER_ERROR
            )
        return None

    def reader(self) -> Any:
        """Read-only access: the store opened without creating or migrating anything (a SQLite
        ledger this user cannot write is opened read-only by the ledger itself).

        Reading never creates a ledger: a SQLite ledger that does not exist is NoLedgerYet."""
        from imagen.app.config import ledger_url

        return self._read_store(ledger_url(self.config()))

    def _read_store(self, url: str) -> EventStore:
        """The store opened for reading (`create=False`): an empty database or an older schema
        is reported, never created or migrated.
        A later write in the same command reuses it: the schema is known to be at head."""
        if self._store is None:
            from ledger import NoLedgerError, open_store

            try:
                self._store = open_store(url, clock=self.env.clock, create=False)
            except NoLedgerError as exc:
                raise NoLedgerYet(str(exc), ExitCode.NOT_FOUND) from None
            except Exception as exc:
                raise _cannot_open(url, exc) from None
        return self._store

    def jobs_reader(self, progress: ProgressFor | None = None) -> Any:
        """A reader whose jobs table is current, catching the projection up if it is behind
        (`progress`: what shows how far a long catch-up got; see `_bar`).

        A ledger this process cannot write (read-only file or directory) is still listed: the
        projection is folded in memory instead of in the ledger."""
        from imagen.projections.jobs import query as jobs_query

        r = self.reader()
        if jobs_query.is_current(r):
            return r
        from imagen.projections.jobs import table as jobs_index

        with _bar(r, jobs_index.CHECKPOINT, progress) as bar:
            try:
                writable = self.store()
                # The jobs table alone: folded from payloads, it costs a fraction of the usage
                # fold (which folds every job), so `imagen usage` pays that.
                jobs_index.catch_up(writable, progress=bar)
                return writable
            except Exception as exc:
                scratch = r.scratch() if self._cannot_write(exc) else None  # None on PostgreSQL
                if scratch is None:
                    raise
            jobs_index.catch_up(scratch, progress=bar)
        return scratch

    def _cannot_write(self, exc: BaseException) -> bool:
        if isinstance(exc, UserError):
            text = str(exc)
        elif self.ledger_failure(exc) is not None:
            text = str(getattr(exc, "orig", None) or exc)
        else:
            return False
        return any(
            s in text.lower()
            for s in ("readonly", "read-only", "permission denied", "unable to open")
        )

    def usage_reader(self, progress: ProgressFor | None = None) -> Any:
        """A reader whose usage table is current, catching the projection up if it is behind
        (`progress` as for `jobs_reader`)."""
        from imagen.projections.usage import query as usage_query

        r = self.reader()
        if usage_query.is_current(r):
            return r
        from imagen.projections.usage import table as usage_table

        # The usage table alone, as `jobs_reader` catches up the jobs table alone: each command
        # pays for what it shows (a first `imagen usage` on 10k jobs: 1.2 s, against 1.8 s for
        # every table at once). Several tables behind at once are caught up in one pass
        # (projections/catchup.py).
        with _bar(r, usage_table.CHECKPOINT, progress) as bar:
            usage_table.catch_up(self.store(), progress=bar)
        return self.store()


# Given the catch-up's first and last position, what to call with each position it reaches
# and with None when it ends (the CLI's bar on a terminal), or None.
ProgressFor = Callable[[int, int], Callable[[int | None], None] | None]


@contextmanager
def _bar(
    reader: Any, checkpoint: str, progress: ProgressFor | None
) -> Iterator[Callable[[int], None] | None]:
    """The catch-up's progress from the table's checkpoint to the ledger's head, ended (the
    bar cleared) however the catch-up ends."""
    show = (
        None
        if progress is None
        else progress(reader.get_checkpoint(checkpoint), reader.head_position())
    )
    try:
        yield show
    finally:
        if show is not None:
            show(None)


def _cannot_open(url: str, exc: Exception) -> Exception:
    """Why the ledger at `url` could not be opened, as the one-line error to raise; a bug (not
    a reason a ledger cannot be opened) is returned as it is, to be raised as it is."""
    from ledger.errors import open_failure

    if not open_failure(exc):
        return exc
    return UserError(
        f"cannot open the ledger at {_shown(url)}: {_ledger_reason(exc)}", ExitCode.LEDGER_ERROR
    )


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
