"""Process exit codes: what each one promises (docs/usage.md, "Exit codes").

The promise that matters most: 2 means nothing was recorded and nothing was written, so a
caller may fix the input and run again without a second thought. Everything imagen can check
by itself is checked before the first event is appended; a refusal that only the backend can
make comes after the job is recorded, and has its own code (8).
"""

from enum import IntEnum


class ExitCode(IntEnum):
    """One meaning per code: MEANINGS below is what `imagen discover` and docs/usage.md say."""

    OK = 0
    JOB_FAILED = 1
    BAD_INPUT = 2
    BACKEND_UNAVAILABLE = 3
    AUDIT_FAILED = 4
    CONFLICT = 5
    NOT_FOUND = 6
    LEDGER_ERROR = 7
    REJECTED = 8
    OVER_BUDGET = 9
    CANCELLED = 10
    NO_IMAGE = 11
    INTERNAL = 70
    STILL_RUNNING = 75  # EX_TEMPFAIL
    INTERRUPTED = 130
    BROKEN_PIPE = 141
    TERMINATED = 143


MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "every image was written with its sidecar (or the command did what it said)",
    ExitCode.JOB_FAILED: "the job is recorded; it ran and produced no kept image "
    "(it may have been paid: resume it, never run it again blind)",
    ExitCode.BAD_INPUT: "bad arguments or configuration: nothing was recorded or written",
    ExitCode.BACKEND_UNAVAILABLE: "the backend is out of reach, unauthorised, out of credit or "
    "stopped during the job (ComfyUI gone mid-job); a recorded job can be resumed",
    ExitCode.AUDIT_FAILED: "audit/rebuild found a problem; usage sync refused a head; "
    "resume found the job's image gone",
    ExitCode.CONFLICT: "the job is driven by a live process, or a resume needs --force-new",
    ExitCode.NOT_FOUND: "no job or batch matches the id",
    ExitCode.LEDGER_ERROR: "the ledger cannot be opened (schema too new, unreachable database)",
    ExitCode.REJECTED: "the job is recorded: the backend refused its input (422, invalid graph)",
    ExitCode.OVER_BUDGET: "the job is recorded as failed: its price would pass a budget; "
    "nothing was sent",
    ExitCode.CANCELLED: "the job is recorded as cancelled (`imagen cancel`, or Ctrl-C in an "
    "earlier run)",
    ExitCode.NO_IMAGE: "the job exists but has no image to open (not succeeded, or removed)",
    ExitCode.STILL_RUNNING: "`wait` stopped (its --timeout, Ctrl-C) before every job ended: "
    "they go on",
    ExitCode.INTERNAL: "a bug in imagen (EX_SOFTWARE): one line, the traceback with -v",
    ExitCode.INTERRUPTED: "Ctrl-C in this run: the job was cancelled",
    ExitCode.BROKEN_PIPE: "the reader of stdout closed early (`imagen jobs | head -1`), as SIGPIPE",
    ExitCode.TERMINATED: "SIGTERM/SIGHUP: the job is interrupted and can be resumed",
}

# What to do next, for the JSON error object's `hint` (a raise site may give its own).
HINTS: dict[ExitCode, str] = {
    ExitCode.JOB_FAILED: "see `imagen show JOB`; `imagen resume JOB` finishes a paid job",
    ExitCode.BAD_INPUT: "fix the input and run again: nothing was recorded",
    ExitCode.BACKEND_UNAVAILABLE: "check `imagen backends --check`, then `imagen resume JOB`",
    ExitCode.AUDIT_FAILED: "run `imagen audit` for details",
    ExitCode.CONFLICT: "wait for the process driving the job, or see `imagen resume --help`",
    ExitCode.NOT_FOUND: "list jobs with `imagen jobs`",
    ExitCode.LEDGER_ERROR: "check the [ledger] url and `imagen db upgrade`",
    ExitCode.REJECTED: "change the input (see `imagen show JOB`); nothing more was paid",
    ExitCode.OVER_BUDGET: "see `imagen whoami`; a person raises the budget",
    ExitCode.CANCELLED: "run it again if it is still wanted",
    ExitCode.NO_IMAGE: "see `imagen show JOB`",
    ExitCode.STILL_RUNNING: "`imagen wait JOB` again later; the jobs go on",
    ExitCode.INTERNAL: "run again with -v and report it",
    ExitCode.INTERRUPTED: "`imagen resume JOB` if it was not cancelled",
    ExitCode.TERMINATED: "`imagen resume JOB` finishes it",
}


def code_name(code: ExitCode | int) -> str:
    """The stable snake_case name of an exit code ("over_budget"): the error object's `code`."""
    return ExitCode(code).name.lower()


def hint_for(code: ExitCode | int, job_id: str | None = None) -> str | None:
    hint = HINTS.get(ExitCode(code))
    if hint is None:
        return None
    return hint.replace("JOB", job_id or "ID")


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
    ExitCode.CANCELLED,
    ExitCode.NO_IMAGE,
    ExitCode.NOT_FOUND,
    ExitCode.OK,
)


def most_severe(a: int, b: int) -> ExitCode:
    rank = {code: n for n, code in enumerate(SEVERITY)}
    ca, cb = ExitCode(a), ExitCode(b)
    return ca if rank[ca] <= rank[cb] else cb
