"""A pool: one ComfyUI backend over several servers (`urls = [...]`).

Where a job runs is decided here, from recorded events only: the runner probes every member
(ProbeMembers -> MembersProbed, each member's /queue and this process's jobs in flight on it),
`place` picks the member with the shortest queue and records JobPlaced before anything is
posted, and every request after that goes to the placed server (job.server_url). A placed
member that stops answering (refused, reset) for longer than the grace period, or refuses the
POST itself, gets a JobMoved: its unfinished prompt is abandoned and the job is placed again.
ComfyUI is local and free, so the move is an unpaid re-execution; a job with an image on disk
is never moved (what is left is fetched from where it was made).

Overflow (a paid create on the pool's `overflow` backend, JobOverflowed) happens only before
a prompt was ever posted: when no member answers past the grace period, or, with
`overflow_after_s`, when every answering member's queue would keep the job waiting longer
(its queue length times `image_s`, or the member's last observed run time as probed)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from imagen.backends.common import config_of, finite, run_start
from imagen.core.actions import Action, ProbeMembers, Record
from imagen.core.events import (
    JobFailed,
    JobMoved,
    JobOverflowed,
    JobPlaced,
    MembersProbed,
    ProgressObserved,
    RequestFailed,
    RequestSent,
    ResponseReceived,
    StreamMessage,
    StreamOpened,
)
from imagen.core.failures import Failure
from imagen.core.job import JobState, Recorded

GRACE_S = 3.0  # default member_grace_s: a restart or a blip shorter than this moves nothing
PROBE_BASE_S = 0.25
PROBE_CAP_S = 2.0
# Failures that mean "nothing answers there" (refused, reset, no route): a timeout is not one
# (a busy server may still run the prompt, and moving would run it twice).
_DOWN = frozenset({"refused", "network", "unreachable"})


def members(options: Mapping[str, Any]) -> tuple[str, ...]:
    """The pool's servers, or () for a one-server backend."""
    urls = options.get("urls")
    if not isinstance(urls, list):
        return ()
    return tuple(str(u).rstrip("/") for u in urls)


def check_options(table: Mapping[str, Any]) -> str | None:
    """What is wrong with a backend table's pool keys (config errors), None when fine."""
    if "urls" not in table:
        return None
    urls = table["urls"]
    if "url" in table:
        return "set url (one server) or urls (a pool), not both"
    if not isinstance(urls, list) or not urls:
        return 'urls must be a non-empty list of URLs, e.g. ["http://127.0.0.1:8188"]'
    for u in urls:
        parts = urlsplit(u) if isinstance(u, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            return f"urls: {u!r} is not an http(s) URL such as http://127.0.0.1:8188"
    if len({str(u).rstrip("/") for u in urls}) != len(urls):
        return "urls names a server twice"
    return None


def placement(state: JobState) -> Recorded | None:
    """The job's current placement: the last JobPlaced not followed by a JobMoved."""
    for rec in reversed(state.history):
        if isinstance(rec.event, JobMoved):
            return None
        if isinstance(rec.event, JobPlaced):
            return rec
    return None


def placed_server(state: JobState) -> str | None:
    rec = placement(state)
    return rec.event.server if rec is not None else None  # type: ignore[attr-defined]


def moved_at(state: JobState) -> int:
    """Version of the latest move (0 if none): a new attempt starts there."""
    for rec in reversed(state.history):
        if isinstance(rec.event, JobMoved):
            return rec.version
    return 0


def grace(state: JobState) -> float:
    return float(finite(config_of(state).get("member_grace_s")) or GRACE_S)


def step(state: JobState) -> Action | None:
    """The pool's part of deciding: place an unplaced job, move one whose member is gone;
    None when the job's own machine decides (it is placed on a live member)."""
    urls = members(config_of(state))
    if not urls:
        return None
    placed = placement(state)
    if placed is None:
        return place(state, urls)
    if state.images:
        return None  # made there: fetch the rest from there
    why = gone(state, placed)
    if why is not None:
        return Record((JobMoved(placed.event.server, why[:200]),))  # type: ignore[attr-defined]
    return None


def _load(answer: Any, ours: int) -> int | None:
    """A member's queue: running + pending from /queue, at least this process's jobs there
    (placed jobs not posted yet); None when it did not answer well."""
    if not isinstance(answer, dict) or answer.get("status") != 200:
        return None
    sizes = answer.get("sizes")
    if not isinstance(sizes, dict) or not {"queue_running", "queue_pending"} <= set(sizes):
        return None
    return max(int(sizes["queue_running"]) + int(sizes["queue_pending"]), ours)


def place(state: JobState, urls: tuple[str, ...]) -> Action:
    # What an earlier run or an earlier placement saw is old news: probe again.
    floor = _last_move_or_start(state)
    probes = [r for r in state.events_of(MembersProbed) if r.version > floor]
    token = config_of(state).get("token_env")
    if not probes:
        return ProbeMembers(urls, "/queue", auth_env=token)
    last: MembersProbed = probes[-1].event  # type: ignore[assignment]
    loads = {u: _load(last.answers.get(u), last.ours.get(u, 0)) for u in urls}
    up = [(load, i, u) for i, (u, load) in enumerate(loads.items()) if load is not None]
    if up:
        why = too_long(state, last, up)
        spill = overflow(state, why) if why is not None else None
        if spill is not None:
            return spill
        load, _, url = min(up)
        return Record((JobPlaced(url, load),))
    # No member answers: probe again, backing off, for the grace period.
    waited = (state.now - probes[0].at).total_seconds() if state.now else 0.0
    if waited < grace(state):
        delay = min(PROBE_BASE_S * 2 ** (len(probes) - 1), PROBE_CAP_S)
        return ProbeMembers(urls, "/queue", auth_env=token, not_before=state.after(delay))
    down = "; ".join(f"{u}: {_said(last.answers.get(u))}" for u in urls)
    spill = overflow(state, f"no member of the pool answers ({down[:200]})")
    if spill is not None:
        return spill
    return Record(
        (
            JobFailed(
                "unreachable",
                f"no member of the pool answers ({down[:300]}); is ComfyUI running?",
                Failure.UNREACHABLE,
            ),
        )
    )


def too_long(state: JobState, probed: MembersProbed, up: list[tuple[int, int, str]]) -> str | None:
    """Why the job should not wait for the pool (`overflow_after_s`), or None: some member
    would start it soon enough, or its wait is unknown (a queue and no time per prompt yet:
    local is free, so it stays)."""
    cfg = config_of(state)
    limit = finite(cfg.get("overflow_after_s"))
    if limit is None:
        return None
    waits: list[float] = []
    for load, _, url in up:
        per = finite(cfg.get("image_s")) or finite(probed.image_s.get(url))
        if load and per is None:
            return None
        waits.append(load * (per or 0.0))
    if min(waits) <= limit:
        return None
    return f"every member's queue would wait over {limit:g}s (at least {min(waits):.1f}s)"


def overflow(state: JobState, why: str) -> Record | None:
    """The job to the pool's overflow backend (a paid create, prepared with the request as
    `overflow_request`), or None: none is configured, or a prompt was ever posted to a member
    (it may still run there, and a job is never both run locally and paid for)."""
    spec = config_of(state).get("overflow_request")
    if not isinstance(spec, dict) or any(
        isinstance(r.event, RequestSent) and r.event.purpose == "prompt" for r in state.history
    ):
        return None
    return Record(
        (
            JobOverflowed(
                str(spec.get("backend")),
                str(spec.get("backend_type")),
                str(spec.get("model")),
                dict(spec.get("params") or {}),
                dict(spec.get("backend_config") or {}),
                spec.get("price_usd"),
                why[:300],
            ),
        )
    )


def _last_move_or_start(state: JobState) -> int:
    return max(moved_at(state), run_start(state))


def _said(answer: Any) -> str:
    if isinstance(answer, dict) and "error" in answer:
        return str(answer["error"])
    if isinstance(answer, dict):
        return f"HTTP {answer.get('status')}"
    return "no answer"


def gone(state: JobState, placed: Recorded) -> str | None:
    """Why the placed member counts as gone, None while it may still answer: it refused the
    POST (nothing reached it), or nothing it was asked since it last answered got an answer,
    for longer than the grace period."""
    failures: list[Recorded] = []
    for rec in state.history:
        if rec.version <= placed.version:
            continue
        e = rec.event
        if isinstance(e, ResponseReceived | StreamOpened | StreamMessage | ProgressObserved):
            failures = []  # it answered
        elif isinstance(e, RequestFailed):
            if e.error not in _DOWN:
                failures = []  # it answered, in its way (a handshake refused, a bad image)
                continue
            if e.purpose == "prompt" and e.error == "refused":
                return f"refused the prompt ({e.message})"
            failures.append(rec)
    if not failures or state.now is None:
        return None
    silent = (state.now - failures[0].at).total_seconds()
    if silent < grace(state):
        return None
    last: RequestFailed = failures[-1].event  # type: ignore[assignment]
    return f"no answer for {silent:.1f}s ({last.error}: {last.message})"
