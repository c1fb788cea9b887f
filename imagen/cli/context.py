"""The CLI's session (imagen/app/session.py: environment, config, ledger, reporter), built from
the global options, and the mapping of every way a command can end to one line and an exit code.

The ledger-opening functions that lived here (store, _open, reader, _read_store, jobs_reader,
usage_reader, _cannot_open, ledger_failure, _cannot_write) are the Session's now."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any

from imagen.app.errors import UserError
from imagen.app.exit_codes import ExitCode
from imagen.app.session import NoLedgerYet, Session
from imagen.core.inputs import BadInput
from imagen.runner.environment import Environment

__all__ = ["NoLedgerYet", "Session", "err", "new_session", "note", "run_guarded", "session", "warn"]

_session: Session | None = None


def new_session(
    config_path: str | None = None,
    verbosity: int = 0,
    env: Environment | None = None,
    **preset: Any,
) -> Session:
    """A Session as the terminal wants it: lines on stderr with control characters escaped
    (messages quote servers and the ledger: never let them drive the terminal), and a rich
    progress line per job (off with -q; with -v each event as a plain line)."""
    env = env or Environment()

    def lines(line: str) -> None:
        from imagen.cli.safe import printable

        print(printable(line), file=env.stderr)

    def reporter() -> Any:
        from imagen.cli.progress import RichReporter

        verbosity = made.verbosity
        return RichReporter(
            env.stderr, enabled=False if verbosity != 0 else None, events=verbosity > 0
        )

    made = Session(
        env,
        config_path=config_path,
        verbosity=verbosity,
        reporter=reporter,
        lines=lines,
        **preset,  # config=, store=: a session over a config and ledger of its own (demo)
    )
    return made


def start(config_path: str | None, verbosity: int) -> Session:
    """The session of this process, from the global options (--config, -q, -v)."""
    global _session
    _session = new_session(config_path, verbosity)
    return _session


def session() -> Session:
    """This process's session (one with the defaults if no command line set it up)."""
    global _session
    if _session is None:
        _session = new_session()
    return _session


def err(message: str) -> None:
    session().err(message)


def note(message: str) -> None:
    """A remark for the person at the terminal (stderr); -q silences it."""
    session().note(message)


def warn(message: str) -> None:
    """Something went wrong but the command's result stands (stderr, even with -q)."""
    session().warn(message)


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
    elif not getattr(exc, "command_chain", None):
        text = _suggest_command(text)
    chain = " ".join(getattr(exc, "command_chain", None) or [])
    return f"{text.rstrip('.')} (see `imagen {chain + ' ' if chain else ''}--help`)"


def _suggest_command(text: str) -> str:
    """`imagen genrate`: cyclopts suggests only among commands of its own App class, and
    imagen's top-level commands are registered lazily (cli/commands.py), so it says nothing
    and lists no commands; the closest name of COMMANDS is suggested here instead."""
    import difflib

    from imagen.cli.commands import COMMANDS

    typo = re.match(r'unknown command "([^"]*)"\.?$', text)
    if typo is None:
        return text
    close = difflib.get_close_matches(typo.group(1), list(COMMANDS), n=1, cutoff=0.6)
    return f'{text.rstrip(".")}. Did you mean "{close[0]}"?' if close else text


def silence_stdout() -> None:
    """The reader of our stdout went away (`imagen jobs | head -1`): drop what is left, quietly.

    Python's own advice: point the descriptor at /dev/null so the flush at exit cannot raise."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def run_guarded(call: Callable[[], Any], *, json_errors: bool = False) -> int:
    """Run a command; every way it can end becomes one line on stderr and an exit code, and
    with `json_errors` (--json on the command line) also the JSON error object on stdout
    (app/contract.py error_object): the one place failures become exit codes."""

    def fail(code: ExitCode, message: str, exc: BaseException | None = None) -> int:
        err(f"imagen: error: {message}")
        if json_errors:
            _print_error(code, message, exc)
        return int(code)

    try:
        try:
            result = call()
            sys.stdout.flush()
        except UserError as exc:
            return fail(exc.code, str(exc), exc)
        except BadInput as exc:  # the pure core's one-line "fix this input" (it knows no UserError)
            return fail(ExitCode.BAD_INPUT, str(exc))
        except Exception as exc:
            # A parse error; only cyclopts raises those, so it was imported if this is one.
            cyclopts_errors = sys.modules.get("cyclopts.exceptions")
            if cyclopts_errors is None or not isinstance(exc, cyclopts_errors.CycloptsError):
                raise
            return fail(ExitCode.BAD_INPUT, _parse_error(exc))
        except KeyboardInterrupt as exc:
            # A second Ctrl-C: the use case names what it left unfinished and how to finish it.
            what = f"interrupted{'; ' + str(exc) if str(exc) else ''}"
            err(f"imagen: {what}")
            if json_errors:
                _print_error(ExitCode.INTERRUPTED, what, None)
            return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        silence_stdout()
        return int(ExitCode.BROKEN_PIPE)
    except Exception as exc:
        failure = session().ledger_failure(exc)
        if failure is not None:
            return fail(failure.code, str(failure), failure)
        # A bug: still one line (the traceback with -v), never a crash dump.
        if session().verbosity > 0:
            import traceback

            traceback.print_exc(file=session().env.stderr)
        first = (str(exc).splitlines() or [""])[0]
        return fail(
            ExitCode.INTERNAL,
            f"internal error ({type(exc).__name__}: {first}); "
            "run again with -v for details and report it",
        )
    if isinstance(result, int):
        return result
    return 0


def _print_error(code: ExitCode, message: str, exc: BaseException | None) -> None:
    from imagen.app.contract import error_object
    from imagen.cli.render import print_json

    try:
        print_json(
            error_object(
                code,
                message,
                hint=getattr(exc, "hint", None),
                job_id=getattr(exc, "job_id", None),
            )
        )
        sys.stdout.flush()
    except BrokenPipeError:
        silence_stdout()
