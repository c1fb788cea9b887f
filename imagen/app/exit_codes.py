"""Process exit codes, one meaning each (documented in docs/usage.md)."""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    JOB_FAILED = 1  # the backend ran and the job failed (or was cancelled on timeout)
    BAD_INPUT = 2  # bad arguments or configuration: nothing was recorded or written
    BACKEND_UNAVAILABLE = 3  # unreachable, unauthorised, out of credit, models missing
    AUDIT_FAILED = 4  # audit or rebuild found a problem; usage sync refused to report a head
    CONFLICT = 5  # the job is driven by a live process, or a resume needs --force-new
    NOT_FOUND = 6  # no job matches the id
    LEDGER_ERROR = 7  # the ledger cannot be opened (schema too new, unreachable database)
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
    ExitCode.INTERNAL,
    ExitCode.LEDGER_ERROR,
    ExitCode.AUDIT_FAILED,
    ExitCode.BACKEND_UNAVAILABLE,
    ExitCode.BAD_INPUT,
    ExitCode.CONFLICT,
    ExitCode.JOB_FAILED,
    ExitCode.NOT_FOUND,
    ExitCode.OK,
)


def most_severe(a: int, b: int) -> ExitCode:
    rank = {code: n for n, code in enumerate(SEVERITY)}
    ca, cb = ExitCode(a), ExitCode(b)
    return ca if rank[ca] <= rank[cb] else cb
