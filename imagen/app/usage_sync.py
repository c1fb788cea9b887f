"""`imagen usage sync` and `imagen audit --remote`: the usage outbox and the off-machine anchor.

The local usage table is the outbox: rows after the `imagen.usage.synced` checkpoint are sent in
batches, and the checkpoint moves only once Supabase confirmed a batch. Then the ledger's chain
head is reported to `mai.imagen_ledger_heads`, but only if every head reported before still
holds (imagen/projections/usage/sync.py decides); otherwise no head is reported and the sync
fails with the audit code. Usage rows are sent either way: they are facts about spend, and
holding them back would hide money spent without protecting the anchor.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from imagen.app.config import Config, ledger_url
from imagen.app.errors import UserError
from imagen.app.exit_codes import ExitCode
from imagen.app.remote import Remote, SyncError
from imagen.projections.usage import sync as anchor
from imagen.projections.usage import table as usage_local
from imagen.projections.usage.fold import COLUMNS, to_remote
from imagen.runner.environment import Environment

if TYPE_CHECKING:
    from ledger import EventStore

BATCH = 500


class AnchorRefused(UserError):
    """The head was not reported: what Supabase holds about this ledger no longer holds."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ExitCode.AUDIT_FAILED)


@dataclass(frozen=True)
class SyncResult:
    sent: int
    batches: int
    pending: int
    head_position: int
    head_reported: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def location(url: str) -> str:
    """Where the ledger lives on this machine, without credentials: a SQLite file's absolute
    path, or a PostgreSQL server and database."""
    if url.startswith("sqlite:///"):
        return str(Path(url.removeprefix("sqlite:///")).expanduser().resolve())
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme.split('+')[0]}://{host}{port}{parts.path}"


def here(store: EventStore, cfg: Config, env: Environment) -> anchor.Here:
    head = store.head()
    return anchor.Here(
        store.identity(), env.host, location(ledger_url(cfg)), head.position, head.hash
    )


def _parse(rows: list[dict[str, Any]]) -> list[anchor.Reported]:
    parsed = [anchor.Reported.from_row(r) for r in rows]
    if any(p is None for p in parsed):
        raise SyncError("Supabase returned a malformed row from mai.imagen_ledger_heads")
    return [p for p in parsed if p is not None]


def sync(
    store: EventStore, cfg: Config, env: Environment, *, timeout_s: float = 10.0
) -> SyncResult:
    usage_local.catch_up(store)
    remote = Remote(cfg, env, timeout_s)
    sent = batches = 0
    while True:
        rows = usage_local.unsynced(store, BATCH)
        if not rows:
            break
        remote.send_usage([to_remote(r) for r in rows])
        store.set_checkpoint(usage_local.SYNCED, rows[-1]["seq"])
        sent += len(rows)
        batches += 1
    me = here(store, cfg, env)
    latest = _parse(remote.heads_of(me.ledger_id, latest_only=True)) if me.ledger_id else []
    same_place = _parse(remote.heads_of_other_ledgers(me.machine, me.ledger_id, me.location))
    local = store.hashes_at([r.position for r in latest])
    findings = anchor.head_findings(me, latest, local) + anchor.place_findings(me, same_place, {})
    if findings:
        more = f" (and {len(findings) - 1} more)" if len(findings) > 1 else ""
        raise AnchorRefused(
            f"sent {sent} usage row(s) but reported no ledger head: {findings[0].message}{more}; "
            "see `imagen audit --remote`"
        )
    reported = anchor.needs_report(me, latest[0] if latest else None)
    if reported:
        remote.report_head(
            {
                "ledger_id": me.ledger_id,
                "machine": me.machine,
                "location": me.location,
                "position": me.head_position,
                "hash": me.head_hash,
            }
        )
    pending = len(usage_local.unsynced(store, 10**9))
    return SyncResult(sent, batches, pending, me.head_position, reported)


def _found_at(locations: set[str]) -> dict[str, str | None]:
    """The id of the SQLite ledger at each path (None if gone); other kinds are not checked."""
    from ledger import open_reader

    found: dict[str, str | None] = {}
    for place in locations:
        if not place.startswith("/"):
            continue
        path = Path(place)
        if not path.exists():
            found[place] = None
            continue
        reader = open_reader(f"sqlite:///{path}")
        if reader is not None:  # an older schema: left for `imagen audit` there
            found[place] = reader.identity()
            reader.close()
    return found


def audit_remote(store: EventStore, cfg: Config, env: Environment) -> list[dict[str, Any]]:
    """Findings about this ledger against everything reported to Supabase: every reported
    head of it, and every ledger this machine reported before."""
    remote = Remote(cfg, env, 10.0)
    me = here(store, cfg, env)
    ours = _parse(remote.heads_of(me.ledger_id)) if me.ledger_id else []
    others = _parse(remote.heads_of_other_ledgers(me.machine, me.ledger_id))
    local = store.hashes_at([r.position for r in ours])
    found = _found_at({r.location for r in others if r.location and r.location != me.location})
    findings = (
        anchor.head_findings(me, ours, local)
        + anchor.place_findings(me, others, found)
        + anchor.unanchored(me, ours)
    )
    return [f.as_dict() for f in findings]


def fetch(
    cfg: Config, env: Environment, *, since: str | None, until: str | None
) -> list[dict[str, Any]]:
    """Every remote usage row in range."""
    return Remote(cfg, env, 30.0).usage_rows(",".join(COLUMNS), since, until)
