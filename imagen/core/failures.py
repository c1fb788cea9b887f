"""Why a job failed, as the adapter understood it: a category, recorded in JobFailed.

Adapters say what went wrong; what that means for the process (its exit code) is the
application's call (imagen.app.outcome). The list is what the adapters meet today.
"""

from __future__ import annotations

from enum import StrEnum


class Failure(StrEnum):
    # The backend cannot do the job now: the user fixes the service, not the request.
    UNREACHABLE = "unreachable"  # no connection, or lost it while waiting
    UNAUTHORIZED = "unauthorized"  # the token (or a proxy) was refused
    OUT_OF_CREDIT = "out_of_credit"  # the account cannot pay
    RATE_LIMITED = "rate_limited"  # still limited after the allowed retries
    SERVER_ERROR = "server_error"  # 5xx after the allowed retries
    MODELS_MISSING = "models_missing"  # the server lacks the model files
    # The request itself is wrong: the user fixes the input or the config.
    INVALID_INPUT = "invalid_input"  # the backend rejected the input or the workflow
    NOT_FOUND = "not_found"  # no such model
    OUTPUT_EXISTS = "output_exists"  # the destination file appeared meanwhile
    # The job ran and did not produce a kept image.
    GENERATION_FAILED = (
        "generation_failed"  # failed, was cancelled or interrupted remotely, or made nothing
    )
    OUTPUT_LOST = "output_lost"  # produced (and paid for) but no longer served
    DOWNLOAD_FAILED = "download_failed"  # the image could not be fetched or was not an image
    # Refused before anything was sent: a budget of the caller's would be passed.
    BUDGET = "budget"
    UNEXPECTED = "unexpected"  # an answer the adapter does not understand, or an internal limit
