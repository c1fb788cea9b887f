"""Replicate adapter (pure): FLUX on api.replicate.com.

One concern a module: `inputs` (configuration, params), `probe` (`imagen backends --check`),
`wire` (reading Replicate's answers; public), `job` (what the job's record says, the requests
built from it), `machine` (`decide`), `lookup`, `poll`, `cancel`, `download` (its steps) and
`report` (what sidecars and usage show). This package re-exports what outside code uses: the
`imagen.backends.contract.Backend` surface, the money-rule constants and a few helpers.
"""

from __future__ import annotations

from imagen.backends.common import run_start
from imagen.backends.replicate.download import LOCAL_ERRORS
from imagen.backends.replicate.inputs import (
    ASPECT_SIZES,
    CONFIG,
    DEFAULT_BASE_URL,
    DEFAULT_MODEL,
    DEFAULT_STEPS,
    DEFAULT_TIMEOUT_S,
    EXTRA_INPUTS,
    FILE_OPTIONS,
    FORMATS,
    MAX_OUTPUTS,
    MAX_STEPS,
    SEED_MAX,
    SEED_MIN,
    model_name,
    nearest_aspect,
    normalise,
    validate_request,
)
from imagen.backends.replicate.job import (
    MAX_429_RETRIES,
    MAX_UNCERTAIN_CREATES,
    PAST_DEADLINE_MAX_WAIT_S,
    RETRIES_PER_RUN,
    model_input,
    uncertain_creates,
)
from imagen.backends.replicate.lookup import LOOKUP_MARGIN_S, MAX_LOOKUP_PAGES
from imagen.backends.replicate.machine import decide, interpret_frame
from imagen.backends.replicate.probe import (
    check_requests,
    check_verdict,
    probe_request,
    probe_verdict,
    status,
)
from imagen.backends.replicate.report import describe_model, sent_inputs
from imagen.backends.replicate.wire import (
    MAX_BACKOFF_S,
    MAX_RETRY_AFTER_S,
    RECORDED_HEADERS,
    http_date,
    origin,
    same_origin,
)

__all__ = [
    "ASPECT_SIZES",
    "CONFIG",
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "DEFAULT_STEPS",
    "DEFAULT_TIMEOUT_S",
    "EXTRA_INPUTS",
    "FILE_OPTIONS",
    "FORMATS",
    "LOCAL_ERRORS",
    "LOOKUP_MARGIN_S",
    "MAX_429_RETRIES",
    "MAX_BACKOFF_S",
    "MAX_LOOKUP_PAGES",
    "MAX_OUTPUTS",
    "MAX_RETRY_AFTER_S",
    "MAX_STEPS",
    "MAX_UNCERTAIN_CREATES",
    "PAST_DEADLINE_MAX_WAIT_S",
    "RECORDED_HEADERS",
    "RETRIES_PER_RUN",
    "SEED_MAX",
    "SEED_MIN",
    "check_requests",
    "check_verdict",
    "decide",
    "describe_model",
    "http_date",
    "interpret_frame",
    "model_input",
    "model_name",
    "nearest_aspect",
    "normalise",
    "origin",
    "probe_request",
    "probe_verdict",
    "run_start",
    "same_origin",
    "sent_inputs",
    "status",
    "uncertain_creates",
    "validate_request",
]
