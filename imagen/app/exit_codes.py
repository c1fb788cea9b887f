"""Process exit codes: what each one promises (docs/usage.md, "Exit codes").

The promise that matters most: 2 means nothing was recorded and nothing was written, so a
caller may fix the input and run again without a second thought. Everything imagen can check
by itself is checked before the first event is appended; a refusal that only the backend can
make comes after the job is recorded, and has its own code (8).
"""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # every image was written with its sidecar (or the command did what it said)
    JOB_FAILED = 1  # the job is recorded; it ran and produced no kept image (may have been paid)
    BAD_INPUT = 2  # bad arguments or configuration: nothing was recorded or written
    BACKEND_UNAVAILABLE = 3  # the job is recorded: unreachable, unauthorised, out of credit...
    AUDIT_FAILED = 4  # audit/rebuild found a problem; usage sync refused a head; resume: image gone
    CONFLICT = 5  # the job is driven by a live process, or a resume needs --force-new
    NOT_FOUND = 6  # no job matches the id
    LEDGER_ERROR = 7  # the ledger cannot be opened (schema too new, unreachable database)
    REJECTED = 8  # the job is recorded: the backend refused its input (422, invalid graph)
    OVER_BUDGET = 9  # the job is recorded as failed: its price would pass a budget; nothing sent
    # `wait` stopped (its --timeout, Ctrl-C) before every job ended: they go on (EX_TEMPFAIL)
    STILL_RUNNING = 75
    INTERNAL = 70  # a bug in imagen (EX_SOFTWARE): one line, the traceback with -v
    INTERRUPTED = 130  # Ctrl-C: the job was cancelled
    BROKEN_PIPE = 141  # the reader of stdout closed early (`imagen jobs | head -1`), as SIGPIPE
    TERMINATED = 143  # SIGTERM/SIGHUP: the job is interrupted and can be resumed


# What `resume --all` exits with when its jobs ended differently: the code most in need of a
# person, first. A ledger that fails outranks everything; a plain job failure only NOT_FOUND.
SEVERITY = (
    ExitCode.TERMINATED,
    ExitCode.INTERRUPTED,
    ExitCode.BROKEN_PIPE,
    ExitCode.STILL_RUNNING,
    ExitCode.INTERNAL,
    ExitCode.LEDGER_ERROR,
    ExitCode.AUDIT_FAILED,
    ExitCode.BACKEND_UNAVAILABLE,
    # Like running out of credit: a person raises the budget (or waits for the next window).
    ExitCode.OVER_BUDGET,
    ExitCode.BAD_INPUT,
    ExitCode.REJECTED,
    ExitCode.CONFLICT,
    ExitCode.JOB_FAILED,
    ExitCode.NOT_FOUND,
    ExitCode.OK,
)


def most_severe(a: int, b: int) -> ExitCode:
    rank = {code: n for n, code in enumerate(SEVERITY)}
    ca, cb = ExitCode(a), ExitCode(b)
    return ca if rank[ca] <= rank[cb] else cb
