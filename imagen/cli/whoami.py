"""`imagen whoami`: who this process generates as, and what it may still spend."""

from __future__ import annotations

from typing import Annotated, Literal, TypedDict

from imagen.app.contract import CallerBudget, Moment
from imagen.cli import context, render
from imagen.cli.params import Parameter


class GoverningBudget(CallerBudget):
    window_start: Moment | None
    window_end: Moment | None


class WhoAmIObject(TypedDict):
    """`whoami --json`."""

    caller: str
    source: Literal["env", "tmux", "default"]  # MAI_FROM_ID, the pane's @mai-name, the OS user
    budgets: list[GoverningBudget]  # empty: no budget governs this caller


SOURCES = {
    "env": "MAI_FROM_ID",
    "tmux": "the tmux pane's @mai-name",
    "default": "the OS user (set MAI_FROM_ID to name it)",
}


@render.outputs(WhoAmIObject)
def whoami(*, json_output: Annotated[bool, Parameter(name="--json")] = False) -> None:
    """Who this process generates as, and what it may still spend.

    The caller is MAI_FROM_ID, else the tmux pane's @mai-name, else the OS user: the name
    budgets and `imagen usage --by caller` use. Then every budget that governs it (its own,
    else the `*` default's) with what is spent and left in the current window, even when it
    has spent nothing yet.

    Examples of use:
      imagen whoami
      imagen whoami --json | jq -r .caller
      imagen whoami --json | jq '[.budgets[] | .left] | min'

    Parameters
    ----------
    json_output
        Print one JSON object {caller, source, budgets}.
    """
    from imagen.app.budgets import caller_budget, governing
    from imagen.app.caller import resolve_caller_source
    from imagen.core.times import iso

    session = context.session()
    caller, source = resolve_caller_source(session.env.env)
    now, tz = session.env.clock(), session.env.tz
    try:
        standing = governing(session.reader(), caller, now, tz)
    except context.NoLedgerYet:
        standing = []  # nothing recorded yet: no budget can govern anyone
    budgets: list[GoverningBudget] = [
        {
            **caller_budget(s),
            "window_start": Moment(iso(s.start)) if s.start else None,
            "window_end": Moment(iso(s.end)) if s.end else None,
        }
        for s in standing
    ]
    if json_output:
        shown: WhoAmIObject = {"caller": caller, "source": source, "budgets": budgets}  # type: ignore[typeddict-item]
        render.print_json(shown)
        return
    from imagen.cli.safe import printable

    # The caller comes from the environment or a tmux option: never raw to the terminal.
    print(f"{printable(caller)}\t(from {SOURCES[source]})")
    if not budgets:
        context.note("no budget governs this caller")
        return
    render.table(
        [
            {
                **b,
                "backend": b["backend"] or "*",
                "budget": "*" if b["default"] else caller,
            }
            for b in budgets
        ],
        [
            render.Column("budget"),
            render.Column("per"),
            render.Column("backend"),
            render.Column("amount", align=">"),
            render.Column("spent", align=">"),
            render.Column("left", align=">"),
        ],
    )
