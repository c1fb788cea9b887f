"""`imagen budget set|list|remove`."""

from __future__ import annotations

from typing import Annotated, Literal

from cyclopts import App, Parameter

from imagen.app.contract import BudgetObject
from imagen.app.errors import UserError
from imagen.app.exit_codes import ExitCode
from imagen.cli import context, render

budget_app = App(
    name="budget", help="Cap what each caller may spend per day, week, month or in total."
)

Per = Literal["day", "week", "month", "total"]


def _who() -> str:
    from imagen.app.caller import resolve_caller

    return resolve_caller(context.session().env.env)


def _check_backend(backend: str | None) -> None:
    if backend is None:
        return
    names = sorted(context.session().config().backends)
    if backend not in names:
        raise UserError(
            f"--backend {backend!r}: no such backend in the config (have: {', '.join(names)})",
            ExitCode.BAD_INPUT,
        )


@budget_app.command(name="set")
def set_(
    caller: str,
    amount: str,
    /,
    *,
    per: Per,
    backend: str | None = None,
) -> None:
    """Set a caller's budget (replacing the one with the same caller, period and backend).

    A paid request that would take the caller past a budget is not sent: the job is recorded
    as failed and `generate` exits 9. What counts: the price of every job still under way, and
    what `imagen usage` counts as billed for ended ones. Windows follow the calendar of this
    zone (TZ, else the system's), recorded with the budget: a day from midnight, a week from
    Monday 00:00, a month from the 1st; total never resets. A later TZ changes nothing.

    Examples of use:
      imagen budget set agent-7 2.50 --per day
      imagen budget set '*' 1 --per day          # every caller without a budget of its own
      imagen budget set alice 20 --per month --backend flux-dev-replicate

    Parameters
    ----------
    caller
        Who (as `imagen usage --by caller` names them: MAI_FROM_ID, the tmux pane's @mai-name,
        else the OS user), or * for the default of every caller without a budget of its own.
    amount
        US dollars, a plain decimal: 5, 0.25 (at most 6 decimal places).
    per
        The window: day, week (Monday to Sunday), month or total.
    backend
        Only requests to this backend count and are capped; default: every backend.
    """
    from imagen.app import budgets
    from imagen.core.budgets import BadBudget

    _check_backend(backend)
    env = context.session().env
    zone = budgets.zone_name(env.tz, env.clock())
    try:
        b = budgets.set_budget(
            context.session().store(), caller, amount, per, backend, _who(), zone
        )
    except (BadBudget, budgets.NotOwner) as exc:
        raise UserError(str(exc), ExitCode.BAD_INPUT) from None
    context.note(f"budget set: {b.describe()} ${budgets.dollars(b.amount_micros)}")


@budget_app.command
def remove(
    caller: str,
    /,
    *,
    per: Per | None = None,
    backend: str | None = None,
) -> None:
    """Remove a caller's budgets (all of them, or those matching --per and --backend).

    Examples of use:
      imagen budget remove agent-7
      imagen budget remove '*' --per week

    Parameters
    ----------
    caller
        Whose budgets (* for the default).
    per
        Only the budget for this window.
    backend
        Only the budget limited to this backend.
    """
    from imagen.app import budgets

    try:
        gone = budgets.remove_budgets(context.session().store(), caller, per, backend, _who())
    except (budgets.NoSuchBudget, budgets.NotOwner) as exc:
        raise UserError(str(exc), ExitCode.BAD_INPUT) from None
    for b in gone:
        context.note(f"budget removed: {b.describe()}")


@budget_app.command(name="list")
@render.outputs(list[BudgetObject])
def list_(*, json_output: Annotated[bool, Parameter(name="--json")] = False) -> None:
    """Every budget with what is spent and left in its current window.

    The default (*) is shown once per caller it governs that has spent anything.

    Examples of use:
      imagen budget list
      imagen budget list --json | jq -r '.[] | ., .callers[]? | select(.left == "0.000000") | .caller'

    Parameters
    ----------
    json_output
        Print a JSON array: caller, per, backend, amount, window_start, window_end, spent,
        left, set_by, set_at, zone (money as decimal strings; the default's spent and left are per
        caller, in `callers`).
    """
    from imagen.app import budgets

    now, tz = context.session().env.clock(), context.session().env.tz
    found = budgets.standings(context.session().store(), now, tz)
    if json_output:
        render.print_json([budgets.budget_json(b, rows, now, tz) for b, rows in found])
        return
    lines = []
    for b, rows in found:
        base = {
            "caller": b.caller,
            "per": b.per.value,
            "backend": b.backend or "*",
            "amount": budgets.dollars(b.amount_micros),
        }
        window = _window(b, now, tz)
        if not rows:
            lines.append({**base, "spent": None, "left": None, "window": window})
        for s in rows:
            who = s.caller if b.caller != "*" else f"{s.caller} (*)"
            lines.append(
                {
                    **base,
                    "caller": who,
                    "spent": budgets.dollars(s.spent),
                    "left": budgets.dollars(s.left),
                    "window": window,
                }
            )
    if not lines:
        context.note("no budgets: `imagen budget set CALLER AMOUNT --per day` sets one")
        return
    render.table(
        lines,
        [
            render.Column("caller"),
            render.Column("per"),
            render.Column("backend"),
            render.Column("amount", align=">"),
            render.Column("spent", align=">"),
            render.Column("left", align=">"),
            render.Column("window"),
        ],
    )


def _window(b, now, tz) -> str:  # type: ignore[no-untyped-def]
    from imagen.app.budgets import window_end, window_start

    start, end = window_start(b, now, tz), window_end(b, now, tz)
    if start is None or end is None:
        return "all time"
    return f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M %Z}"


def usage_summary(reader: object) -> dict[str, list[dict[str, object]]] | None:
    """For `imagen usage`: each caller's standing against its budgets, None when the ledger
    holds no budget (then nothing is opened or caught up)."""
    from imagen.core.events import BUDGET_STREAM

    if not reader.read_stream(BUDGET_STREAM):  # type: ignore[attr-defined]
        return None
    from imagen.app import budgets  # ~6 ms of imports, only where budgets are set

    try:
        store = context.session().store()
    except UserError as exc:  # e.g. a ledger this process may only read: usage still prints
        context.warn(f"budgets not shown ({exc})")
        return None
    return budgets.by_caller(store, context.session().env.clock(), context.session().env.tz)


def print_usage_summary(summary: dict[str, list[dict[str, object]]]) -> None:
    """After `imagen usage`'s table, in a terminal: spend against budgets, per caller."""
    from imagen.app import budgets

    rows = [{"caller": c, "budgets": budgets.describe(e)} for c, e in sorted(summary.items())]
    if rows:
        print(file=context.session().env.stdout)
        render.table(rows, [render.Column("caller"), render.Column("budgets")])
