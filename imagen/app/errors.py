"""Errors shown to the user as one line, each carrying its exit code."""

from __future__ import annotations

from imagen.app.exit_codes import ExitCode


class UserError(Exception):
    def __init__(self, message: str, code: ExitCode = ExitCode.BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code
