"""Every projection kept in the ledger's database, caught up in one pass (issue #29).

The jobs, usage and spend tables follow the ledger from their own checkpoints. A catch-up reads
each batch of events once (`ledger.projection.catch_up_all`) and feeds every projection that is
behind; the folds share what they derive from the batch (imagen/projections/feed.py), so each
event is read, json-decoded and decoded into its event once, whichever tables need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from imagen.projections import spend
from imagen.projections.jobs import table as jobs_table
from imagen.projections.usage import table as usage_table
from ledger.projection import catch_up_all

if TYPE_CHECKING:
    from ledger import EventStore

PROJECTIONS = (jobs_table.PROJECTION, usage_table.PROJECTION, spend.PROJECTION)


def catch_up(store: EventStore, *, batch: int = 20000) -> dict[str, int]:
    """Every projection up to the ledger's head; the events applied per checkpoint name."""
    return catch_up_all(store, PROJECTIONS, batch=batch)
