"""Submitting the graph to /prompt, and finding a prompt that may have been queued before
submitting it again."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from imagen.backends.comfyui.graph import MISSING_MODEL_NODES, SETUP_DOC, job_graph
from imagen.backends.comfyui.job import (
    attempt_prompts,
    backoff,
    client_id,
    malformed,
    past_deadline,
    prompt_id,
    request,
    server_url,
    submitted_id,
    unreachable,
)
from imagen.backends.comfyui.pool import members
from imagen.backends.comfyui.wire import as_dict, outcome_text, queue_ids, snippet
from imagen.backends.common import (
    Exchange,
    config_of,
    exchanges,
    finite,
    pending_retry,
    retries,
    retry_time,
    run_start,
)
from imagen.core.actions import Action, Halt, Record
from imagen.core.events import (
    CancelRequested,
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

LOOKUP_TRIES = 3  # asks of /queue or /history a run makes for a prompt that may be queued
MAX_LOST_POSTS = 3  # POSTs with no answer the job makes, each seen lost before the next


def submit(state: JobState) -> Action:
    """POST /prompt, and what its answer means. Never a second POST while the first's fate is
    unknown (docs/architecture.md): a POST that got no answer, a 5xx or a 2xx/3xx that is not an
    acceptance may have queued the prompt, so it is looked up; only a prompt seen missing from
    a well-formed /queue and then from /history is posted again, a bounded number of times and
    not past the deadline."""
    prompts = attempt_prompts(state)
    body = {
        "prompt": job_graph(state),
        "client_id": client_id(state),
        "prompt_id": prompt_id(state),
    }
    if not prompts:
        return request(state, "prompt", "POST", "/prompt", body, timeout_s=30)
    if pending_retry(state, "prompt") is not None:
        return request(state, "prompt", "POST", "/prompt", body, retry_time(state, "prompt"), 30)
    o = prompts[-1].outcome
    if isinstance(o, RequestFailed) and o.error == "refused":
        # Nothing reached ComfyUI: posting again is safe.
        if retries(state, "prompt", "network") < 1:
            return Record((RetryScheduled("prompt", 1, _retry_base(state), f"network: {o.error}"),))
        return unreachable(state, o)
    if isinstance(o, ResponseReceived):
        answered = _answered(state, o)
        if answered is not None:
            return answered
    # It may have been queued: look the id up before anything else.
    sent_id = submitted_id(state)
    found = _lookup(state, sent_id)
    if found is not None:
        return found
    return _post_again(state, o)


def _retry_base(state: JobState) -> float:
    return float(finite(config_of(state).get("retry_base_s")) or 0.5)


def _answered(state: JobState, o: ResponseReceived) -> Action | None:
    """What an answer to POST /prompt says, or None when it leaves the prompt's fate unknown (a
    5xx, which a proxy may send after ComfyUI queued it; a 2xx/3xx that is not an
    acceptance)."""
    if o.status == 200 and isinstance(o.body, dict):
        if _not_an_acceptance(state, o.body):
            return None
        errors = o.body.get("node_errors")
        if not errors:
            got = o.body.get("prompt_id")
            sent = submitted_id(state)
            return Record((RemoteJobAccepted(got if isinstance(got, str) else str(sent)),))
        return _validation_failure(o.body)
    if o.status == 400:
        return _validation_failure(o.body)
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
    if 400 <= o.status < 500:
        return _server_error(o)  # refused: nothing was queued
    return None


def _not_an_acceptance(state: JobState, body: dict[str, Any]) -> str | None:
    """Why a 200 object from POST /prompt is not this POST's acceptance, None when it is one.

    ComfyUI echoes the prompt_id it was sent (an older server names its own, a fresh uuid);
    an answer naming an earlier attempt's prompt is not about this POST (a replayed or cached
    answer), and adopting it would follow a prompt already seen lost."""
    errors = body.get("node_errors")
    if errors and not isinstance(errors, dict):
        return "node_errors is not an object"
    got = body.get("prompt_id")
    earlier = {
        ex.sent.body.get("prompt_id")
        for ex in exchanges(state, "prompt")[:-1]
        if isinstance(ex.sent.body, dict)
    }
    if isinstance(got, str) and got != submitted_id(state) and got in earlier:
        return f"it names prompt {snippet(got, 40)}, an earlier attempt's"
    return None


def _server_error(o: ResponseReceived) -> Record:
    return Record(
        (
            JobFailed(
                "server_error",
                f"ComfyUI answered HTTP {o.status} to /prompt: {snippet(o.body)}",
                Failure.SERVER_ERROR,
            ),
        )
    )


def _post_again(state: JobState, o: ResponseReceived | RequestFailed | None) -> Action:
    """The prompt was seen missing from a well-formed /queue and then from /history: ComfyUI
    never queued it. Post again, a bounded number of times, and not past the deadline."""
    if past_deadline(state):
        # Nothing runs: the timeout ends the job as a timeout does (the cancel verifies it).
        return Record((CancelRequested("timeout"),))
    if isinstance(o, ResponseReceived) and o.status >= 500:
        if retries(state, "prompt", "5xx") < 1:
            return Record(
                (RetryScheduled("prompt", 1, _retry_base(state), f"5xx HTTP {o.status}"),)
            )
        return _server_error(o)
    if isinstance(o, ResponseReceived) and o.status == 200:
        why = (
            _not_an_acceptance(state, o.body)
            if isinstance(o.body, dict)
            else "the answer is not an object"
        )
        return malformed(state, "prompt", "/prompt", why or "not an acceptance")
    if isinstance(o, ResponseReceived):
        return _server_error(o)  # 1xx, 3xx, another 2xx: not what ComfyUI sends
    lost = retries(state, "prompt", "not found")
    if lost < MAX_LOST_POSTS - 1:
        return Record(
            (
                LookupConcluded([], "create"),
                RetryScheduled("prompt", lost + 1, 0.0, "not found on the server"),
            )
        )
    return Record(
        (
            JobFailed(
                "unreachable",
                f"ComfyUI at {server_url(state)} never answered POST /prompt in "
                f"{lost + 1} attempts ({outcome_text(o)}), and queued none of them",
                Failure.UNREACHABLE,
            ),
        )
    )


def _lookup(state: JobState, pid: str | None) -> Action | None:
    """Find a prompt we may have queued: /queue first (pending or running), then /history
    (finished). Not the other way round: a prompt that finished between the two asks would
    be in neither answer and be queued again. ComfyUI writes the history entry before the
    prompt leaves the queue, so in this order it is always found.

    None means lost: missing from a well-formed /queue, then from /history. An answer that
    says neither (no answer, an error, a malformed body) is asked again a few times a run,
    then the run stops, the job resumable: the prompt may be queued, so it is not posted
    again."""
    if pid is None:
        return None
    floor = max(attempt_prompts(state)[-1].sent_at.version, run_start(state))
    looked = [ex for ex in exchanges(state, "lookup") if ex.sent_at.version > floor]
    if not looked:
        return request(state, "lookup", "GET", "/queue")
    last = looked[-1]
    if pending_retry(state, "lookup") is not None:
        return request(state, "lookup", "GET", "/queue", not_before=retry_time(state, "lookup"))
    if last.outcome is None:
        return request(state, "lookup", "GET", last.sent.url[len(server_url(state)) :])
    adopt = Record((LookupConcluded([pid], "adopt"), RemoteJobAccepted(pid, via="lookup")))
    seen = _seen(last, pid)
    if seen == "there":
        return adopt
    if seen == "not queued":
        return request(state, "lookup", "GET", f"/history/{pid}")
    if seen == "not finished":
        return None
    unknown = [ex for ex in looked if _seen(ex, pid) == "unknown"]
    what = f"{urlsplit(last.sent.url).path}: {outcome_text(last.outcome)}"
    # In a pool the member that does not say is moved off once its grace has passed
    # (pool.gone, an unpaid re-run elsewhere): look again until then, never halt first.
    pooled = bool(members(config_of(state)))
    if (len(unknown) < LOOKUP_TRIES or pooled) and not past_deadline(state):
        n = len(unknown)
        return Record((RetryScheduled("lookup", n, backoff(n), what[:300]),))
    return Halt(
        f"POST /prompt may have queued prompt {pid}, but ComfyUI at {server_url(state)} did "
        f"not say where it is ({what[:200]}); imagen does not post it again while it may be "
        f"queued: `imagen resume {state.job_id}` once ComfyUI answers",
        Failure.UNREACHABLE,
    )


def _seen(ex: Exchange, pid: str) -> str:
    """What one lookup answer says: there | not queued | not finished | unknown."""
    o = ex.outcome
    if not isinstance(o, ResponseReceived) or o.status != 200:
        return "unknown"
    if urlsplit(ex.sent.url).path.endswith("/queue"):
        ids = queue_ids(o.body)
        if ids is None:
            return "unknown"
        return "there" if pid in ids[0] | ids[1] else "not queued"
    if not isinstance(o.body, dict):
        return "unknown"
    return "there" if pid in o.body else "not finished"
