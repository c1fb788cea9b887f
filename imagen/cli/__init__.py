"""The command-line interface: a thin cyclopts shell over the library.

Start-up time is a feature: this module imports nothing heavy. Commands are registered by import
path in imagen/cli/commands.py and imported only when run (imagen/cli/app.py builds the cyclopts
app); `imagen --version`, `imagen --help` and `imagen config path` are answered by
imagen/cli/fast.py without importing cyclopts or rich at all (tests/test_cli_surface.py checks
the answers equal cyclopts' own). Every other command line, `generate` included, is cyclopts'.

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


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    import gc

    # Start-up builds tens of thousands of objects that live as long as the process (modules,
    # classes, cyclopts' app) and next to no garbage: the collector's passes over them cost
    # ~50 ms of a ~350 ms `imagen jobs`. It stays off until the command line is parsed; then
    # app.py's _meta parks what start-up built (gc.freeze) and turns it back on. The caller's
    # on/off is restored; what was frozen stays frozen: main() ends the process (sys.exit), and
    # the interpreter's last collection at exit then skips it too (~30 ms less).
    collecting = gc.isenabled()
    gc.disable()
    try:
        code = _dispatch(args)
    finally:
        if collecting:
            gc.enable()
        else:
            gc.disable()
    sys.exit(code)


def _dispatch(args: list[str]) -> int:
    from imagen.cli import fast

    try:
        code = fast.answer(args)
        if code is None:
            import signal

            # A parent can hand us these blocked (a signal mask survives exec): a blocked stop
            # signal never reaches the handlers that record an interrupted job, and `kill`
            # would not stop us. Unblocked here; one the parent set to ignore stays ignored.
            signal.pthread_sigmask(
                signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
            )
            from imagen.cli.app import run

            code = run(args)
        sys.stdout.flush()
    except BrokenPipeError:
        from imagen.cli.context import silence_stdout

        silence_stdout()
        code = 141  # ExitCode.BROKEN_PIPE: the reader of stdout went away, as SIGPIPE would say
    return code
