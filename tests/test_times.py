"""Time as imagen writes and reads it (imagen/core/times.py): one machine form, local time for
people, `--since` ages, weeks and local dates. The clock and the zone are passed in."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imagen.core.inputs import BadInput, GenerateInputs
from imagen.core.times import file_stamp, human, iso, parse_iso, parse_moment, parse_since
from ledger import NewEvent, open_store
from ledger.store import format_timestamp
from tests.support.cli import Sandbox
from tests.support.inprocess import environment, prepared

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
NOW = datetime(2026, 11, 25, 23, 30, 5, 123456, tzinfo=UTC)


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(timezones=st.just(UTC)),
    st.sampled_from(["iso", "isoformat", "offset", "text"]),
    st.text(alphabet="0123456789-:.TZ+", max_size=30),
)
def test_a_recorded_times_iso_text_is_iso_of_its_time(
    moment: datetime, form: str, other: str
) -> None:
    """`Recorded.at_iso` skips formatting a time recorded in `iso`'s form, and agrees with
    `iso(at)` for any recorded text (raising where `at` raises)."""
    from imagen.core.job import UNREAD, DamagedRecord, Recorded

    text = {
        "iso": iso(moment),  # (a year below 1000 writes fewer digits: not a time parse reads)
        "isoformat": moment.isoformat(),
        "offset": moment.astimezone(BERLIN).isoformat() if moment.year > 1 else iso(moment),
        "text": other,
    }[form]
    rec = Recorded.stored("JobSucceeded", 1, UNREAD, "{}", 1, text, 1)
    try:
        want = iso(parse_iso(text))
    except (ValueError, TypeError, AttributeError, OverflowError):
        with pytest.raises(DamagedRecord):
            rec.at_iso  # noqa: B018
        return
    assert rec.at_iso == want


def test_one_machine_form_the_ledgers() -> None:
    for moment in (NOW, NOW.astimezone(BERLIN), datetime(2026, 7, 1, 0, 0, tzinfo=NEW_YORK)):
        assert iso(moment) == format_timestamp(moment)  # what the ledger records as recorded_at
        assert parse_iso(iso(moment)) == moment
    assert iso(NOW.astimezone(BERLIN)) == "2026-11-25T23:30:05.123456Z"
    assert parse_iso("2026-11-26T00:30:05.123456+01:00") == NOW
    with pytest.raises(ValueError, match="naive"):
        iso(datetime(2026, 11, 25))


def test_people_read_local_time_with_its_zone() -> None:
    assert human(NOW, BERLIN) == "2026-11-26 00:30:05"
    assert human(NOW, BERLIN, zone=True) == "2026-11-26 00:30:05 CET"
    assert human("2026-07-01T12:00:00.000000Z", BERLIN, zone=True) == "2026-07-01 14:00:00 CEST"
    assert human(NOW, NEW_YORK, zone=True) == "2026-11-25 18:30:05 EST"


def test_file_names_use_local_time() -> None:
    assert file_stamp(NOW, BERLIN) == "20261126-003005"
    assert file_stamp(NOW, UTC) == "20261125-233005"


@pytest.mark.parametrize(
    ("text", "tz", "expected"),
    [
        ("30m", BERLIN, NOW - timedelta(minutes=30)),
        ("24h", BERLIN, NOW - timedelta(hours=24)),
        ("7d", BERLIN, NOW - timedelta(days=7)),
        ("2w", BERLIN, NOW - timedelta(weeks=2)),
        # A plain date is local midnight, with the zone's offset on that day (DST included).
        ("2026-11-01", BERLIN, datetime(2026, 10, 31, 23, 0, tzinfo=UTC)),
        ("2026-07-01", BERLIN, datetime(2026, 6, 30, 22, 0, tzinfo=UTC)),
        ("2026-11-01", NEW_YORK, datetime(2026, 11, 1, 4, 0, tzinfo=UTC)),
        ("2026-11-01T12:00", BERLIN, datetime(2026, 11, 1, 11, 0, tzinfo=UTC)),
        ("2026-11-01 12:00", BERLIN, datetime(2026, 11, 1, 11, 0, tzinfo=UTC)),
        ("2026-11-01T12:00Z", BERLIN, datetime(2026, 11, 1, 12, 0, tzinfo=UTC)),
        ("2026-11-01T12:00+05:00", BERLIN, datetime(2026, 11, 1, 7, 0, tzinfo=UTC)),
    ],
)
def test_since_values(text: str, tz: ZoneInfo, expected: datetime) -> None:
    assert parse_moment(text, NOW, tz) == expected
    # Compared with stored times as text: the same machine form sorts the same way.
    assert parse_since(text, NOW, tz) == iso(expected)


@pytest.mark.parametrize("text", ["yesterday", "2x", "7", "-3d", "2026-13-01", "9999999d", ""])
def test_bad_since_values_name_the_forms(text: str) -> None:
    with pytest.raises(BadInput, match="2w"):
        parse_moment(text, NOW, BERLIN)


def test_default_output_name_is_in_local_time(tmp_path: Path) -> None:
    envt = environment()
    envt.clock = lambda: NOW
    envt.tz = ZoneInfo("Asia/Tokyo")
    job = prepared(tmp_path, "echo", {"url": "http://127.0.0.1:9"}, GenerateInputs("fox", 7), envt)
    assert Path(job.request.output_path).name.startswith("20261126-083005")


def test_a_terminal_listing_shows_local_time_with_its_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    from imagen.cli import context, render
    from imagen.cli.jobs import JOB_COLUMNS

    monkeypatch.setattr(context.session().env, "tz", ZoneInfo("Asia/Kolkata"))
    row = {
        **dict.fromkeys(("job_id", "status", "backend", "model", "prompt"), "x"),
        "cost_usd": 0.003,
    }
    out = io.StringIO()
    render.table([{**row, "created_at": iso(NOW)}], JOB_COLUMNS, out=out, isatty=True)
    assert "2026-11-26 05:00:05 IST" in out.getvalue()
    out = io.StringIO()
    render.table([{**row, "created_at": iso(NOW)}], JOB_COLUMNS, out=out, isatty=False)
    assert iso(NOW) in out.getvalue()  # piped: the machine form


def test_listings_show_local_time_and_since_takes_weeks(tmp_path: Path) -> None:
    """`imagen jobs` under an explicit TZ: times are local with the zone; JSON keeps the one
    machine form; --since 2w and a local date select by the right instant."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    now = datetime.now(UTC)
    clock = {"t": now - timedelta(days=20)}
    store = open_store(url, clock=lambda: clock["t"])
    for job, age in (("a" * 32, timedelta(days=20)), ("b" * 32, timedelta(days=3))):
        clock["t"] = now - age
        request = {
            "backend": "b",
            "backend_type": "echo",
            "model": "m",
            "prompt": job[0],
            "params": {},
            "backend_config": {},
            "output_path": "/tmp/x.png",
        }
        store.append(job, [NewEvent("JobRequested", request)], 0)
    store.close()
    box = Sandbox(tmp_path, ledger_url=url, env={"TZ": "Asia/Kolkata", "COLUMNS": "200"})
    box.write_config("")

    listed = box.run("jobs", "--since", "2w", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["prompt"] for r in rows] == ["b"]
    assert rows[0]["created_at"] == iso(now - timedelta(days=3))

    older = box.run("jobs", "--since", "3w", "--json")
    assert [r["prompt"] for r in json.loads(older.stdout)] == ["b", "a"]

    local_day = (now - timedelta(days=20)).astimezone(ZoneInfo("Asia/Kolkata")).date()
    by_date = box.run("jobs", "--since", (local_day + timedelta(days=1)).isoformat(), "--json")
    assert [r["prompt"] for r in json.loads(by_date.stdout)] == ["b"]

    bad = box.run("jobs", "--since", "last week")
    assert bad.returncode == 2 and "2w" in bad.stderr and "Traceback" not in bad.stderr
