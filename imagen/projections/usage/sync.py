"""What the heads reported to Supabase say about this ledger, and whether its head may be
reported (pure: the shell in imagen/app/usage_sync.py reads both sides and acts).

The remote record (`mai.imagen_ledger_heads`) is append-only: one row per report of a ledger's
chain head (ledger id, machine, location, position, hash). A head may be reported only when
everything reported before about this ledger still holds locally; otherwise the report would
launder a rewritten history. See docs/architecture.md ("The off-machine anchor").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Reported:
    """One row of mai.imagen_ledger_heads."""

    ledger_id: str
    machine: str
    location: str | None
    position: int
    hash: str
    reported_at: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Reported | None:
        """None for a row that is not a head report (a hostile or broken server)."""
        try:
            position = row["position"]
            values = (row["ledger_id"], row["machine"], row["hash"])
            location = row.get("location")
        except (KeyError, TypeError, AttributeError):
            return None
        if isinstance(position, bool) or not isinstance(position, int) or position < 1:
            return None
        if not all(isinstance(v, str) for v in values) or not isinstance(location, str | None):
            return None
        return cls(*values[:2], location, position, values[2], str(row.get("reported_at") or "?"))


@dataclass(frozen=True)
class Here:
    """The local ledger being synced or audited."""

    ledger_id: str | None  # None: the ledger is empty
    machine: str
    location: str
    head_position: int
    head_hash: str


@dataclass(frozen=True)
class Finding:
    problem: str  # rewritten | removed | replaced | gone | unanchored
    message: str
    position: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": "remote",
            "problem": self.problem,
            "position": self.position,
            "message": self.message,
        }


def _short(h: str) -> str:
    return h[:16]


def head_findings(
    here: Here, reported: Sequence[Reported], local_hashes: Mapping[int, str]
) -> list[Finding]:
    """Every reported head of this ledger must be in the local chain: same position, same
    hash. `local_hashes` maps each reported position to the hash stored there (absent when
    the ledger is shorter)."""
    ours = sorted((r for r in reported if r.ledger_id == here.ledger_id), key=lambda r: r.position)
    findings: list[Finding] = []
    beyond = [r for r in ours if r.position > here.head_position]
    changed = [
        r
        for r in ours
        if r.position <= here.head_position and local_hashes.get(r.position) != r.hash
    ]
    if changed:
        first = changed[0]
        findings.append(
            Finding(
                "rewritten",
                f"history was rewritten: Supabase holds head {first.position} "
                f"{_short(first.hash)} of this ledger (reported {first.reported_at} by "
                f"{first.machine}), but the ledger has "
                f"{_short(local_hashes.get(first.position, '?'))} at that position"
                + (f"; {len(changed)} reported heads differ" if len(changed) > 1 else ""),
                first.position,
            )
        )
    if beyond:
        last = beyond[-1]
        findings.append(
            Finding(
                "removed",
                f"events were removed: Supabase holds head {last.position} {_short(last.hash)} "
                f"of this ledger (reported {last.reported_at} by {last.machine}), but the "
                f"ledger ends at position {here.head_position}",
                last.position,
            )
        )
    return findings


def place_findings(
    here: Here, elsewhere: Sequence[Reported], found_at: Mapping[str, str | None]
) -> list[Finding]:
    """Ledgers this machine reported before that are not this ledger: the one at this ledger's
    location must be this ledger (else it was replaced, or its identity rewritten); one at
    another location in `found_at` (the id found there, None if gone) must still be there."""
    latest: dict[tuple[str, str | None], Reported] = {}
    for r in elsewhere:
        if r.machine != here.machine or r.ledger_id == here.ledger_id:
            continue
        key = (r.ledger_id, r.location)
        if key not in latest or r.position > latest[key].position:
            latest[key] = r
    findings: list[Finding] = []
    for (lid, location), r in sorted(latest.items(), key=lambda kv: kv[1].position):
        if location is None:
            continue  # reported before locations were recorded: nothing to compare with
        was = (
            f"this machine reported ledger {lid} at {location} (head {r.position}, {r.reported_at})"
        )
        if location == here.location:
            now = (
                f"the ledger there now has id {here.ledger_id}"
                if here.ledger_id
                else "the ledger there is now empty"
            )
            findings.append(
                Finding(
                    "replaced",
                    f"{was}; {now}: it was replaced or its first event rewritten",
                    r.position,
                )
            )
        elif location in found_at:
            found = found_at[location]
            if found is None:
                findings.append(Finding("gone", f"{was}; it is gone", r.position))
            elif found != lid:
                findings.append(
                    Finding(
                        "replaced",
                        f"{was}; the ledger there now has id {found}: it was replaced or its "
                        "first event rewritten",
                        r.position,
                    )
                )
    return findings


def unanchored(here: Here, reported: Sequence[Reported]) -> list[Finding]:
    """A ledger with events and no reported head: nothing off this machine vouches for it."""
    if here.ledger_id is None or any(r.ledger_id == here.ledger_id for r in reported):
        return []
    return [
        Finding(
            "unanchored",
            f"no head of this ledger (id {here.ledger_id}) was ever reported to Supabase: "
            "nothing off this machine vouches for its history",
        )
    ]


def needs_report(here: Here, latest: Reported | None) -> bool:
    """Report only a head Supabase does not hold yet (after the checks above passed)."""
    if here.ledger_id is None:
        return False
    return latest is None or latest.position != here.head_position


def group(rows: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
    """Usage rows as `imagen usage` shows them (local, or remote through `from_remote`)
    grouped like the local `imagen usage` table: images, paid_failed,
    exact cost (a decimal string), mean latency of the images."""
    from decimal import Decimal

    from imagen.core.money import to_decimal, usd

    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        k = tuple(r.get(key) for key in keys)
        g = groups.setdefault(
            k,
            {
                **dict(zip(keys, k, strict=True)),
                "images": 0,
                "paid_failed": 0,
                "_cost": Decimal(0),
                "_lat": 0.0,
                "_n": 0,
            },
        )
        failed = r.get("outcome") == "paid_failed"
        g["paid_failed" if failed else "images"] += 1
        g["_cost"] += to_decimal(r.get("cost_usd")) or Decimal(0)
        if r.get("latency_ms") is not None and not failed:
            g["_lat"] += float(r["latency_ms"])
            g["_n"] += 1
    out = []
    for k in sorted(groups, key=lambda t: tuple(str(x) for x in t)):
        g = groups[k]
        g["cost_usd"] = usd(g.pop("_cost"))
        g["mean_latency_ms"] = g.pop("_lat") / g["_n"] if g["_n"] else None
        g.pop("_n")
        out.append(g)
    return out
