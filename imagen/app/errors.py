"""Errors shown to the user as one line, each carrying its exit code (and, for `--json`, what
the error object says besides: a hint and the job it belongs to; app/contract.py)."""

from __future__ import annotations

from imagen.app.exit_codes import ExitCode


class UserError(Exception):
    def __init__(
        self,
        message: str,
        code: ExitCode = ExitCode.BAD_INPUT,
        *,
        hint: str | None = None,
        job_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.hint = hint
        self.job_id = job_id
