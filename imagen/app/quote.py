"""A price before paying: `imagen generate … --dry-run` and the MCP `quote` tool.

Everything `generate` checks before recording is checked the same way (app/prepare.py: config,
backend, inputs, output names), then the caller's budgets are asked whether they would admit
the job (the guard the runner runs under the write lock, run here over a read-only snapshot),
and the first request the backend's adapter would send is worked out from the request alone
(its pure `decide`, with any progress stream taken as opened). Nothing is recorded, reserved or
sent: a ledger that does not exist is not created, and one that does is only read.
"""

from __future__ import annotations

from typing import Any

from imagen.app.session import NoLedgerYet, Session
from imagen.core.events import JobRequested
from imagen.core.inputs import GenerateInputs

# Open streams the simulation goes through before giving up on finding the first request.
_STEPS = 4


def quote(
    session: Session,
    job_inputs: GenerateInputs,
    *,
    backend: str | None = None,
    output: str | None = None,
    overwrite: bool = False,
    overflow: str | None = None,
) -> dict[str, Any]:
    """What `generate` with these inputs would record, send and cost, and whether the caller's
    budgets would admit it: one JSON-ready object (a bad input is a UserError, as generate's)."""
    from imagen.app.prepare import prepare_for
    from imagen.core.job import image_count, image_path
    from imagen.projections import cost

    env = session.env
    prepared = prepare_for(
        session, job_inputs, backend=backend, output=output, overwrite=overwrite, overflow=overflow
    )
    request = prepared.request
    count = image_count(request)
    images = [image_path(request.output_path, i) for i in range(count)]
    params = request.params
    return {
        "dry_run": True,
        "backend": request.backend,
        "backend_type": request.backend_type,
        "model": request.model,
        "caller": request.caller,
        "prompt": request.prompt,
        "seed": params.get("seed"),
        "width": params.get("width"),
        "height": params.get("height"),
        "steps": params.get("steps"),
        "image": images[0],
        "images": images,
        "price_usd": cost.micros_text(cost.micros(request.price_usd)),
        # The one cost rule (projections/cost.py) for the job as it would end: every image made.
        "cost_usd": cost.billed(
            request.price_usd, asked=count, stored=count, accepted=True, succeeded=True
        ).usd,
        "budget": _budget(session, request),
        "request": first_request(request, env.env),
        "notes": list(prepared.notes),
    }


def _budget(session: Session, request: JobRequested) -> dict[str, Any]:
    """Would the caller's budgets admit `request` now? The runner's own guard, run over a
    read-only snapshot (a ledger that does not exist holds no budget)."""
    from imagen.app import budgets

    admitted: dict[str, Any] = {"admitted": True, "message": None}
    if not budgets.price_micros(request):
        return admitted  # a free job is never refused
    try:
        store = session.reader()
    except NoLedgerYet:
        return admitted
    chain = budgets.chain_spend(store, request.caller)
    check = budgets.guard(request, session.env.clock, session.env.tz, chain)
    if check is None:
        return admitted
    try:
        with store.snapshot() as view:
            check(view)
    except budgets.OverBudget as refused:
        return {"admitted": False, "message": str(refused)}
    return admitted


def first_request(request: JobRequested, env: Any) -> dict[str, Any] | None:
    """The first HTTP request the adapter would send for `request` (method, url, headers,
    body), with the credentials it would carry shown as [redacted]; None when the adapter's
    first step is not a request (it is not simulated further)."""
    from datetime import UTC, datetime

    from imagen import backends
    from imagen.core.actions import HttpRequest, OpenStream
    from imagen.core.events import StreamOpened
    from imagen.core.job import JobState, Recorded, evolve
    from imagen.runner.redact import REDACTED, scrub, secret_pattern

    module = backends.load(request.backend_type)
    now = datetime.now(UTC)
    state = evolve(JobState("dry-run"), Recorded(request, 1, now))
    for _ in range(_STEPS):
        action = module.decide(state)
        if isinstance(action, OpenStream):  # taken as opened: the request comes after it
            opened = StreamOpened(action.url, action.client_id)
            state = evolve(state, Recorded(opened, state.version + 1, now))
            continue
        if not isinstance(action, HttpRequest):
            return None
        secret = env.get(action.auth_env) if action.auth_env else None
        pattern = secret_pattern(frozenset([secret] if secret else []))
        headers = dict(action.headers)
        if action.auth_env:
            headers["Authorization"] = f"Bearer {REDACTED}"
        return {
            "method": action.method,
            "url": scrub(action.url, pattern),
            "headers": scrub(headers, pattern),
            "body": scrub(action.json_body, pattern),
        }
    return None
