"""replicate.decide fed event histories directly: no sockets, no ledger, no clock.

Each test builds a job's recorded events (with the times the ledger would have given them) and
asserts the one action the adapter chooses, or drives the adapter with scripted answers until
it ends or stops. The money rules are the subject: lookup before re-creating, adopt only what
no other job holds, bounded creates, polls never fail a paid job, a succeeded prediction is
always fetched, the token only goes to the API's origin.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from imagen.backends import replicate
from imagen.core.actions import CheckHeld, Halt, HttpRequest, Record, StoreImage
from imagen.core.events import (
    CancelRequested,
    ForceNewRequested,
    ImageStored,
    JobCancelled,
    JobFailed,
    JobRequested,
    JobSucceeded,
    LookupConcluded,
    RemoteIdsHeld,
    RemoteJobAccepted,
    RetryScheduled,
)
from imagen.core.failures import Failure
from imagen.core.job import iso
from tests.support.history import T0, History

BASE = "https://api.replicate.com"
PID = "abcdefghijklmnopqrstuvwxyz"
INPUT = {"prompt": "a fox", "seed": 7, "aspect_ratio": "1:1", "output_format": "png"}


def prediction(pid: str = PID, status: str = "processing", **extra: Any) -> dict[str, Any]:
    p: dict[str, Any] = {
        "id": pid,
        "status": status,
        "input": dict(INPUT),
        "created_at": iso(T0),
        "output": None,
        "urls": {"get": f"{BASE}/v1/predictions/{pid}"},
    }
    if status == "succeeded":
        p["output"] = [f"https://replicate.delivery/xezq/{pid}/out-0.png"]
    p.update(extra)
    return p


def new_job(**config: Any) -> History:
    """A flux-pro job on Replicate, claimed by a runner; `config` overrides backend options
    (and `timeout_s`, the job's timeout)."""
    params = {
        "seed": 7,
        "aspect_ratio": "1:1",
        "megapixels": None,
        "steps": None,
        "output_format": "png",
        "width": 1024,
        "height": 1024,
        "extra": {},
        "timeout_s": float(config.pop("timeout_s", 60)),
    }
    cfg = {"base_url": BASE, "retry_base_s": 1.0, "poll_interval_s": 0.5, **config}
    request = JobRequested(
        "rep", "replicate", "black-forest-labs/flux-pro", "a fox", params, cfg, "/o.png"
    )
    return History(replicate.decide, request)


def created_unknown(h: History) -> History:
    """The create left and its answer never came (reset after sending)."""
    action = h.step()
    assert isinstance(action, HttpRequest) and action.purpose == "create"
    return h.fail("create", "network", "Connection reset by peer")


def listing(*predictions: dict[str, Any], next_url: str | None = None) -> dict[str, Any]:
    return {"next": next_url, "previous": None, "results": list(predictions)}


def date_header(moment: datetime) -> dict[str, str]:
    return {"date": format_datetime(moment, usegmt=True)}


# -- the happy paths -----------------------------------------------------------------------------


def test_create_then_download_then_succeed() -> None:
    h = new_job()
    create = h.step()
    assert isinstance(create, HttpRequest) and create.purpose == "create"
    assert create.auth_env == "REPLICATE_API_TOKEN" and create.json_body["input"]["seed"] == 7
    h.answer("create", 201, prediction(status="succeeded"))
    assert isinstance(h.step(), Record)  # RemoteJobAccepted
    store = h.step()
    assert isinstance(store, StoreImage) and store.auth_env is None  # a CDN is not the API
    h.answer("download", 200, {"bytes": 3}).add(ImageStored("/o.png", "ab", 3, "png", 1, 1))
    done = h.decide()
    assert isinstance(done, Record) and isinstance(done.events[0], JobSucceeded)


# -- lookup, adopt, ambiguous, force-new -------------------------------------------------------


def test_unknown_create_is_looked_up_not_resent() -> None:
    h = created_unknown(new_job())
    lookup = h.decide()
    assert isinstance(lookup, HttpRequest) and lookup.purpose == "lookup"
    assert lookup.url == f"{BASE}/v1/predictions" and lookup.auth_env == "REPLICATE_API_TOKEN"


def test_lookup_adopts_the_one_match_no_other_job_holds() -> None:
    h = created_unknown(new_job())
    h.step()
    h.answer("lookup", 200, listing(prediction()), date_header(h.now))
    check = h.decide()
    assert check == CheckHeld((PID,))
    h.add(RemoteIdsHeld([PID], {}))
    adopt = h.decide()
    assert isinstance(adopt, Record)
    assert adopt.events == (LookupConcluded([PID], "adopt"), RemoteJobAccepted(PID, via="lookup"))


def test_lookup_never_adopts_a_prediction_another_job_holds() -> None:
    h = created_unknown(new_job())
    h.step()
    h.answer("lookup", 200, listing(prediction()), date_header(h.now))
    h.step()  # CheckHeld
    h.add(RemoteIdsHeld([PID], {PID: "otherjob"}))
    decided = h.decide()
    assert decided == Record((LookupConcluded([], "create"),))


def test_other_inputs_do_not_match() -> None:
    h = created_unknown(new_job())
    h.step()
    other = prediction("zzzzzzzzzzzzzzzzzzzzzzzzzz", input={**INPUT, "seed": 8})
    h.answer("lookup", 200, listing(other), date_header(h.now))
    assert h.decide() == Record((LookupConcluded([], "create"),))


def test_matches_with_this_jobs_input_are_interchangeable_first_free_id_adopted() -> None:
    h = created_unknown(new_job())
    h.step()
    second = prediction("bbbbbbbbbbbbbbbbbbbbbbbbbb")
    h.answer("lookup", 200, listing(second, prediction()), date_header(h.now))
    h.step()
    h.add(RemoteIdsHeld([second["id"], PID], {}))
    chosen = min(PID, second["id"])
    assert h.decide() == Record(
        (LookupConcluded([second["id"], PID], "adopt"), RemoteJobAccepted(chosen, via="lookup"))
    )


def test_of_interchangeable_matches_one_another_job_holds_is_skipped() -> None:
    h = created_unknown(new_job())
    h.step()
    second = prediction("bbbbbbbbbbbbbbbbbbbbbbbbbb")
    h.answer("lookup", 200, listing(prediction(), second), date_header(h.now))
    h.step()
    first = min(PID, second["id"])
    other = max(PID, second["id"])
    h.add(RemoteIdsHeld([PID, second["id"]], {first: "otherjob"}))
    assert h.decide() == Record(
        (LookupConcluded([other], "adopt"), RemoteJobAccepted(other, via="lookup"))
    )


def test_force_new_creates_once_beyond_the_evidence() -> None:
    h = created_unknown(new_job())
    h.step()
    h.answer("lookup", 500, {"detail": "down"})
    for _ in range(2):  # every answer that is not a listing counts; the third halts
        h.step()  # RetryScheduled
        h.step()  # the lookup again
        h.answer("lookup", 500, {"detail": "down"})
    assert isinstance(h.decide(), Halt)
    h.resume().add(ForceNewRequested("--force-new"))
    create = h.decide()
    assert isinstance(create, HttpRequest) and create.purpose == "create"


def test_no_match_creates_again_after_a_backoff() -> None:
    h = created_unknown(new_job())
    h.step()
    h.answer("lookup", 200, listing(), date_header(h.now))
    h.step()  # LookupConcluded create
    again = h.decide()
    assert isinstance(again, HttpRequest) and again.purpose == "create"
    assert again.not_before is not None


# -- lookups independent of our clock ----------------------------------------------------------


@pytest.mark.parametrize("skew_s", [-400, -4000, 0, 400, 86400])
def test_lookup_window_is_on_replicates_clock(skew_s: int) -> None:
    """Replicate's clock is `skew_s` off ours: the prediction it made at our create is found,
    and one made before the job (same input, created long before) is not a candidate."""
    h = created_unknown(new_job())
    server_now = h.now + timedelta(seconds=skew_s)
    ours = prediction(created_at=iso(server_now - timedelta(seconds=1)))
    older = prediction(
        "oooooooooooooooooooooooooo", created_at=iso(server_now - timedelta(hours=3))
    )
    h.step()
    h.answer("lookup", 200, listing(ours, older), date_header(server_now))
    assert h.decide() == CheckHeld((PID,))


def test_lookup_follows_pages_until_older_than_the_window() -> None:
    h = created_unknown(new_job())
    server_now = h.now - timedelta(seconds=400)
    h.wait(120)  # the lookup comes two minutes after the create (a resume, say)
    h.step()
    recent = prediction(
        "rrrrrrrrrrrrrrrrrrrrrrrrrr", input={"prompt": "other"}, created_at=iso(server_now)
    )
    h.answer(
        "lookup",
        200,
        listing(recent, next_url=f"{BASE}/v1/predictions?cursor=abc"),
        date_header(server_now + timedelta(seconds=120)),
    )
    page2 = h.decide()
    assert isinstance(page2, HttpRequest) and page2.url.endswith("cursor=abc")
    assert page2.auth_env == "REPLICATE_API_TOKEN"


def test_lookup_stops_paging_past_the_window() -> None:
    h = created_unknown(new_job())
    h.step()
    old = prediction(
        "oooooooooooooooooooooooooo", input={"prompt": "x"}, created_at=iso(T0 - timedelta(hours=1))
    )
    h.answer(
        "lookup",
        200,
        listing(old, next_url=f"{BASE}/v1/predictions?cursor=abc"),
        date_header(h.now),
    )
    assert h.decide() == Record((LookupConcluded([], "create"),))


def test_a_next_link_to_another_origin_is_refused_and_recorded() -> None:
    for evil in (
        "https://api.replicate.com.evil.tld/v1/predictions?cursor=x",
        "https://api.replicate.com@evil.tld/v1/predictions?cursor=x",
        "http://api.replicate.com/v1/predictions?cursor=x",
        "https://api.replicate.com:8443/v1/predictions?cursor=x",
    ):
        h = created_unknown(new_job())
        h.step()
        recent = prediction("rrrrrrrrrrrrrrrrrrrrrrrrrr", input={"prompt": "other"})
        h.answer("lookup", 200, listing(recent, next_url=evil), date_header(h.now))
        assert h.step() == Record((LookupConcluded([], "refused"),)), evil
        halt = h.decide()
        assert isinstance(halt, Halt) and "another origin" in halt.message


def test_resume_after_a_refused_next_looks_up_again() -> None:
    h = created_unknown(new_job())
    h.step()
    h.answer("lookup", 200, listing(next_url="https://evil.tld/x"), date_header(h.now))
    h.step()
    h.resume()
    lookup = h.decide()
    assert isinstance(lookup, HttpRequest) and lookup.url == f"{BASE}/v1/predictions"


# -- bounded creates -----------------------------------------------------------------------------


def test_creates_are_bounded_across_resumes() -> None:
    h = new_job()
    posts = 0
    for _round in range(10):
        action = h.step()
        if isinstance(action, Halt) or (
            isinstance(action, Record) and isinstance(action.events[-1], JobFailed)
        ):
            break
        if isinstance(action, HttpRequest) and action.purpose == "create":
            posts += 1
            h.fail("create", "network", "reset")
            h.resume()  # and a resume after every attempt
        elif isinstance(action, HttpRequest) and action.purpose == "lookup":
            h.answer("lookup", 200, listing(), date_header(h.now))
    assert posts == replicate.MAX_UNCERTAIN_CREATES
    end = h.records[-1].event
    assert isinstance(end, JobFailed) and "nothing was paid" in end.message


def test_a_refused_connection_is_retried_once_then_fails() -> None:
    h = new_job()
    h.step()
    h.fail("create", "refused", "Connection refused")
    assert isinstance(h.step(), Record)  # RetryScheduled
    h.step()
    h.fail("create", "refused", "Connection refused")
    end = h.step()
    assert isinstance(end, Record) and isinstance(end.events[0], JobFailed)
    assert end.events[0].reason == "unreachable"


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_5xx_create_is_looked_up_first(status: int) -> None:
    h = new_job()
    h.step()
    h.answer("create", status, "<html>bad gateway</html>", {"content-type": "text/html"})
    lookup = h.decide()
    assert isinstance(lookup, HttpRequest) and lookup.purpose == "lookup"


def test_200_html_is_not_a_prediction_and_the_message_says_what_was_wrong() -> None:
    h = new_job()
    h.step()
    html = "<!DOCTYPE html><html><head><title>Login</title></head></html>"
    h.answer("create", 200, html, {"content-type": "text/html; charset=UTF-8"})
    for _ in range(3):
        lookup = h.step()
        assert isinstance(lookup, HttpRequest) and lookup.purpose == "lookup"
        h.answer("lookup", 200, html, {"content-type": "text/html; charset=UTF-8"})
        h.step()  # RetryScheduled, then the final Halt
    halt = h.decide()
    assert isinstance(halt, Halt)
    assert "HTTP 200: HTTP 200" not in halt.message
    assert "text/html" in halt.message and "not JSON" in halt.message


# -- retry policies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({"retry-after": "3"}, {"detail": "x"}, 3.0),
        ({}, {"detail": "x", "retry_after": 5}, 5.0),
        ({}, {"detail": "Your rate limit resets in ~7s."}, 7.0),
        ({}, {"detail": "x"}, 1.0),  # backoff: retry_base_s * 2**0
        ({"retry-after": "86400"}, {}, replicate.MAX_RETRY_AFTER_S),
        # A NaN is not JSON: the runner records such a reply as its text (runner/http.py).
        ({"retry-after": "-5"}, '{"retry_after": NaN}', 1.0),
        ({}, {"retry_after": True}, 1.0),
    ],
)
def test_429_retry_after_is_honoured_and_capped(
    headers: dict[str, str], body: Any, expected: float
) -> None:
    h = new_job(timeout_s=600)
    h.step()
    h.answer("create", 429, body, headers)
    retry = h.decide()
    assert isinstance(retry, Record) and isinstance(retry.events[0], RetryScheduled)
    assert retry.events[0].delay_s == expected


def test_429_asking_past_the_deadline_stops() -> None:
    h = new_job(timeout_s=30)
    h.step()
    h.answer("create", 429, {"detail": "x"}, {"retry-after": "86400"})
    end = h.decide()
    assert isinstance(end, Record) and isinstance(end.events[0], JobFailed)
    assert "past the job's 30 s timeout" in end.events[0].message


def test_429_three_retries_then_fails() -> None:
    h = new_job(timeout_s=600)
    for _ in range(3):
        h.step()
        h.answer("create", 429, {"detail": "x"}, {"retry-after": "0"})
        assert isinstance(h.step(), Record)
    h.step()
    h.answer("create", 429, {"detail": "x"}, {"retry-after": "0"})
    end = h.decide()
    assert isinstance(end, Record) and isinstance(end.events[0], JobFailed)


@pytest.mark.parametrize(
    ("status", "reason", "category"),
    [
        (401, "unauthorized", Failure.UNAUTHORIZED),
        (402, "out_of_credit", Failure.OUT_OF_CREDIT),
        (422, "invalid_input", Failure.INVALID_INPUT),
        (404, "not_found", Failure.NOT_FOUND),
    ],
)
def test_4xx_create_fails_without_lookup(status: int, reason: str, category: Failure) -> None:
    h = new_job()
    h.step()
    h.answer("create", status, {"detail": "no"})
    end = h.decide()
    assert isinstance(end, Record) and isinstance(end.events[0], JobFailed)
    assert (end.events[0].reason, end.events[0].category) == (reason, category)


def accepted(h: History, status: str = "processing") -> History:
    h.step()
    h.answer("create", 201, prediction(status=status))
    h.step()
    return h


@pytest.mark.parametrize("fault", ["network", 500, 502, 503, 429, "html"])
def test_poll_failures_never_fail_a_paid_job(fault: Any) -> None:
    h = accepted(new_job(timeout_s=60))
    for _ in range(6):
        poll = h.step()
        assert isinstance(poll, HttpRequest) and poll.purpose == "poll", poll
        if fault == "network":
            h.fail("poll")
        elif fault == "html":
            h.answer("poll", 200, "<html></html>", {"content-type": "text/html"})
        else:
            h.answer("poll", fault, {"detail": "busy"})
        retry = h.step()
        assert isinstance(retry, Record) and isinstance(retry.events[0], RetryScheduled), retry
        assert retry.events[0].delay_s <= replicate.MAX_BACKOFF_S
    h.step()
    h.answer("poll", 200, prediction(status="succeeded"))
    assert isinstance(h.decide(), StoreImage)


def test_poll_failures_past_the_deadline_leave_the_job_resumable() -> None:
    h = accepted(new_job(timeout_s=10))
    h.wait(20)
    actions = []
    for _ in range(10):
        action = h.step()
        actions.append(action)
        if isinstance(action, Halt):
            break
        if isinstance(action, HttpRequest):
            h.fail("poll")
    halt = actions[-1]
    assert isinstance(halt, Halt) and "imagen resume job1" in halt.message
    assert not any(isinstance(r.event, JobFailed | JobCancelled) for r in h.records)
    h.resume()
    poll = h.decide()
    assert isinstance(poll, HttpRequest) and poll.purpose == "poll" and poll.not_before is None


def test_poll_429_asking_past_the_deadline_stops_resumable() -> None:
    h = accepted(new_job(timeout_s=10))
    h.step()
    h.answer("poll", 429, {"detail": "slow down"}, {"retry-after": "86400"})
    action = h.decide()
    assert isinstance(action, Halt) and "imagen resume job1" in action.message


def test_poll_401_halts_with_the_fix_and_resume_polls_first() -> None:
    h = accepted(new_job())
    h.step()
    h.answer("poll", 401, {"detail": "bad token"})
    halt = h.decide()
    assert isinstance(halt, Halt) and "REPLICATE_API_TOKEN" in halt.message
    h.resume()
    assert isinstance(h.decide(), HttpRequest)


# -- succeeded means fetched; cancel; timeout --------------------------------------------------


def test_late_resume_polls_before_any_deadline_check() -> None:
    h = accepted(new_job(timeout_s=10))
    h.wait(3600).resume()
    poll = h.step()
    assert isinstance(poll, HttpRequest) and poll.purpose == "poll"
    h.answer("poll", 200, prediction(status="succeeded"))
    assert isinstance(h.decide(), StoreImage)


def test_late_resume_of_a_running_prediction_cancels_after_looking() -> None:
    h = accepted(new_job(timeout_s=10))
    h.wait(3600).resume()
    h.step()
    h.answer("poll", 200, prediction(status="processing"))
    assert h.step() == Record((CancelRequested("timeout"),))
    cancel = h.step()
    assert isinstance(cancel, HttpRequest) and cancel.purpose == "cancel"


def test_a_cancel_reply_saying_succeeded_is_downloaded() -> None:
    h = accepted(new_job(timeout_s=10))
    h.add(CancelRequested("timeout"))
    h.step()
    h.answer("cancel", 200, prediction(status="succeeded"))
    assert isinstance(h.decide(), StoreImage)


def test_a_cancel_reply_saying_canceled_ends_cancelled() -> None:
    h = accepted(new_job(timeout_s=10))
    h.add(CancelRequested("timeout"))
    h.step()
    h.answer("cancel", 200, prediction(status="canceled"))
    assert h.decide() == Record((JobCancelled("timeout", remote_cancelled=True),))


def test_timeout_cancel_that_cannot_reach_replicate_stays_resumable() -> None:
    h = accepted(new_job(timeout_s=10))
    h.add(CancelRequested("timeout"))
    for _ in range(2):
        h.step()
        h.fail("cancel")
        action = h.step()
    assert isinstance(action, Halt)


def test_ctrl_c_on_a_finished_prediction_is_not_a_cancel() -> None:
    """The prediction finished (paid): Ctrl-C during its download does not cancel it; the
    download goes on and the job ends succeeded with its cost counted."""
    h = accepted(new_job(), status="succeeded")
    store = h.step()
    assert isinstance(store, StoreImage)  # Ctrl-C lands during the download
    h.add(CancelRequested("user"))
    again = h.decide()
    assert isinstance(again, StoreImage)
    h.send(again)
    h.answer("download", 200, {"bytes": 3}).add(ImageStored("/o.png", "ab", 3, "png", 1, 1))
    done = h.decide()
    assert isinstance(done, Record) and isinstance(done.events[0], JobSucceeded)


def test_a_cancel_reply_saying_succeeded_after_ctrl_c_is_downloaded() -> None:
    h = accepted(new_job())
    h.add(CancelRequested("user"))
    h.step()
    h.answer("cancel", 200, prediction(status="succeeded"))
    assert isinstance(h.decide(), StoreImage)


def test_ctrl_c_while_running_cancels() -> None:
    h = accepted(new_job())
    h.add(CancelRequested("user"))
    cancel = h.step()
    assert isinstance(cancel, HttpRequest) and cancel.purpose == "cancel"
    h.answer("cancel", 200, prediction(status="canceled"))
    assert h.decide() == Record((JobCancelled("user", remote_cancelled=True),))


def test_timeout_while_polling_cancels() -> None:
    h = accepted(new_job(timeout_s=1))
    h.step()
    h.wait(1).answer("poll", 200, prediction(status="processing"))  # a second after the create
    assert h.decide() == Record((CancelRequested("timeout"),))


def test_the_deadline_counts_from_the_first_create() -> None:
    """Resumed long after it was requested, with nothing created: the whole timeout remains."""
    h = new_job(timeout_s=10)
    h.wait(3600).resume()
    create = h.step()
    assert isinstance(create, HttpRequest) and create.purpose == "create"
    h.answer("create", 201, prediction(status="processing"))
    h.step()
    poll = h.decide()
    assert isinstance(poll, HttpRequest) and poll.purpose == "poll"


# -- downloads: credentials, local failures -----------------------------------------------------


@pytest.mark.parametrize(
    ("url", "auth"),
    [
        (f"{BASE}/files/x/out-0.png", True),
        ("https://API.Replicate.com:443/files/out-0.png", True),
        ("https://api.replicate.com.evil.tld/out-0.png", False),
        ("https://api.replicate.com@evil.tld/out-0.png", False),
        ("https://evil.tld/?https://api.replicate.com", False),
        ("http://api.replicate.com/files/out-0.png", False),
        ("https://api.replicate.com:8443/files/out-0.png", False),
        ("https://replicate.delivery/xezq/out-0.png", False),
    ],
)
def test_token_only_to_the_apis_origin(url: str, auth: bool) -> None:
    h = accepted(new_job(), status="processing")
    h.step()
    h.answer("poll", 200, prediction(status="succeeded", output=[url]))
    store = h.decide()
    if "@" in url:
        assert isinstance(store, Record) and isinstance(store.events[0], JobFailed)
        return
    assert isinstance(store, StoreImage)
    assert (store.auth_env is not None) == auth


def test_userinfo_trick_with_a_local_base_url() -> None:
    h = accepted(new_job(base_url="http://127.0.0.1:8000"))
    h.step()
    evil = "http://127.0.0.1:8000@localhost:9000/x.png"
    h.answer("poll", 200, prediction(status="succeeded", output=[evil]))
    action = h.decide()
    assert not (isinstance(action, StoreImage) and action.auth_env)


@pytest.mark.parametrize("error", ["write", "exists"])
def test_a_local_failure_after_payment_halts_resumable(error: str) -> None:
    h = accepted(new_job(), status="succeeded")
    h.step()
    h.fail("download", error, "cannot write /o.png: Not a directory")
    halt = h.decide()
    assert isinstance(halt, Halt) and "imagen resume job1" in halt.message
    assert "paid" in halt.message
    h.resume()
    assert isinstance(h.decide(), StoreImage)


def test_download_network_failures_are_retried_then_resumable() -> None:
    h = accepted(new_job(), status="succeeded")
    for _ in range(replicate.RETRIES_PER_RUN + 1):
        h.step()
        h.fail("download", "timeout", "read timed out")
        action = h.step()
    assert isinstance(action, Halt)
    assert not any(isinstance(r.event, JobFailed) for r in h.records)


def test_deleted_output_fails_and_says_paid() -> None:
    h = accepted(new_job(), status="succeeded")
    h.step()
    h.answer("download", 404, "Not Found")
    end = h.decide()
    assert isinstance(end, Record) and isinstance(end.events[0], JobFailed)
    assert "paid" in end.events[0].message


def test_lease_renewal_is_not_a_new_run() -> None:
    h = accepted(new_job())
    h.step()
    h.answer("poll", 200, prediction(status="processing"))
    h.renew()
    poll = h.decide()
    assert isinstance(poll, HttpRequest) and poll.not_before is not None
