"""A process that appends to a ledger, for the multi-process tests (imported by spawn)."""

from __future__ import annotations

from multiprocessing.synchronize import Event

from ledger import NewEvent, open_store


def append_many(url: str, stream_id: str, count: int, start: Event) -> None:
    store = open_store(url)
    start.wait(30)
    for version in range(count):
        store.append(stream_id, [NewEvent("Tick", {"n": version})], expected_version=version)
    store.close()


class Full(Exception):
    pass


def _at_most(limit: int):  # type: ignore[no-untyped-def]
    def guard(view) -> None:  # type: ignore[no-untyped-def]
        (taken,) = view.query("SELECT count(*) FROM events WHERE type = 'Take'")[0]
        if taken >= limit:
            raise Full(taken)

    return guard


def take_guarded(url: str, stream_id: str, tries: int, limit: int, start: Event) -> None:
    """Append `Take` events while fewer than `limit` exist in the whole ledger (the check and
    the append are one guarded step): however the processes interleave, exactly `limit`."""
    store = open_store(url)
    start.wait(30)
    for _ in range(tries):
        try:
            store.append(stream_id, [NewEvent("Take", {})], None, guard=_at_most(limit))
        except Full:
            pass
    store.close()
