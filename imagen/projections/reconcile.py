"""Reconciliation with Replicate's own books (pure): what the ledger knows of each prediction,
and how that compares with the provider's list of predictions.

The shell (app/reconcile.py) reads the verified chain into a `LedgerBook`, lists the provider's
predictions and hands both to `compare`. Findings use `imagen audit`'s shape (kind, message and
the ids they are about).

Times: a prediction's place in the window is its `created_at` on Replicate's clock. The shell
measures the offset between Replicate's clock and ours (the listing's Date header) and passes
the window already on Replicate's clock; a prediction the ledger knows is placed by the
`created_at` the ledger recorded from Replicate, else by when the ledger first knew it (our
clock) plus that offset.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from imagen.backends.replicate.inputs import api_base_of, token_env_of
from imagen.backends.replicate.wire import created_at, origin, outputs, prediction
from imagen.core import money
from imagen.core.pricing import price_for
from imagen.core.times import iso, parse_iso

TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})
ENDED = frozenset({"JobSucceeded", "JobFailed", "JobCancelled"})
# Replicate's `aborted` (ended before it ran) and `canceled` are both "stopped": imagen's cancel
# may see either, so they are not a difference.
_STOPPED = frozenset({"canceled", "aborted"})

Account = tuple[tuple[str, str, int] | None, str]  # (API origin, token env var name)
Finding = dict[str, Any]


def account_of(options: Mapping[str, Any]) -> Account:
    """Which provider account a backend's options list: the API's origin and the token's env
    var (two backends sharing both are listed once)."""
    return origin(api_base_of(options)), token_env_of(options)


@dataclass
class Known:
    """One prediction as the ledger knows it."""

    remote_id: str
    job_id: str
    account: Account
    billed: bool = False  # the ledger counts it as paid (RemoteJobAccepted)
    status: str | None = None  # the last status the ledger saw from Replicate
    outputs: int | None = None  # outputs in that last answer
    created_at: datetime | None = None  # Replicate's clock, as the ledger recorded it
    first_seen: datetime | None = None  # our clock: when the ledger first knew it


@dataclass
class _Job:
    account: Account
    model: str = ""
    price_usd: Any = None  # the per-image price the request recorded
    inputs: list[dict[str, Any]] = field(default_factory=list)  # each create's sent input
    accepted: str | None = None
    ended: str | None = None  # the terminal event's type
    remote_cancelled: bool = False


@dataclass
class LedgerBook:
    """The ledger's side, folded from events in position order (`feed`)."""

    predictions: dict[str, Known] = field(default_factory=dict)
    jobs: dict[str, _Job] = field(default_factory=dict)

    def feed(self, events: Iterable[Any]) -> None:
        for e in events:
            self._apply(e.stream_id, e.type, e.data, e.recorded_at)

    def _apply(self, job_id: str, type_name: str, data: Any, recorded_at: str) -> None:
        data = data if isinstance(data, dict) else {}
        if type_name == "JobRequested":
            if data.get("backend_type") == "replicate":
                options = data.get("backend_config")
                self.jobs[job_id] = _Job(
                    account_of(options if isinstance(options, dict) else {}),
                    str(data.get("model") or ""),
                    data.get("price_usd"),
                )
            return
        job = self.jobs.get(job_id)
        if job is None:
            return  # not a Replicate job (or a stream that is not a job)
        at = _time(recorded_at)
        if type_name == "RequestSent" and data.get("purpose") == "create":
            body = data.get("body")
            if isinstance(body, dict) and isinstance(body.get("input"), dict):
                job.inputs.append(body["input"])
        elif type_name == "ResponseReceived" and data.get("status") in (200, 201, 202):
            p = prediction(data.get("body"))
            if p is not None and data.get("purpose") != "lookup":
                self._seen(job_id, job, p, at)
        elif type_name == "RemoteJobAccepted" and isinstance(data.get("remote_id"), str):
            known = self._known(data["remote_id"], job_id, job, at)
            known.billed = True
            job.accepted = known.remote_id
        elif type_name in ENDED:
            job.ended = job.ended or type_name
            job.remote_cancelled = data.get("remote_cancelled") is True

    def _known(self, remote_id: str, job_id: str, job: _Job, at: datetime | None) -> Known:
        known = self.predictions.get(remote_id)
        if known is None:
            known = self.predictions[remote_id] = Known(remote_id, job_id, job.account)
        if known.first_seen is None:
            known.first_seen = at
        return known

    def _seen(self, job_id: str, job: _Job, p: dict[str, Any], at: datetime | None) -> None:
        """A prediction object in an answer to this job's create, poll or cancel."""
        known = self._known(p["id"], job_id, job, at)
        known.status = p["status"]
        if p.get("data_removed") is not True:
            known.outputs = len(outputs(p))
        known.created_at = created_at(p) or known.created_at


def _time(text: Any) -> datetime | None:
    try:
        return parse_iso(str(text))
    except ValueError:
        return None


@dataclass(frozen=True)
class Window:
    """The audited window on Replicate's clock (`since` None: everything listed)."""

    since: datetime | None
    offset: timedelta  # Replicate's clock minus ours

    def holds(self, moment: datetime | None) -> bool:
        return self.since is None or moment is None or moment >= self.since


def place(known: Known, offset: timedelta) -> datetime | None:
    """When a prediction the ledger knows was created, on Replicate's clock."""
    if known.created_at is not None:
        return known.created_at
    return None if known.first_seen is None else known.first_seen + offset


def same_status(ours: str, theirs: str) -> bool:
    return ours == theirs or (ours in _STOPPED and theirs in _STOPPED)


def expected_status(known: Known, job: _Job | None) -> str | None:
    """The end the ledger recorded for the prediction, if it recorded one."""
    if known.status in TERMINAL:
        return known.status
    if job is not None and job.ended == "JobCancelled" and job.remote_cancelled:
        return "canceled"  # imagen's cancel was answered; Replicate ends it as canceled
    return None


def compare(
    book: LedgerBook,
    listed: list[dict[str, Any]],
    account: Account,
    window: Window,
    *,
    complete: bool,
    billed_before: set[str],
    backends: str,
) -> tuple[list[Finding], list[Finding], int]:
    """Findings and notes for one account, and how many listed predictions are in the window.

    `listed`: the provider's prediction objects (checked: id and status are strings).
    `complete`: the listing reached past the window's start (else no prediction can be called
    missing from it). `billed_before`: predictions the verified chain counts as billed (those
    accepted later, while listing, are not looked for)."""
    problems: list[Finding] = []
    notes: list[Finding] = []
    seen: set[str] = set()
    in_window = 0
    for p in listed:
        pid = p["id"]
        seen.add(pid)
        if not window.holds(created_at(p)):
            continue
        in_window += 1
        known = book.predictions.get(pid)
        status = str(p["status"])
        if known is None:
            found = _unknown(book, p, account, backends)
            (notes if found["kind"] == "provider_pending" else problems).append(found)
            continue
        job = book.jobs.get(known.job_id)
        want = expected_status(known, job)
        if want is not None and not same_status(want, status):
            problems.append(
                {
                    "kind": "provider_status",
                    "remote_id": pid,
                    "job_id": known.job_id,
                    "ledger": want,
                    "provider": status,
                    "message": f"prediction {pid} (job {known.job_id}): the ledger recorded "
                    f"{want}, Replicate lists {status}",
                }
            )
        elif want is None and status in TERMINAL and (job is None or job.ended is None):
            notes.append(
                {
                    "kind": "provider_unfinished",
                    "remote_id": pid,
                    "job_id": known.job_id,
                    "message": f"prediction {pid} is {status} at Replicate; job {known.job_id} "
                    f"has not recorded its end yet (running, or `imagen resume {known.job_id}`)",
                }
            )
        theirs = None if p.get("data_removed") is True else len(outputs(p))
        if (
            want == "succeeded"
            and status == "succeeded"
            and known.outputs is not None
            and theirs is not None
            and theirs != known.outputs
        ):
            problems.append(
                {
                    "kind": "provider_outputs",
                    "remote_id": pid,
                    "job_id": known.job_id,
                    "ledger": known.outputs,
                    "provider": theirs,
                    "message": f"prediction {pid} (job {known.job_id}): the ledger recorded "
                    f"{known.outputs} output(s), Replicate lists {theirs}",
                }
            )
    problems.extend(below_table(book, account, window, billed_before))
    if complete:
        for pid in sorted(billed_before - seen):
            known = book.predictions[pid]
            if known.account != account or not window.holds(place(known, window.offset)):
                continue
            problems.append(
                {
                    "kind": "provider_missing",
                    "remote_id": pid,
                    "job_id": known.job_id,
                    "message": f"prediction {pid} (job {known.job_id}) is counted as billed by "
                    f"the ledger but Replicate does not list it ({backends})",
                }
            )
    return problems, notes, in_window


def below_table(
    book: LedgerBook, account: Account, window: Window, billed: set[str]
) -> list[Finding]:
    """Billed predictions in the window whose job recorded a per-image price below imagen's
    table for its model (none recorded counts as $0): spend counted short, whatever the
    config said (a caller cannot price its own predictions down)."""
    found: list[Finding] = []
    for pid in sorted(billed):
        known = book.predictions[pid]
        job = book.jobs.get(known.job_id)
        if job is None or known.account != account or not window.holds(place(known, window.offset)):
            continue
        table = money.to_decimal(price_for(job.model))
        if table is None:
            continue  # a model imagen has no rate for: nothing to hold it to
        recorded = money.to_decimal(job.price_usd)
        if recorded is not None and recorded >= table:
            continue
        found.append(
            {
                "kind": "price_below_table",
                "remote_id": pid,
                "job_id": known.job_id,
                "model": job.model,
                "recorded_usd": money.usd(job.price_usd),
                "table_usd": money.usd(table),
                "message": f"job {known.job_id} (prediction {pid}, {job.model}) recorded "
                f"${money.usd(job.price_usd) or 'none'} an image, below imagen's price table "
                f"(${money.usd(table)})",
            }
        )
    return found


def _unknown(book: LedgerBook, p: dict[str, Any], account: Account, backends: str) -> Finding:
    """A listed prediction the ledger does not know: spent outside this ledger, unless a job's
    create that was never confirmed made it (its input, seed included, is echoed exactly)."""
    pid = p["id"]
    created = created_at(p)
    when = iso(created) if created is not None else "an unknown time"
    inp = p.get("input")
    for job_id, job in book.jobs.items():
        if job.account != account or not isinstance(inp, dict):
            continue
        if any(all(k in inp and inp[k] == v for k, v in sent.items()) for sent in job.inputs):
            if job.ended is None and job.accepted is None:
                return {
                    "kind": "provider_pending",
                    "remote_id": pid,
                    "job_id": job_id,
                    "message": f"prediction {pid} matches job {job_id}'s create, not yet "
                    f"confirmed (running, or `imagen resume {job_id}` adopts it)",
                }
            return {
                "kind": "provider_unknown",
                "remote_id": pid,
                "job_id": job_id,
                "created_at": created and iso(created),
                "status": p["status"],
                "message": f"prediction {pid} ({p['status']}, created {when}) is not in the "
                f"ledger's books: its input matches a create of job {job_id}, which did not "
                "adopt it (paid but not counted)",
            }
    model = p.get("model") if isinstance(p.get("model"), str) else "?"
    return {
        "kind": "provider_unknown",
        "remote_id": pid,
        "created_at": created and iso(created),
        "status": p["status"],
        "message": f"prediction {pid} ({model}, {p['status']}, created {when}) is unknown to "
        f"the ledger: spent outside it, or its record was lost ({backends})",
    }
