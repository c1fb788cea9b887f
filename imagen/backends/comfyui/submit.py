"""Submitting the graph to /prompt, and finding a prompt that may have been queued before
submitting it again."""

from __future__ import annotations

from typing import Any

from imagen.backends.comfyui.graph import MISSING_MODEL_NODES, SETUP_DOC, job_graph
from imagen.backends.comfyui.job import (
    attempt_prompts,
    client_id,
    malformed,
    prompt_id,
    request,
    server_url,
    submitted_id,
    unreachable,
)
from imagen.backends.comfyui.wire import as_dict, queue_ids, snippet
from imagen.backends.common import config_of, exchanges, finite, pending_retry, retries, retry_time
from imagen.core.actions import Action, Record
from imagen.core.events import (
    JobFailed,
    LookupConcluded,
    RemoteJobAccepted,
    RequestFailed,
    ResponseReceived,
    RetryScheduled,
)
from imagen.core.failures import Failure
from imagen.core.job import JobState


def _validation_failure(body: Any) -> Record:
    body = as_dict(body)
    node_errors = body.get("node_errors")
    missing: list[str] = []
    other: list[str] = []
    for node in as_dict(node_errors).values():
        node = as_dict(node)
        errors = node.get("errors")
        for err in errors if isinstance(errors, list) else []:
            err = as_dict(err)
            cls = snippet(node.get("class_type"), 80)
            line = f"{cls}: {snippet(err.get('message'), 200)}: {snippet(err.get('details'), 300)}"
            if err.get("type") == "value_not_in_list" and cls in MISSING_MODEL_NODES:
                info = as_dict(err.get("extra_info"))
                missing.append(
                    f"{snippet(info.get('received_value') or err.get('details'), 200)} "
                    f"({cls}.{snippet(info.get('input_name'), 80)})"
                )
            else:
                other.append(line)
    if missing:
        return Record(
            (
                JobFailed(
                    "models_missing",
                    "ComfyUI is missing model files: "
                    + ", ".join(missing)
                    + f"; see {SETUP_DOC} for what to download and where it goes",
                    Failure.MODELS_MISSING,
                ),
            )
        )
    error = body.get("error")
    detail = (
        "; ".join(other)
        or (snippet(error.get("message"), 300) if isinstance(error, dict) else "")
        or (snippet(error, 300) if error else "")
        or snippet(body, 300)
    )
    return Record(
        (
            JobFailed(
                "invalid_workflow",
                f"ComfyUI rejected the workflow: {detail}",
                Failure.INVALID_INPUT,
            ),
        )
    )


# -- submitting ------------------------------------------------------------------------------


def submit(state: JobState) -> Action:
    prompts = attempt_prompts(state)
    body = {
        "prompt": job_graph(state),
        "client_id": client_id(state),
        "prompt_id": prompt_id(state),
    }
    post = request(state, "prompt", "POST", "/prompt", body, timeout_s=30)
    if not prompts:
        return post
    last = prompts[-1]
    if pending_retry(state, "prompt") is not None:
        return request(state, "prompt", "POST", "/prompt", body, retry_time(state, "prompt"), 30)
    sent_id = submitted_id(state)
    if last.outcome is None or (
        isinstance(last.outcome, RequestFailed) and last.outcome.error != "refused"
    ):
        # It may have been queued: look the id up instead of submitting again.
        found = _lookup(state, sent_id)
        if found is not None:
            return found
        return Record(
            (
                LookupConcluded([], "create"),
                RetryScheduled("prompt", 1, 0.0, "not found on the server"),
            )
        )
    o = last.outcome
    if isinstance(o, ResponseReceived):
        if o.status == 200 and isinstance(o.body, dict):
            errors = o.body.get("node_errors")
            if not errors:
                got = o.body.get("prompt_id")
                return Record((RemoteJobAccepted(got if isinstance(got, str) else str(sent_id)),))
            if isinstance(errors, dict):
                return _validation_failure(o.body)
            return malformed(state, "prompt", "/prompt", "node_errors is not an object")
        if o.status == 200:
            return malformed(state, "prompt", "/prompt", "the answer is not an object")
        if o.status == 400:
            return _validation_failure(o.body)
        if o.status >= 500:
            # A proxy may answer 5xx after ComfyUI queued the prompt: look before posting again.
            found = _lookup(state, sent_id)
            if found is not None:
                return found
        if o.status >= 500 and retries(state, "prompt", "5xx") < 1:
            return Record(
                (
                    RetryScheduled(
                        "prompt",
                        1,
                        float(finite(config_of(state).get("retry_base_s")) or 0.5),
                        f"5xx HTTP {o.status}",
                    ),
                )
            )
        if o.status in (401, 403):
            return Record(
                (
                    JobFailed(
                        "unauthorized",
                        f"ComfyUI (or its proxy) refused the request: HTTP {o.status}; "
                        "check the backend's token_env",
                        Failure.UNAUTHORIZED,
                    ),
                )
            )
        return Record(
            (
                JobFailed(
                    "server_error",
                    f"ComfyUI answered HTTP {o.status} to /prompt: {snippet(o.body)}",
                    Failure.SERVER_ERROR,
                ),
            )
        )
    if retries(state, "prompt", "network") < 1:
        return Record(
            (
                RetryScheduled(
                    "prompt",
                    1,
                    float(finite(config_of(state).get("retry_base_s")) or 0.5),
                    f"network: {o.error}",
                ),
            )
        )
    return unreachable(state, o)


def _lookup(state: JobState, pid: str | None) -> Action | None:
    """Find a prompt we may have queued: /queue first (pending or running), then /history
    (finished). Not the other way round: a prompt that finished between the two asks would
    be in neither answer and be queued again. ComfyUI writes the history entry before the
    prompt leaves the queue, so in this order it is always found."""
    if pid is None:
        return None
    floor = attempt_prompts(state)[-1].sent_at.version
    looked = [ex for ex in exchanges(state, "lookup") if ex.sent_at.version > floor]
    adopt = Record((LookupConcluded([pid], "adopt"), RemoteJobAccepted(pid, via="lookup")))
    if not looked:
        return request(state, "lookup", "GET", "/queue")
    if looked[-1].outcome is None:
        return request(state, "lookup", "GET", looked[-1].sent.url[len(server_url(state)) :])
    o = looked[-1].outcome
    if len(looked) == 1:
        if isinstance(o, ResponseReceived) and o.status == 200:
            ids = queue_ids(o.body)
            if ids is not None and (pid in ids[0] or pid in ids[1]):
                return adopt
        return request(state, "lookup", "GET", f"/history/{pid}")
    if isinstance(o, ResponseReceived) and o.status == 200 and isinstance(o.body, dict):
        if pid in o.body:
            return adopt
        return None
    if isinstance(o, RequestFailed):
        return unreachable(state, o)
    return None
