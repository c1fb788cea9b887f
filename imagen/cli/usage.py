"""`imagen usage [...]` and `imagen usage sync`."""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired, TypedDict

from cyclopts import App, Parameter

from imagen.app.contract import CallerBudget, Moment, Money
from imagen.app.errors import UserError
from imagen.cli import context, render

usage_app = App(
    name="usage", help="Images, cost and latency by backend, model, caller or day; sync."
)

Group = Literal["backend", "model", "caller", "day"]


class UsageRow(TypedDict):
    """`usage --raw --json`: one row per image (and per paid-but-failed prediction)."""

    id: str
    created_at: Moment
    backend: str | None
    model: str | None
    seed: int | None
    prompt_hash: str | None
    latency_ms: int | None
    cost_usd: Money | None
    caller: str | None
    outcome: Literal["image", "paid_failed"]


class UsageGroup(TypedDict):
    """`usage --json`: one row per group (the --by keys present, the rest absent)."""

    backend: NotRequired[str | None]
    model: NotRequired[str | None]
    caller: NotRequired[str | None]
    day: NotRequired[str]
    images: int
    paid_failed: int
    cost_usd: Money
    mean_latency_ms: float | None
    budgets: NotRequired[list[CallerBudget]]  # with --by caller, when budgets are set


@usage_app.default
@render.outputs(list[UsageGroup] | list[UsageRow])
def usage(
    *,
    since: str | None = None,
    until: str | None = None,
    raw: bool = False,
    by: list[Group] | None = None,
    json_output: Annotated[bool, Parameter(name="--json")] = False,
    source: Literal["local", "remote"] = "local",
) -> None:
    """Images, cost and latency by backend, model, caller or day; sync.

    Grouped by backend and model unless --by says otherwise; `imagen usage sync` sends the
    rows to the team's Supabase table.
    In a terminal a totals row follows the table; piped, the output is the rows alone,
    tab-separated under a header row, values complete.

    Examples of use:
      imagen usage --since 7d
      imagen usage --by caller --by model
      imagen usage --by day --since 2026-11-01   # per local calendar day
      imagen usage --raw --json | jq -r '.[].cost_usd'
      imagen usage --source remote --since 2026-11-01   # the whole team's, from Supabase

    Parameters
    ----------
    since
        From this age (30m, 24h, 7d, 2w), local date (2026-11-01: from local midnight) or
        time (2026-11-01T12:00 local, or with Z or an offset).
    until
        Before this age, local date or time (as --since).
    raw
        One row per image, newest first.
    by
        Group by backend, model, caller and/or day (the local calendar day; repeatable).
    json_output
        Print a JSON array of rows.
    source
        local (this ledger's projection) or remote (the team's Supabase table).
    """
    from imagen.core.times import parse_since

    now, tz = context.session().env.clock(), context.session().env.tz
    since_t = parse_since(since, now, tz) if since else None
    until_t = parse_since(until, now, tz, "--until") if until else None
    keys = list(dict.fromkeys(by or ["backend", "model"]))
    if source == "remote":
        from imagen.app.usage_sync import fetch
        from imagen.projections.usage.fold import from_remote
        from imagen.projections.usage.sync import group

        fetched = fetch(
            context.session().config(), context.session().env, since=since_t, until=until_t
        )
        rows = [from_remote(r) for r in fetched]
        if raw:
            data = rows
        elif "day" in keys:
            from imagen.projections.usage.query import grouped_by_day

            data = grouped_by_day(rows, keys, tz)
        else:
            data = group(rows, keys)
    else:
        from imagen.cli.eventbar import catch_up_bar
        from imagen.projections.usage import query as usage_query

        reader = context.session().usage_reader(catch_up_bar("catching up usage", json_output))
        if raw:
            data = usage_query.rows(reader, since=since_t, until=until_t)
        elif "day" in keys:
            rows = usage_query.rows(reader, since=since_t, until=until_t)
            data = usage_query.grouped_by_day(rows, keys, tz)
        else:
            data = usage_query.grouped(reader, keys, since=since_t, until=until_t)
    standing = None if raw else _budget_summary(keys, data, json_output)
    if json_output:
        render.print_json([_raw_json(r) for r in data] if raw else data)
        return
    _table(data, raw, keys)
    if standing and "caller" not in keys and context.session().env.stdout_isatty:
        from imagen.cli.budget import print_usage_summary

        print_usage_summary(standing)


def _budget_summary(keys: list[str], data: list[dict], as_json: bool) -> dict | None:
    """Spend against budgets (this ledger's): per caller row with --by caller, else after the
    table in a terminal."""
    from imagen.cli.budget import usage_summary

    standing = usage_summary(context.session().reader())
    if standing and "caller" in keys:
        from imagen.app.budgets import describe

        for row in data:
            entries = standing.get(row.get("caller") or "", [])
            row["budgets"] = entries if as_json else describe(entries)
    return standing


def _raw_json(row: dict) -> UsageRow:
    """A usage row in the JSON contract: the seed an integer (the tables keep it as text, as
    0..2^64-1 fits no SQL integer) and the time in the one Z form (a remote row's too)."""
    from imagen.app.contract import seed_integer
    from imagen.core.times import iso, parse_iso

    at = row.get("created_at")
    try:
        created = iso(parse_iso(str(at))) if at else at
    except ValueError:
        created = at
    return {**row, "seed": seed_integer(row.get("seed")), "created_at": created}  # type: ignore[typeddict-item]


RAW_COLUMNS = [
    "created_at",
    "backend",
    "model",
    "outcome",
    "seed",
    "latency_ms",
    "cost_usd",
    "caller",
]


def _table(data: list[dict], raw: bool, keys: list[str]) -> None:
    from imagen.core.money import total

    if raw:
        render.table(
            data,
            [render.Column(c, tty=_local if c == "created_at" else _fmt) for c in RAW_COLUMNS],
        )
        return
    total_images = sum(r["images"] for r in data)
    total_failed = sum(r.get("paid_failed", 0) for r in data)
    weighted = sum((r["mean_latency_ms"] or 0) * r["images"] for r in data)
    mean = weighted / total_images if total_images else None
    columns = [
        *(render.Column(k) for k in keys),
        render.Column("images", align=">"),
        render.Column("paid_failed", align=">"),
        render.Column("cost_usd", tty=lambda v: v or "0.000000", align=">"),
        render.Column("mean_latency_ms", tty=_fmt, align=">"),
    ]
    if data and "budgets" in data[0]:  # --by caller with budgets set: spent of each
        columns.append(render.Column("budgets", shrink=True))
    footer = {
        keys[0]: "total",
        "images": total_images,
        "paid_failed": total_failed,
        "cost_usd": total([r["cost_usd"] for r in data]),
        "mean_latency_ms": _fmt(mean),
    }
    render.table(data, columns, footer=footer)


def _local(value: object) -> str:
    """A stored time as people here read it: local, with the zone's name."""
    from imagen.core.times import human

    try:
        return human(str(value), context.session().env.tz, zone=True)
    except ValueError:
        return _fmt(value)


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}" if value > 10 else f"{value:.3f}"
    return str(value)


@usage_app.command
@render.outputs(dict[str, Any])  # app/usage_sync.py SyncResult, as it grows
def sync(*, json_output: Annotated[bool, Parameter(name="--json")] = False) -> int:
    """Send usage rows not yet confirmed by Supabase, then report the ledger's chain head,
    unless a head reported before no longer holds (exit 4, no head reported).

    Examples of use:
      imagen usage sync
      imagen usage sync --json

    Parameters
    ----------
    json_output
        Print one JSON object {sent, batches, pending, head_position, ...}.
    """
    from imagen.app.usage_sync import sync as sync_usage

    cfg = context.session().config()
    if not cfg.usage.supabase_url:
        raise UserError("no Supabase configured: set [usage] supabase_url or SUPABASE_URL")
    result = sync_usage(context.session().store(), cfg, context.session().env, timeout_s=30.0)
    if json_output:
        render.print_json(result.as_dict())
    else:
        head = "reported" if result.head_reported else "already reported"
        print(
            f"sent {result.sent} row(s) in {result.batches} batch(es); "
            f"{result.pending} pending; ledger head {result.head_position} {head}"
        )
    return 0
