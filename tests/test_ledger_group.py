"""Group commit (ledger/group.py): appends from several threads share one transaction, and each
caller still meets exactly its own outcome. On SQLite and on PostgreSQL as its owner and as a
team ledger's writer role (see `store_url`).

A group is formed on purpose: the first append's guard holds the leader inside its transaction
until the others have queued behind it; they then commit together as the next group."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy.exc import DBAPIError

from ledger import ConcurrencyError, NewEvent, open_store
from ledger.group import GroupCommit
from ledger.store import EventStore
from tests.ledger_writer import Full


class Outcome:
    def __init__(self) -> None:
        self.result: Any = None
        self.error: BaseException | None = None


def _in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, Outcome]:
    out = Outcome()

    def run() -> None:
        try:
            out.result = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out.error = exc

    t = threading.Thread(target=run)
    t.start()
    return t, out


def _queued(group: GroupCommit, n: int) -> None:
    """Readiness check: `n` appends wait behind the leader."""
    assert group.wait_queued(n, 30), f"only {group.queued()} of {n} appends queued"


def _held_leader(group: GroupCommit) -> tuple[threading.Event, threading.Thread, Outcome]:
    """An append whose leader stays in its transaction until the returned event is set."""
    release, entered = threading.Event(), threading.Event()

    def hold(view: Any) -> None:
        entered.set()
        assert release.wait(30)

    t, out = _in_thread(lambda: group.append("leader", [NewEvent("Lead", {})], None, guard=hold))
    assert entered.wait(30)
    return release, t, out


def _group_of(
    store: EventStore, appends: list[Callable[[], Any]], group: GroupCommit | None = None
) -> list[Outcome]:
    """Run `appends` from threads as one group, behind a held leader (of the store's own group
    commit unless another is given)."""
    group = group or store._group
    assert group is not None
    release, leader, _ = _held_leader(group)
    before = group.groups + group.failed
    started = [_in_thread(fn) for fn in appends]
    _queued(group, len(appends))
    release.set()
    leader.join(30)
    for t, _ in started:
        t.join(30)
    # The leader's own group, then the followers' one: they were committed together.
    assert group.groups + group.failed == before + 2
    return [out for _, out in started]


def test_threads_appending_to_many_streams_lose_and_reorder_nothing(store_url: str) -> None:
    store = open_store(store_url)
    threads, streams, rounds = 12, 3, 15
    start = threading.Barrier(threads)

    def writer(w: int) -> None:
        start.wait(30)
        for r in range(rounds):
            for s in range(streams):
                store.append(f"w{w}-s{s}", [NewEvent("Tick", {"r": r})], r)
            # A stream shared by every thread, appended whatever it holds.
            store.append("shared", [NewEvent("Tick", {"w": w, "r": r})], None)

    started = [_in_thread(lambda w=w: writer(w)) for w in range(threads)]
    for t, out in started:
        t.join(120)
        assert out.error is None, out.error
    report = store.verify()
    assert report.ok, report
    assert report.checked == threads * rounds * (streams + 1)
    for w in range(threads):
        for s in range(streams):
            events = store.read_stream(f"w{w}-s{s}")
            assert [e.data["r"] for e in events] == list(range(rounds))
        mine = [e.data["r"] for e in store.read_stream("shared") if e.data["w"] == w]
        assert mine == list(range(rounds))
    # Several appends did share a transaction (otherwise this tested nothing new).
    group = store._group
    assert group is not None and group.grouped > group.groups
    if store.head_path is not None:
        assert store.read_head_file() == store.head()


def test_a_stale_version_in_a_group_refuses_that_append_alone(store_url: str) -> None:
    store = open_store(store_url)
    store.append("a", [NewEvent("A", {})], 0)
    outs = _group_of(
        store,
        [
            lambda: store.append("a", [NewEvent("Stale", {})], 0),
            lambda: store.append("a", [NewEvent("B", {})], 1),
            lambda: store.append("b", [NewEvent("B", {}), NewEvent("C", {})], 0),
        ],
    )
    stale, fresh, other = outs
    assert isinstance(stale.error, ConcurrencyError) and stale.error.expected == 0
    assert fresh.error is None and other.error is None
    # What a caller got back is what was committed: another store reads it.
    reader = open_store(store_url)
    assert [e.type for e in reader.read_stream("a")] == ["A", "B"]
    assert reader.read_stream("b") == other.result
    assert fresh.result == reader.read_stream("a", after_version=1)
    assert reader.verify().ok and reader.verify().checked == 5


def test_a_guard_refusing_in_a_group_refuses_its_own_append_only(store_url: str) -> None:
    store = open_store(store_url)
    ran: list[str] = []

    def refuse(view: Any) -> None:
        ran.append("refuse")
        raise Full("over the limit")

    def allow(view: Any) -> None:
        ran.append("allow")

    outs = _group_of(
        store,
        [
            lambda: store.append("x", [NewEvent("X", {})], 0, guard=refuse),
            lambda: store.append("y", [NewEvent("Y", {})], 0, guard=allow),
        ],
    )
    assert isinstance(outs[0].error, Full) and outs[1].error is None
    assert sorted(ran) == ["allow", "refuse"]  # each guard ran once, in the group
    assert store.read_stream("x") == [] and [e.type for e in store.read_stream("y")] == ["Y"]
    assert store.verify().ok


def test_a_database_error_in_a_group_sends_every_caller_back_alone(store_url: str) -> None:
    """A failed statement may leave the transaction unusable (PostgreSQL aborts it): the group
    is rolled back and each caller appends in its own transaction, meeting its own outcome."""
    store = open_store(store_url)

    def broken(view: Any) -> None:
        view.query("SELECT no_such_column FROM events")

    outs = _group_of(
        store,
        [
            lambda: store.append("p", [NewEvent("P", {})], 0),
            lambda: store.append("q", [NewEvent("Q", {})], 0, guard=broken),
            lambda: store.append("r", [NewEvent("R", {})], 0),
        ],
    )
    assert isinstance(outs[1].error, DBAPIError)
    assert outs[0].error is None and outs[2].error is None
    assert [e.type for e in store.read_stream("p")] == ["P"]
    assert store.read_stream("q") == [] and [e.type for e in store.read_stream("r")] == ["R"]
    report = store.verify()
    assert report.ok and report.checked == 3
    assert store._group is not None and store._group.failed == 1


class CommitThenFail:
    """The real store, whose transactions fail right after committing (as a connection lost
    while COMMIT's answer was on its way would): the callers cannot know what was recorded."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        with self.store.transaction() as conn:
            yield conn
        raise OSError("connection lost after COMMIT")

    def append(self, *args: Any, **kwargs: Any) -> Any:
        return self.store.append(*args, **kwargs)


def test_a_commit_that_fails_is_reported_to_every_caller_and_never_retried_blind(
    store_url: str,
) -> None:
    store = open_store(store_url)
    group = GroupCommit(CommitThenFail(store))
    outs = _group_of(
        store,
        [
            lambda: group.append("u", [NewEvent("U", {})], None),
            lambda: group.append("v", [NewEvent("V", {})], 0),
        ],
        group,
    )
    for out in outs:  # what each caller's own commit would have raised
        assert isinstance(out.error, OSError) and "after COMMIT" in str(out.error)
    # Committed once each: nobody appended again (an append without expected version would
    # otherwise be there twice).
    assert [e.type for e in store.read_stream("u")] == ["U"]
    assert [e.type for e in store.read_stream("v")] == ["V"]
    assert store.verify().ok


def test_more_appends_waiting_than_a_group_takes_are_each_committed(tmp_path: Any) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'l.db'}", group_commit=False)
    group = GroupCommit(store, max_group=2)
    release, leader, _ = _held_leader(group)
    started = [
        _in_thread(lambda k=k: group.append(f"s{k}", [NewEvent("E", {"k": k})], 0))
        for k in range(5)
    ]
    _queued(group, 5)
    release.set()
    leader.join(30)
    for t, out in started:
        t.join(30)
        assert out.error is None and len(out.result) == 1
    assert sorted(e.stream_id for e in store.read_all() if e.type == "E") == [
        f"s{k}" for k in range(5)
    ]
    assert group.groups >= 1 + 3  # the leader's, then groups of at most 2
    assert store.verify().ok


def test_without_group_commit_appends_take_their_own_transactions(tmp_path: Any) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'l.db'}", group_commit=False)
    assert store._group is None
    store.append("s", [NewEvent("A", {})], 0)
    with pytest.raises(ConcurrencyError):
        store.append("s", [NewEvent("B", {})], 0)
    assert store.verify().checked == 1
