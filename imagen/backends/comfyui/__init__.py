"""ComfyUI adapter (pure): FLUX.1 schnell on a local (or proxied) ComfyUI server.

One concern a module: `inputs` (configuration, params), `probe` (`imagen backends --check`),
`graph` (the workflow posted), `wire` (reading ComfyUI's answers; public), `frames` (the
progress websocket), `job` (what the job's record says, the requests built from it),
`machine` (`decide`), `submit`, `cancel`, `download` (its steps) and `report` (what
sidecars and usage show). This package re-exports what outside code uses: the
`imagen.backends.contract.Backend` surface, its constants and a few helpers.
"""

from __future__ import annotations

from imagen.backends.comfyui.cancel import CANCEL_CHECKS
from imagen.backends.comfyui.frames import NOTABLE_KINDS, TERMINAL_KINDS, interpret_frame
from imagen.backends.comfyui.graph import (
    MISSING_MODEL_NODES,
    SETUP_DOC,
    custom_graph,
    flux_schnell_graph,
    validate_request,
)
from imagen.backends.comfyui.inputs import (
    ASPECTS,
    CONFIG,
    DEFAULT_MODEL,
    DEFAULT_URL,
    FILE_OPTIONS,
    MAX_BATCH,
    MAX_SIDE,
    MAX_STEPS,
    MIN_SIDE,
    SEED_MAX,
    normalise,
)
from imagen.backends.comfyui.job import (
    MALFORMED_RETRIES,
    RECONNECT_BASE_S,
    RECONNECT_CAP_S,
    client_id,
    current_prompt,
    prompt_id,
)
from imagen.backends.comfyui.job import run_deadline as deadline
from imagen.backends.comfyui.machine import POLL_WINDOW_S, decide
from imagen.backends.comfyui.pool import check_options, members
from imagen.backends.comfyui.probe import (
    check_requests,
    check_verdict,
    probe_request,
    probe_verdict,
    status,
)
from imagen.backends.comfyui.report import describe_model, sent_inputs, workflow_info
from imagen.backends.comfyui.wire import (
    RECORDED_HEADERS,
    HistoryEntry,
    queue_ids,
    read_history,
    system_facts,
)
from imagen.backends.common import run_start

__all__ = [
    "ASPECTS",
    "CANCEL_CHECKS",
    "CONFIG",
    "DEFAULT_MODEL",
    "DEFAULT_URL",
    "FILE_OPTIONS",
    "MALFORMED_RETRIES",
    "MAX_BATCH",
    "MAX_SIDE",
    "MAX_STEPS",
    "MIN_SIDE",
    "MISSING_MODEL_NODES",
    "NOTABLE_KINDS",
    "POLL_WINDOW_S",
    "RECONNECT_BASE_S",
    "RECONNECT_CAP_S",
    "RECORDED_HEADERS",
    "SEED_MAX",
    "SETUP_DOC",
    "TERMINAL_KINDS",
    "HistoryEntry",
    "check_options",
    "check_requests",
    "check_verdict",
    "client_id",
    "current_prompt",
    "custom_graph",
    "deadline",
    "decide",
    "describe_model",
    "flux_schnell_graph",
    "interpret_frame",
    "members",
    "normalise",
    "probe_request",
    "probe_verdict",
    "prompt_id",
    "queue_ids",
    "read_history",
    "run_start",
    "sent_inputs",
    "status",
    "system_facts",
    "validate_request",
    "workflow_info",
]
