"""The Replicate double over real sockets: urllib3 and the official `replicate` client."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import replicate
import urllib3
from PIL import Image

from imagen.testing.replicate import ASPECT_SIZES, REPLICATE_VERSIONS, ReplicateDouble
from tests.support.doubles import TOKEN, replicate_double

SCHNELL = "black-forest-labs/flux-schnell"
DEV = "black-forest-labs/flux-dev"
SCHNELL_CREATE = f"/v1/models/{SCHNELL}/predictions"


class FakeClock:
    """An injectable clock the test moves by hand (timezone-aware UTC)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Api:
    """A tiny urllib3 client: no retries, so every fault reaches the test."""

    def __init__(self, rep: ReplicateDouble, token: str = TOKEN) -> None:
        self.rep = rep
        self.http = urllib3.PoolManager(retries=False)
        self.auth = {"Authorization": f"Bearer {token}"}

    def request(
        self, method: str, path: str, body: Any = None, **headers: str
    ) -> urllib3.BaseHTTPResponse:
        url = path if path.startswith("http") else self.rep.url + path
        hdrs = {**self.auth, **{k.replace("_", "-"): v for k, v in headers.items()}}
        return self.http.request(method, url, json=body, headers=hdrs, timeout=10)

    def create(self, inp: dict[str, Any], model: str = SCHNELL, **headers: str) -> dict[str, Any]:
        r = self.request("POST", f"/v1/models/{model}/predictions", {"input": inp}, **headers)
        assert r.status == 201, r.data
        return json.loads(r.data)

    def get(self, pid: str) -> dict[str, Any]:
        r = self.request("GET", f"/v1/predictions/{pid}")
        assert r.status == 200, r.data
        return json.loads(r.data)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake(clock: FakeClock) -> Iterator[ReplicateDouble]:
    with replicate_double(token={TOKEN, "other"}, clock=clock) as double:
        yield double


def _json(r: urllib3.BaseHTTPResponse) -> Any:
    return json.loads(r.data)


# ------------------------------------------------------------------------------ auth, create


def test_auth_401_problem_body_and_accepted_schemes(fake: ReplicateDouble) -> None:
    api = Api(fake)
    for auth in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        r = urllib3.request("GET", fake.url + "/v1/predictions", headers=auth)
        assert r.status == 401
        assert r.headers["Content-Type"] == "application/problem+json"
        assert _json(r) == {
            "title": "Unauthenticated",
            "detail": "You did not pass a valid authentication token",
            "status": 401,
        }
    assert api.request("GET", "/v1/predictions", Authorization=f"Token {TOKEN}").status == 200
    assert Api(fake, "other").request("GET", "/v1/predictions").status == 200
    assert fake.billed == 0


def test_create_via_model_endpoint(rep: ReplicateDouble) -> None:
    api = Api(rep)
    r = api.request("POST", SCHNELL_CREATE, {"input": {"prompt": "a cat", "seed": 3}})
    assert r.status == 201
    p = _json(r)
    assert r.headers["Location"] == f"{rep.url}/v1/predictions/{p['id']}"
    assert r.headers["Content-Type"] == "application/json; charset=UTF-8"
    assert int(r.headers["ratelimit-remaining"]) < 600 and int(r.headers["ratelimit-reset"]) >= 1
    assert "Preference-Applied" not in r.headers
    assert len(p["id"]) == 26 and p["id"].isalnum() and p["id"] == p["id"].lower()
    assert p["status"] == "starting" and p["output"] is None and p["logs"] == ""
    assert p["version"] == "hidden" and p["model"] == SCHNELL and p["source"] == "api"
    assert p["input"] == {"prompt": "a cat", "seed": 3} and p["data_removed"] is False
    assert p["created_at"].endswith("Z")
    assert p["urls"] == {
        "get": f"{rep.url}/v1/predictions/{p['id']}",
        "cancel": f"{rep.url}/v1/predictions/{p['id']}/cancel",
        "web": f"https://replicate.com/p/{p['id']}",
    }
    assert rep.billed == 1 and rep.predictions[p["id"]]["status"] == "succeeded"
    assert ("POST", SCHNELL_CREATE) in rep.requests
    assert api.request("POST", "/v1/models/acme/nope/predictions", {"input": {}}).status == 404
    assert _json(api.request("GET", "/v1/predictions/nope")) == {
        "detail": "The requested resource could not be found.",
        "status": 404,
    }


def test_create_via_version_endpoint(rep: ReplicateDouble) -> None:
    api = Api(rep)
    hexid = REPLICATE_VERSIONS[DEV]
    for version in (hexid, f"{DEV}:{hexid}"):
        r = api.request("POST", "/v1/predictions", {"version": version, "input": {"prompt": "x"}})
        assert r.status == 201
        assert _json(r)["version"] == hexid and _json(r)["model"] == DEV
    for bad in ("0" * 64, f"{SCHNELL}:{hexid}", 42):
        r = api.request("POST", "/v1/predictions", {"version": bad, "input": {"prompt": "x"}})
        assert r.status == 422
        assert _json(r)["title"] == "Invalid version or not permitted"
    assert rep.billed == 2


def test_prefer_wait_fast_succeeds_slow_returns_processing(rep: ReplicateDouble) -> None:
    api = Api(rep)
    # Held until the prediction ends (0.3 s), not for the whole wait (60 s): the bounds are a
    # floor the double's own sleep sets and a ceiling far below the wait, whatever the load.
    rep.behaviour(duration=0.3)
    t0 = time.monotonic()
    r = api.request("POST", SCHNELL_CREATE, {"input": {"prompt": "fast"}}, Prefer="wait=60")
    assert 0.25 <= time.monotonic() - t0 < 30
    p = _json(r)
    assert r.headers["Preference-Applied"] == "wait=60"
    assert p["status"] == "succeeded" and len(p["output"]) == 1
    assert p["metrics"]["total_time"] == pytest.approx(0.3, abs=0.01)
    assert p["metrics"]["predict_time"] == pytest.approx(0.27, abs=0.01)
    # Held for the wait (4 s), then answered processing: the double's first 10 % (3 s) are
    # `starting`, and the prediction ends 26 s after the wait does (a machine would have to
    # stall that long for it to have ended).
    rep.behaviour(duration=30)
    t0 = time.monotonic()
    r = api.request("POST", SCHNELL_CREATE, {"input": {"prompt": "slow"}}, Prefer="wait=4")
    assert time.monotonic() - t0 >= 3.9
    p = _json(r)
    assert p["status"] == "processing" and p["output"] is None and "completed_at" not in p
    assert "Using seed: " in p["logs"]
    rep.behaviour()
    r = api.request("POST", SCHNELL_CREATE, {"input": {"prompt": "bare"}}, Prefer="wait")
    assert r.headers["Preference-Applied"] == "wait" and _json(r)["status"] == "succeeded"


def test_polling_life_cycle(rep: ReplicateDouble) -> None:
    api = Api(rep)
    rep.behaviour(polls=2)
    p = api.create({"prompt": "poll", "seed": 7})
    assert p["status"] == "starting" and "started_at" not in p
    p = api.get(p["id"])
    assert p["status"] == "processing" and p["started_at"].endswith("Z")
    assert p["logs"].startswith("Using seed: 7\n") and p["output"] is None
    p = api.get(p["id"])
    assert p["status"] == "succeeded" and p["completed_at"].endswith("Z")
    assert set(p["metrics"]) == {"predict_time", "total_time"}
    assert p["output"] == [f"{rep.url}/files/{p['id']}/out-0.webp"]
    assert api.get(p["id"]) == p  # terminal: further polls change nothing


def test_failures_and_nsfw(rep: ReplicateDouble) -> None:
    api = Api(rep)
    rep.behaviour(fail_with="CUDA out of memory")
    p = api.get(api.create({"prompt": "x"})["id"])
    assert p["status"] == "failed" and p["error"] == "CUDA out of memory" and p["output"] is None
    rep.behaviour(nsfw=True)
    p = api.get(api.create({"prompt": "x", "num_outputs": 2})["id"])
    assert p["status"] == "failed" and "NSFW" in p["error"]
    rep.behaviour(nsfw=1)
    p = api.get(api.create({"prompt": "x", "num_outputs": 2})["id"])
    assert p["status"] == "succeeded" and [u.rsplit("/", 1)[1] for u in p["output"]] == [
        "out-1.webp"
    ]


def test_random_seed_is_logged(rep: ReplicateDouble) -> None:
    api = Api(rep)
    p = api.get(api.create({"prompt": "no seed"})["id"])
    assert "seed" not in p["input"]
    assert 0 <= int(p["logs"].split("Using seed: ")[1].split("\n")[0]) < 65536


# ------------------------------------------------------------------------------ validation


def test_422_invalid_fields(rep: ReplicateDouble) -> None:
    api = Api(rep)
    r = api.request("POST", SCHNELL_CREATE, {"input": {"prompt": "x", "num_inference_steps": 5}})
    assert r.status == 422 and r.headers["Content-Type"] == "application/problem+json"
    assert _json(r) == {
        "title": "Input validation failed",
        "detail": "- input.num_inference_steps: Must be less than or equal to 4\n",
        "status": 422,
        "invalid_fields": [
            {
                "type": "number_lte",
                "field": "input.num_inference_steps",
                "description": "Must be less than or equal to 4",
            }
        ],
    }
    bad = {"aspect_ratio": "7:5", "output_format": "gif", "megapixels": "2", "colour": "red"}
    fields = _json(api.request("POST", SCHNELL_CREATE, {"input": bad}))["invalid_fields"]
    assert sorted((f["type"], f["field"]) for f in fields) == [
        ("additional_property_not_allowed", "input"),
        ("enum", "input.aspect_ratio"),
        ("enum", "input.megapixels"),
        ("enum", "input.output_format"),
        ("required", "input"),
    ]
    r = api.request("POST", SCHNELL_CREATE, {"input": {"prompt": "x"}, "model": SCHNELL})
    assert r.status == 422
    assert (
        _json(r)["invalid_fields"][0]["description"] == "Additional property model is not allowed"
    )
    dev = f"/v1/models/{DEV}/predictions"
    assert (
        api.request("POST", dev, {"input": {"prompt": "x", "num_inference_steps": 50}}).status
        == 201
    )
    assert (
        api.request("POST", dev, {"input": {"prompt": "x", "num_inference_steps": 51}}).status
        == 422
    )
    assert rep.billed == 1


# ------------------------------------------------------------------------------ scripted faults


def test_429_with_retry_after_does_not_create(rep: ReplicateDouble) -> None:
    api = Api(rep)
    rep.fail_next("create", status=429, retry_after=7)
    r = api.request("POST", SCHNELL_CREATE, {"input": {"prompt": "x"}})
    assert r.status == 429 and r.headers["Retry-After"] == "7"
    assert _json(r) == {
        "detail": "Request was throttled. Your rate limit resets in ~7s.",
        "status": 429,
        "retry_after": 7,
    }
    assert rep.billed == 0 and not rep.predictions
    assert api.request("POST", SCHNELL_CREATE, {"input": {"prompt": "x"}}).status == 201
    rep.fail_next("cancel", status=500, body={"detail": "custom"})
    assert _json(api.request("POST", "/v1/predictions/x/cancel")) == {"detail": "custom"}
    rep.fail_next("create", status=402)
    assert (
        "insufficient credit" in _json(api.request("POST", SCHNELL_CREATE, {"input": {}}))["detail"]
    )
    assert rep.billed == 1


def test_5xx_html_and_json(rep: ReplicateDouble) -> None:
    api = Api(rep)
    pid = api.create({"prompt": "x"})["id"]
    rep.fail_next("get", status=502, html=True)
    rep.fail_next("get", status=503)
    r = api.request("GET", f"/v1/predictions/{pid}")
    assert r.status == 502 and r.headers["Content-Type"].startswith("text/html")
    assert b"<!DOCTYPE html>" in r.data and b"502" in r.data
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.data)
    r = api.request("GET", f"/v1/predictions/{pid}")
    assert r.status == 503 and _json(r)["status"] == 503
    assert api.request("GET", f"/v1/predictions/{pid}").status == 200


def test_reset_next_is_a_connection_error(rep: ReplicateDouble) -> None:
    api = Api(rep)
    rep.reset_next("list")
    with pytest.raises(urllib3.exceptions.ProtocolError):
        api.request("GET", "/v1/predictions")
    assert api.request("GET", "/v1/predictions").status == 200
    assert rep.requests == [("GET", "/v1/predictions")] * 2


def test_reset_after_create_bills_and_is_found_by_listing(rep: ReplicateDouble) -> None:
    api = Api(rep)
    t0 = datetime.now(UTC) - timedelta(seconds=1)
    rep.reset_after_create()
    inp = {"prompt": "lost answer", "seed": 11}
    with pytest.raises(urllib3.exceptions.ProtocolError):
        api.request("POST", SCHNELL_CREATE, {"input": inp}, Prefer="wait=60")
    assert rep.billed == 1
    after = t0.isoformat().replace("+00:00", "Z")
    results = _json(api.request("GET", f"/v1/predictions?created_after={after}"))["results"]
    assert [p["input"] for p in results] == [inp]
    future = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()  # '+' decoded as ' ', repaired
    assert _json(api.request("GET", f"/v1/predictions?created_after={future}"))["results"] == []


def test_slow_next_and_wait_for_request(rep: ReplicateDouble) -> None:
    api = Api(rep)
    rep.slow_next("list", 0.2)
    got: list[tuple[int, float]] = []

    def listing() -> None:
        t0 = time.monotonic()
        status = api.request("GET", "/v1/predictions").status
        got.append((status, time.monotonic() - t0))

    thread = threading.Thread(target=listing)
    thread.start()
    assert rep.wait_for_request(lambda r: r[0] == "GET") == ("GET", "/v1/predictions")
    thread.join(60)
    # Held by slow_next: the answer came at least 0.2 s after the request (a floor load only
    # raises), and then it came.
    assert len(got) == 1 and got[0][0] == 200 and got[0][1] >= 0.2
    with pytest.raises(TimeoutError):
        rep.wait_for_request(lambda r: r[0] == "DELETE", timeout=0.05)


def test_close_does_not_hang_on_a_held_wait() -> None:
    rep = replicate_double()
    rep.behaviour(never_finish=True)
    api = Api(rep)
    outcome: list[object] = []

    def create() -> None:
        try:
            outcome.append(
                api.request(
                    "POST", SCHNELL_CREATE, {"input": {"prompt": "x"}}, Prefer="wait"
                ).status
            )
        except urllib3.exceptions.HTTPError as e:
            outcome.append(e)

    thread = threading.Thread(target=create)
    thread.start()
    rep.wait_for_request(lambda r: r[0] == "POST")
    t0 = time.monotonic()
    rep.close()
    thread.join(120)
    # Released by close, not by the end of the wait (60 s): far below it, whatever the load.
    assert time.monotonic() - t0 < 30 and outcome


# ------------------------------------------------------------------------------ list, cancel


def test_list_pagination_newest_first(clock: FakeClock) -> None:
    with replicate_double(clock=clock, page_size=2) as rep:
        api = Api(rep)
        ids = []
        for i in range(5):
            ids.append(api.create({"prompt": f"p{i}"})["id"])
            clock.advance(1)
        page1 = _json(api.request("GET", "/v1/predictions"))
        assert [p["id"] for p in page1["results"]] == [ids[4], ids[3]]
        assert page1["previous"] is None and page1["next"].startswith(rep.url + "/v1/predictions?")
        page2 = _json(api.request("GET", page1["next"]))
        assert [p["id"] for p in page2["results"]] == [ids[2], ids[1]]
        page3 = _json(api.request("GET", page2["next"]))
        assert [p["id"] for p in page3["results"]] == [ids[0]] and page3["next"] is None
        back = _json(api.request("GET", page2["previous"]))
        assert [p["id"] for p in back["results"]] == [ids[4], ids[3]]
        before = rep.predictions[ids[2]]["created_at"]
        filtered = _json(api.request("GET", f"/v1/predictions?created_before={before}"))
        assert [p["id"] for p in filtered["results"]] == [ids[1], ids[0]]
        assert api.request("GET", "/v1/predictions?cursor=garbage").status == 400


def test_list_is_100_a_page_newest_first_through_the_official_client(clock: FakeClock) -> None:
    """Replicate's reference: "a paginated JSON array of prediction objects, sorted with the
    most recent prediction first", 100 records a page, `next` null on the last page."""
    with replicate_double(clock=clock) as rep:
        api = Api(rep)
        ids = []
        for i in range(101):
            ids.append(api.create({"prompt": f"p{i}"})["id"])
            clock.advance(0.5)
        client = replicate.Client(api_token=TOKEN, base_url=rep.url)
        page = client.predictions.list()
        assert [p.id for p in page.results] == ids[::-1][:100] and page.next
        last = client.predictions.list(cursor=page.next)
        assert [p.id for p in last.results] == [ids[0]] and last.next is None
        times = [p.created_at for p in page.results]
        assert times == sorted(times, reverse=True)


def test_enforced_rate_limit_answers_429_until_the_minute_ends(clock: FakeClock) -> None:
    with replicate_double(clock=clock, rate_limits={"other": 2}) as rep:
        api = Api(rep)
        api.create({"prompt": "x"})  # creates have their own bucket
        first = api.request("GET", "/v1/predictions")
        assert first.status == 200 and first.headers["ratelimit-remaining"] == "1"
        assert api.request("GET", "/v1/predictions").headers["ratelimit-remaining"] == "0"
        throttled = api.request("GET", "/v1/predictions")
        wait = int(throttled.headers["Retry-After"])
        assert throttled.status == 429 and 1 <= wait <= 60
        assert _json(throttled) == {
            "detail": f"Request was throttled. Your rate limit resets in ~{wait}s.",
            "status": 429,
            "retry_after": wait,
        }
        clock.advance(wait)
        assert api.request("GET", "/v1/predictions").status == 200


def test_cancel(rep: ReplicateDouble) -> None:
    api = Api(rep)
    rep.behaviour(never_finish=True)
    pid = api.create({"prompt": "x"})["id"]
    r = api.request("POST", f"/v1/predictions/{pid}/cancel")
    assert r.status == 200
    p = _json(r)
    assert p["status"] == "canceled" and p["completed_at"].endswith("Z") and "metrics" in p
    again = _json(api.request("POST", f"/v1/predictions/{pid}/cancel"))
    assert again == p and api.get(pid) == p
    assert api.request("POST", "/v1/predictions/nope/cancel").status == 404


def test_cancel_after_deadline_with_fake_clock(fake: ReplicateDouble, clock: FakeClock) -> None:
    api = Api(fake)
    fake.behaviour(never_finish=True)
    running = api.create({"prompt": "x"}, **{"Cancel-After": "5s"})
    created = datetime.fromisoformat(running["created_at"])
    assert datetime.fromisoformat(running["deadline"]) == created + timedelta(seconds=5)
    fake.behaviour(duration=100)  # 10 s in "starting": the deadline falls before the start
    queued = api.create({"prompt": "y"}, **{"Cancel-After": "5"})
    long = api.create({"prompt": "z"}, **{"Cancel-After": "1h30m45s"})
    assert datetime.fromisoformat(long["deadline"]) == created + timedelta(seconds=5445)
    clock.advance(4)
    assert api.get(running["id"])["status"] == "processing"
    clock.advance(2)
    p = api.get(running["id"])
    assert p["status"] == "canceled" and p["completed_at"] == p["deadline"]
    p = api.get(queued["id"])
    assert p["status"] == "aborted" and "started_at" not in p and p["logs"] == ""
    assert api.get(long["id"])["status"] == "starting"
    r = api.request("POST", SCHNELL_CREATE, {"input": {"prompt": "x"}}, **{"Cancel-After": "2s"})
    assert r.status == 400


# ------------------------------------------------------------------------------ output files


def _download(api: Api, inp: dict[str, Any], model: str = SCHNELL) -> bytes:
    p = api.create(inp, model, Prefer="wait=5")
    assert p["status"] == "succeeded"
    out = p["output"] if isinstance(p["output"], str) else p["output"][0]
    r = api.request("GET", out)
    assert r.status == 200
    return bytes(r.data)


def test_images_are_real_deterministic_and_sized(rep: ReplicateDouble) -> None:
    api = Api(rep)
    inp = {"prompt": "a fox", "seed": 42, "output_format": "png", "aspect_ratio": "16:9"}
    first = _download(api, inp)
    assert first[:8] == b"\x89PNG\r\n\x1a\n" and first == _download(api, inp)
    assert first != _download(api, {**inp, "seed": 43})
    assert Image.open(io.BytesIO(first)).size == ASPECT_SIZES["16:9"] == (1344, 768)
    webp = _download(api, {"prompt": "a", "seed": 1, "aspect_ratio": "9:21", "megapixels": "0.25"})
    assert webp[:4] == b"RIFF" and webp[8:12] == b"WEBP"
    assert Image.open(io.BytesIO(webp)).size == (320, 768)
    jpg = _download(api, {"prompt": "a", "seed": 1, "output_format": "jpg", "aspect_ratio": "3:2"})
    assert jpg[:3] == b"\xff\xd8\xff" and Image.open(io.BytesIO(jpg)).size == (1216, 832)
    pro = api.create({"prompt": "a", "seed": 1}, "black-forest-labs/flux-1.1-pro", Prefer="wait=5")
    assert isinstance(pro["output"], str) and pro["output"].endswith("/out-0.webp")


def test_data_uri_output(rep: ReplicateDouble) -> None:
    rep.behaviour(output_as="data")
    p = Api(rep).create({"prompt": "x", "output_format": "png", "seed": 5}, Prefer="wait=5")
    head, b64 = p["output"][0].split(",", 1)
    assert head == "data:image/png;base64"
    assert Image.open(io.BytesIO(base64.b64decode(b64))).size == (1024, 1024)


def test_corrupt_and_truncated_downloads(rep: ReplicateDouble) -> None:
    api = Api(rep)
    url = api.create({"prompt": "x", "seed": 9}, Prefer="wait=5")["output"][0]
    good = bytes(api.request("GET", url).data)
    rep.corrupt_next_download()
    r = api.request("GET", url)
    assert r.status == 200 and r.data != good
    with pytest.raises(Exception, match="cannot identify image"):
        Image.open(io.BytesIO(r.data))
    rep.truncate_next_download()
    with pytest.raises(urllib3.exceptions.ProtocolError):
        api.request("GET", url)
    assert bytes(api.request("GET", url).data) == good
    assert urllib3.request("GET", url).status == 200  # no Authorization needed for files


def test_outputs_removed_after_ttl(fake: ReplicateDouble, clock: FakeClock) -> None:
    api = Api(fake)
    p = api.create({"prompt": "x"}, Prefer="wait=5")
    url = p["output"][0]
    assert api.request("GET", url).status == 200
    clock.advance(3599)
    assert api.get(p["id"])["data_removed"] is False
    clock.advance(2)
    p = api.get(p["id"])
    assert p["data_removed"] is True and p["output"] is None and p["status"] == "succeeded"
    assert api.request("GET", url).status == 404


# ------------------------------------------------------------------------------ clients, CLI


def test_official_client(rep: ReplicateDouble) -> None:
    client = replicate.Client(api_token=TOKEN, base_url=rep.url)
    out = client.run(SCHNELL, input={"prompt": "a lighthouse", "seed": 1})
    assert isinstance(out, list) and out[0].startswith(f"{rep.url}/files/")
    pinned = client.run(f"{DEV}:{REPLICATE_VERSIONS[DEV]}", input={"prompt": "x"})
    assert len(pinned) == 1
    rep.behaviour(output_as="data")
    files = client.run(SCHNELL, input={"prompt": "x", "output_format": "png"})
    assert files[0].read()[:4] == b"\x89PNG"  # data: URIs become FileOutput objects
    rep.behaviour(polls=2)
    pred = client.predictions.create(model=SCHNELL, input={"prompt": "x"})
    assert pred.status == "starting"
    assert client.predictions.get(pred.id).status == "processing"
    assert client.predictions.get(pred.id).status == "succeeded"
    rep.behaviour(never_finish=True)
    pred = client.predictions.create(model=SCHNELL, input={"prompt": "y"})
    assert client.predictions.cancel(pred.id).status == "canceled"
    page = client.predictions.list()
    assert page.results[0].id == pred.id and len(page.results) == 5 and page.next is None
    with pytest.raises(replicate.exceptions.ReplicateError) as err:
        client.predictions.create(model=SCHNELL, input={"prompt": "x", "num_inference_steps": 9})
    assert err.value.status == 422 and err.value.title == "Input validation failed"


def test_standalone_prints_url_first() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "imagen.testing.replicate", "--token", TOKEN],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        r = urllib3.request(
            "GET", url + "/v1/predictions", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert r.status == 200 and _json(r) == {"next": None, "previous": None, "results": []}
    finally:
        proc.terminate()
        assert proc.wait(5) == 0


# ----------------------------------------------------------------- faults for issue 18's tests


def test_date_header_comes_from_the_doubles_clock(fake: ReplicateDouble, clock: FakeClock) -> None:
    from email.utils import parsedate_to_datetime

    r = Api(fake).request("GET", "/v1/predictions")
    assert parsedate_to_datetime(r.headers["Date"]) == clock.now.replace(microsecond=0)
    clock.advance(-400)  # a server whose clock is behind
    r = Api(fake).request("GET", "/v1/predictions")
    assert parsedate_to_datetime(r.headers["Date"]) == clock.now.replace(microsecond=0)


def test_skew_date_moves_the_date_header_alone(fake: ReplicateDouble, clock: FakeClock) -> None:
    """A hostile clock: the Date header a day ahead, created_at still on the double's clock."""
    from email.utils import parsedate_to_datetime

    fake.skew_date(timedelta(days=1))
    made = Api(fake).create({"prompt": "a fox"})
    r = Api(fake).request("GET", "/v1/predictions")
    assert parsedate_to_datetime(r.headers["Date"]) == clock.now.replace(microsecond=0) + timedelta(
        days=1
    )
    [listed] = _json(r)["results"]
    assert (
        datetime.fromisoformat(listed["created_at"])
        == clock.now
        == datetime.fromisoformat(made["created_at"])
    )
    fake.skew_date(timedelta(0))
    r = Api(fake).request("GET", "/v1/predictions")
    assert parsedate_to_datetime(r.headers["Date"]) == clock.now.replace(microsecond=0)


def test_received_records_host_and_authorization(rep: ReplicateDouble) -> None:
    Api(rep).request("GET", "/v1/predictions")
    urllib3.request("GET", rep.url.replace("127.0.0.1", "localhost") + "/v1/predictions")
    first, second = rep.received
    assert first.authorization == f"Bearer {TOKEN}" and first.host.startswith("127.0.0.1")
    assert second.authorization is None and second.host.startswith("localhost")


@pytest.mark.parametrize("form", ["plain", "upper", "url", "base64", "json"])
def test_echo_token_next_repeats_the_credential(rep: ReplicateDouble, form: str) -> None:
    rep.echo_token_next("create", form)
    r = Api(rep).request("POST", SCHNELL_CREATE, {"input": {"prompt": "x"}})
    assert r.status == 400
    detail = _json(r)["detail"]
    expected = {
        "plain": TOKEN,
        "upper": TOKEN.upper(),
        "url": "".join(f"%{b:02X}" for b in TOKEN.encode()),
        "base64": base64.b64encode(f"Bearer {TOKEN}".encode()).decode(),
        "json": "".join(f"\\u{ord(c):04x}" for c in TOKEN),
    }[form]
    assert expected in detail
    assert rep.billed == 0
    assert Api(rep).request("POST", SCHNELL_CREATE, {"input": {"prompt": "x"}}).status == 201


def test_hostile_next_replaces_the_link_and_output_url_template(rep: ReplicateDouble) -> None:
    api = Api(rep)
    for seed in (1, 2):
        api.create({"prompt": "x", "seed": seed})
    rep.hostile_next("https://evil.example/v1/predictions?cursor=x")
    with replicate_double(page_size=1) as small:
        small.hostile_next("https://evil.example/next")
        Api(small).create({"prompt": "a"})
        Api(small).create({"prompt": "b"})
        assert (
            _json(Api(small).request("GET", "/v1/predictions"))["next"]
            == "https://evil.example/next"
        )
        small.hostile_next(None)
        assert _json(Api(small).request("GET", "/v1/predictions"))["next"].startswith(small.url)
    rep.behaviour(output_url="{base}@localhost:{port}/files/{id}/{name}")
    p = api.create({"prompt": "x", "seed": 3}, Prefer="wait=5")
    port = rep.url.rsplit(":", 1)[1]
    assert p["output"] == [f"{rep.url}@localhost:{port}/files/{p['id']}/out-0.webp"]


def test_clear_faults_forgets_pending_faults(rep: ReplicateDouble) -> None:
    rep.fail_next("get", status=503, times=5)
    rep.slow_next("get", 30)
    rep.clear_faults()
    p = Api(rep).create({"prompt": "x"})
    assert Api(rep).request("GET", f"/v1/predictions/{p['id']}").status == 200
