"""`imagen usage [...]` and `imagen usage sync`."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from cyclopts import App, Parameter

from imagen.app.errors import UserError
from imagen.cli import context

usage_app = App(name="usage", help="Usage per backend, model and caller; sync to Supabase.")

Group = Literal["backend", "model", "caller"]


@usage_app.default
def usage(
    *,
    since: str | None = None,
    until: str | None = None,
    raw: bool = False,
    by: list[Group] | None = None,
    json_output: Annotated[bool, Parameter(name="--json")] = False,
    source: Literal["local", "remote"] = "local",
) -> None:
    """Images, total cost and mean latency, grouped (default by backend and model).

    Parameters
    ----------
    since
        From this date (2026-11-01), time, or age (7d, 24h).
    until
        Before this date, time, or age.
    raw
        One row per image, newest first.
    by
        Group by backend, model and/or caller (repeatable).
    json_output
        Print JSON.
    source
        local (this ledger's projection) or remote (the team's Supabase table).
    """
    from imagen.core.times import parse_moment, to_text

    now = context.ENV.clock()
    since_t = to_text(parse_moment(since, now)) if since else None
    until_t = to_text(parse_moment(until, now, "--until")) if until else None
    keys = list(dict.fromkeys(by or ["backend", "model"]))
    if source == "remote":
        from imagen.app.usage_sync import fetch
        from imagen.projections.usage.sync import group

        rows = fetch(context.config(), context.ENV, since=since_t, until=until_t)
        data = rows if raw else group(rows, keys)
    else:
        from imagen.projections.usage import query as usage_query

        reader = context.usage_reader()
        data = (
            usage_query.rows(reader, since=since_t, until=until_t)
            if raw
            else usage_query.grouped(reader, keys, since=since_t, until=until_t)
        )
    if json_output:
        print(json.dumps(data, default=str))
        return
    _table(data, raw, keys)


def _table(data: list[dict], raw: bool, keys: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_footer=not raw)
    if raw:
        cols = [
            "created_at",
            "backend",
            "model",
            "seed",
            "latency_ms",
            "cost_usd_estimate",
            "caller",
        ]
        for c in cols:
            table.add_column(c)
        for r in data:
            table.add_row(*[_fmt(r.get(c)) for c in cols])
    else:
        total_images = sum(r["images"] for r in data)
        total_cost = sum(r["cost_usd"] or 0 for r in data)
        weighted = sum((r["mean_latency_ms"] or 0) * r["images"] for r in data)
        mean = weighted / total_images if total_images else None
        for i, k in enumerate(keys):
            table.add_column(k, footer="total" if i == 0 else "")
        table.add_column("images", footer=str(total_images), justify="right")
        table.add_column("cost_usd", footer=f"{total_cost:.3f}", justify="right")
        table.add_column("mean_latency_ms", footer=_fmt(mean), justify="right")
        for r in data:
            table.add_row(
                *[_fmt(r[k]) for k in keys],
                str(r["images"]),
                f"{r['cost_usd'] or 0:.3f}",
                _fmt(r["mean_latency_ms"]),
            )
    Console().print(table)


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}" if value > 10 else f"{value:.3f}"
    return str(value)


@usage_app.command
def sync(*, json_output: Annotated[bool, Parameter(name="--json")] = False) -> int:
    """Send usage rows not yet confirmed by Supabase, then report the ledger's chain head,
    unless a head reported before no longer holds (exit 4, no head reported).

    Parameters
    ----------
    json_output
        Print JSON.
    """
    from imagen.app.usage_sync import sync as sync_usage

    cfg = context.config()
    if not cfg.usage.supabase_url:
        raise UserError("no Supabase configured: set [usage] supabase_url or SUPABASE_URL")
    result = sync_usage(context.store(), cfg, context.ENV, timeout_s=30.0)
    if json_output:
        print(json.dumps(result.as_dict()))
    else:
        head = "reported" if result.head_reported else "already reported"
        print(
            f"sent {result.sent} row(s) in {result.batches} batch(es); "
            f"{result.pending} pending; ledger head {result.head_position} {head}"
        )
    return 0
