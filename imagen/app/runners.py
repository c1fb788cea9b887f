"""Runners as the application builds them: with the caller's budgets as their admission and
the jobs table answering who holds a remote id (runner/admission.py says why the runner is
handed these rather than reading them itself). Every Runner in imagen is made here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from imagen.projections.jobs import query as jobs_query

if TYPE_CHECKING:
    from imagen.runner.environment import Environment
    from imagen.runner.loop import Runner
    from ledger.projection import LockedView


class JobsTableHeldIds:
    """Who holds a remote id, from the jobs table (caught up first) and, under the write lock,
    from the table plus the events after its checkpoint."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def holders(self, remote_ids: list[str], *, except_job: str) -> dict[str, str]:
        from imagen.projections.jobs import table as jobs_table

        jobs_table.catch_up(self.store)
        return jobs_query.holders(self.store, remote_ids, except_job=except_job)

    def holder_under_lock(self, view: LockedView, remote_id: str, *, except_job: str) -> str | None:
        return jobs_query.holder_under_lock(view, remote_id, except_job=except_job)


def new_runner(store: Any, env: Environment, reporter: Any = None, **options: Any) -> Runner:
    """A Runner over `store` with budgets and the held-ids check wired; `options` are the
    Runner's own (http, streams, interrupt, gate, image_mode: give the config's
    `output.sidecar_mode`, so an image is as private as its sidecar)."""
    from imagen.app.budgets import Budgets
    from imagen.runner.loop import Runner

    return Runner(
        store,
        env,
        reporter,
        admission=Budgets(store, env.clock, env.tz),
        held=JobsTableHeldIds(store),
        **options,
    )
