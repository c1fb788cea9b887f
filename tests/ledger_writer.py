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
