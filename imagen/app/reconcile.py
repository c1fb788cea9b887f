"""`imagen audit --provider`: the ledger's books against Replicate's list of predictions.

For each Replicate account the config names (API origin + token env var; backends sharing
both are listed once), page through `GET /v1/predictions` (newest first, 100 a page, the
`next` URL as cursor) back to the window's start, then compare with the ledger
(projections/reconcile.py).

The audit is read-only: it appends nothing to the ledger. It spends nothing, has nothing to
resume, must run with a read-only ledger role and must not move the chain head it has just
verified; so its requests, throttling and retries are reported (stderr notes and the report's
`retries`), not recorded as events. Every retry is still bounded and visible.

Credentials go only to the configured API's origin: a `next` link elsewhere is refused (the
listing is then incomplete and no prediction is called missing), as the lookup does.

The whole listing has one time limit (`max_time_s`, every request and every wait counted): a
server that throttles page after page ends the audit with the list not read whole (exit 3),
not after hours. A wait that would pass the limit is not started.

The window is measured on Replicate's clock (its Date header). When that clock is off ours by
more than SKEW_NOTE_S the header may be the one that is wrong (a proxy, a host with a bad
clock): the window then starts at the earlier of the two readings of `since`, so a prediction
is never left out because of a clock nobody can check.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from imagen.app.config import Config
from imagen.app.errors import UserError
from imagen.backends.replicate.lookup import LOOKUP_MARGIN_S
from imagen.backends.replicate.wire import (
    MAX_RETRY_AFTER_S,
    PREDICTION_ID,
    created_at,
    http_date,
    retry_after,
    same_origin,
)
from imagen.core.events import ResponseReceived
from imagen.core.times import iso
from imagen.projections.reconcile import Account, LedgerBook, Window, account_of, compare
from imagen.runner.environment import Environment

MAX_PAGES = 500  # 50,000 predictions in one window: beyond that, a later --since
MAX_THROTTLED = 6  # 429 answers for one page before giving up
MAX_FAILURES = 3  # network failures or 5xx answers for one page before giving up
TIMEOUT_S = 30.0
SKEW_NOTE_S = 60.0  # a larger offset between the clocks is worth a note, and widens the window
MAX_TIME_S = 300.0  # the whole listing, every account, waits included (--max-time)


@dataclass
class Listing:
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    pages: int = 0
    complete: bool = False  # the listing reached its end or the window's start
    error: str | None = None
    offset: timedelta = timedelta(0)  # Replicate's clock minus ours (Date header of page 1)
    dated: bool = False  # page 1 carried a usable Date header
    retries: list[dict[str, Any]] = field(default_factory=list)
    pause_s: float = 0.0  # to wait before the next page (the rate limit's window is spent)

    @property
    def skewed(self) -> bool:
        """Replicate's Date header is too far from our clock to be taken on trust."""
        return self.dated and abs(self.offset.total_seconds()) > SKEW_NOTE_S


@dataclass(frozen=True)
class Deadline:
    """The listing's time limit, on the environment's clock."""

    env: Environment
    at: datetime
    limit_s: float

    def left(self) -> float:
        return (self.at - self.env.clock()).total_seconds()

    def allows(self, delay: float) -> bool:
        return delay < self.left()

    def stop(self, out: Listing, names: str) -> None:
        out.error = (
            f"{names}: stopped at the time limit ({self.limit_s:g} s, --max-time) with "
            f"{out.pages} page(s) read: the list was not read whole"
        )


def window_start(since: datetime, offset: timedelta, skewed: bool) -> datetime:
    """Where the window starts on Replicate's clock: `since` moved by the measured offset; when
    the offset is too large to trust, the earlier of that and `since` itself (wider, never
    narrower: a wrong Date header must not hide a prediction)."""
    return since + (min(offset, timedelta(0)) if skewed else offset)


@dataclass
class ProviderReport:
    problems: list[dict[str, Any]]
    notes: list[dict[str, Any]]
    accounts: list[dict[str, Any]]

    @property
    def incomplete(self) -> bool:
        return any(a["error"] for a in self.accounts)


def accounts(config: Config) -> dict[Account, list[str]]:
    found: dict[Account, list[str]] = {}
    for name, backend in sorted(config.backends.items()):
        if backend.type == "replicate":
            found.setdefault(account_of(backend.options), []).append(name)
    return found


def audit_provider(
    store: Any,
    config: Config,
    env: Environment,
    *,
    since: datetime | None,
    head: int,
    http: Any = None,
    note: Callable[[str], None] = lambda _m: None,
    max_time_s: float = MAX_TIME_S,
) -> ProviderReport:
    """Compare every configured Replicate account's predictions (created at or after `since`,
    our clock; None: all) with the verified chain up to `head`, listing them all within
    `max_time_s`."""
    targets = accounts(config)
    if not targets:
        raise UserError(
            "no Replicate backend in the config: `imagen audit --provider` compares the "
            "ledger with Replicate's list of predictions"
        )
    if http is None:
        from imagen.runner.http import Http

        http = Http()
    book = LedgerBook()
    book.feed(_upto(store.read_all(0), head))
    billed = {pid for pid, k in book.predictions.items() if k.billed}
    listings: dict[Account, Listing] = {}
    deadline = Deadline(env, env.clock() + timedelta(seconds=max_time_s), max_time_s)
    for account, names in targets.items():
        listings[account] = _list(http, account, env, since, note, ", ".join(names), deadline)
    # Jobs that ran while the provider was listed may have made some of the listed predictions:
    # learn them (they are not looked for as missing: the verified chain did not hold them).
    book.feed(store.read_all(head))
    problems: list[dict[str, Any]] = []
    notes: list[dict[str, Any]] = []
    summaries: list[dict[str, Any]] = []
    for account, names in targets.items():
        listing = listings[account]
        window = Window(
            window_start(since, listing.offset, listing.skewed) if since is not None else None,
            listing.offset,
        )
        found, noted, in_window = compare(
            book,
            list(listing.results.values()),
            account,
            window,
            complete=listing.complete,
            billed_before=billed,
            backends=", ".join(names),
        )
        problems.extend(found)
        notes.extend(noted)
        if listing.skewed:
            widened = "" if since is None else "; the window is widened to cover both clocks"
            notes.append(
                {
                    "kind": "provider_clock",
                    "offset_s": round(listing.offset.total_seconds(), 3),
                    "message": f"the clocks are off: Replicate's Date header is "
                    f"{listing.offset.total_seconds():+.0f} s from this machine's clock"
                    f"{widened}",
                }
            )
        base = account[0]
        summaries.append(
            {
                "backends": names,
                "origin": None if base is None else f"{base[0]}://{base[1]}:{base[2]}",
                "token_env": account[1],
                "since": iso(window.since) if window.since is not None else None,
                "pages": listing.pages,
                "listed": in_window,
                "complete": listing.complete,
                "clock_offset_s": round(listing.offset.total_seconds(), 3),
                "retries": listing.retries,
                "error": listing.error,
            }
        )
    return ProviderReport(problems, notes, summaries)


def _upto(events: Any, head: int) -> Any:
    for e in events:
        if e.position > head:
            return
        yield e


def _list(
    http: Any,
    account: Account,
    env: Environment,
    since: datetime | None,
    note: Callable[[str], None],
    names: str,
    deadline: Deadline,
) -> Listing:
    out = Listing()
    base_origin, token_env = account
    if base_origin is None:
        out.error = f"{names}: base_url is not an http(s) URL"
        return out
    scheme, host, port = base_origin
    base = f"{scheme}://{host}:{port}"
    token = env.env.get(token_env, "")
    if not token:
        out.error = f"{names}: {token_env} is not set, so Replicate's list cannot be read"
        return out
    url: str | None = f"{base}/v1/predictions"
    visited: set[str] = set()
    stop_at: datetime | None = None
    while url is not None:
        if out.pages >= MAX_PAGES:
            out.error = (
                f"{names}: more than {MAX_PAGES} pages of predictions in the window; "
                "audit a shorter one (--since)"
            )
            return out
        visited.add(url)
        if out.pause_s:
            # Replicate said none are left in its window: wait for the reset, not a 429.
            delay, out.pause_s = out.pause_s, 0.0
            if not deadline.allows(delay):
                deadline.stop(out, names)
                return out
            out.retries.append({"page": out.pages + 1, "reason": "rate limit", "delay_s": delay})
            note(f"{names}: Replicate's rate limit is spent; waiting {delay:g} s")
            env.sleep(delay)
        fetched = _fetch(http, url, token, env, out, note, names, deadline)
        if fetched is None:
            return out
        sent_at, reply = fetched
        out.pages += 1
        body = reply.body()
        if out.pages == 1:
            server_now = http_date(reply.headers.get("date", ""))
            if server_now is not None:
                out.dated = True
                out.offset = server_now - sent_at
            if since is not None:
                start = window_start(since, out.offset, out.skewed)
                stop_at = start - timedelta(seconds=LOOKUP_MARGIN_S)
        page = _page(body)
        if page is None:
            out.error = f"{names}: page {out.pages} of the list is not a listing of predictions"
            return out
        results, nxt = page
        oldest: datetime | None = None
        for p in results:
            out.results.setdefault(p["id"], p)
            created = created_at(p)
            if created is not None and (oldest is None or created < oldest):
                oldest = created
        if nxt is None or (stop_at is not None and oldest is not None and oldest < stop_at):
            out.complete = True
            return out
        if not same_origin(nxt, base):
            out.error = (
                f"{names}: page {out.pages} links its next page to another origin, which "
                "imagen does not follow with the token"
            )
            return out
        if nxt in visited:
            out.error = f"{names}: page {out.pages} links back to a page already read"
            return out
        url = nxt
    return out


def _page(body: Any) -> tuple[list[dict[str, Any]], str | None] | None:
    """A listing's predictions (each with an id and a status) and its next link, or None when
    the page is anything else."""
    if not isinstance(body, dict) or not isinstance(body.get("results"), list):
        return None
    nxt = body.get("next")
    if nxt is not None and not (isinstance(nxt, str) and nxt):
        return None
    results = []
    for p in body["results"]:
        if not (
            isinstance(p, dict)
            and isinstance(p.get("id"), str)
            and PREDICTION_ID.match(p["id"])
            and isinstance(p.get("status"), str)
            and 0 < len(p["status"]) <= 40
        ):
            return None
        results.append(p)
    return results, nxt


def _fetch(
    http: Any,
    url: str,
    token: str,
    env: Environment,
    out: Listing,
    note: Callable[[str], None],
    names: str,
    deadline: Deadline,
) -> tuple[datetime, Any] | None:
    """One page, with bounded retries: 429 waits as Replicate asks (capped), a failure or 5xx
    backs off; each is reported. None (and `out.error`) when the page cannot be had, or the
    time limit would pass first."""
    from imagen.runner.http import TransportFailure

    throttled = failed = 0
    page = out.pages + 1
    while True:
        left = deadline.left()
        if left <= 0:
            deadline.stop(out, names)
            return None
        sent_at = env.clock()
        try:
            reply = http.send(
                "GET",
                url,
                headers={"Authorization": f"Bearer {token}"},
                timeout_s=min(TIMEOUT_S, left),
            )
        except TransportFailure as failure:
            if deadline.left() <= 0:
                deadline.stop(out, names)
                return None
            reply, why = None, f"{failure.kind}"
        else:
            why = f"HTTP {reply.status}"
            if reply.status == 200:
                out.pause_s = _pause(reply)
                return sent_at, reply
            if reply.status == 401:
                out.error = f"{names}: Replicate rejected the token (HTTP 401)"
                return None
        if reply is not None and reply.status == 429:
            throttled += 1
            if throttled > MAX_THROTTLED:
                out.error = f"{names}: page {page} still throttled after {MAX_THROTTLED} waits"
                return None
            seen = ResponseReceived("audit", "list", 429, reply.headers, reply.body())
            delay = retry_after(seen, throttled - 1, 1.0)
        elif reply is None or reply.status >= 500:
            failed += 1
            if failed > MAX_FAILURES:
                out.error = f"{names}: page {page} could not be read ({why})"
                return None
            delay = min(0.5 * 2 ** (failed - 1), MAX_RETRY_AFTER_S)
        else:
            out.error = f"{names}: page {page} was refused ({why})"
            return None
        if not deadline.allows(delay):
            deadline.stop(out, names)
            return None
        out.retries.append({"page": page, "reason": why, "delay_s": delay})
        note(f"{names}: page {page} of Replicate's list: {why}; retrying in {delay:g} s")
        env.sleep(delay)


def _pause(reply: Any) -> float:
    """Replicate says how many requests are left in its window (`ratelimit-remaining`) and when
    it resets (`ratelimit-reset`, seconds): with none left, the wait before the next (capped)."""
    if reply.headers.get("ratelimit-remaining", "").strip() != "0":
        return 0.0
    try:
        delay = float(reply.headers.get("ratelimit-reset", "").strip())
    except ValueError:
        delay = 1.0
    if not math.isfinite(delay) or delay < 0:
        delay = 1.0
    return min(delay, MAX_RETRY_AFTER_S)
