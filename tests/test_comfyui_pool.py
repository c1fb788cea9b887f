"""ComfyUI pools (`urls = [...]`): placement on the shortest queue, failover exactly once.

Against two real ComfyUI doubles on 127.0.0.1 (a batch through the CLI), and a property over
`comfyui.decide` with members that die and come back (tests/support/properties.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imagen.app.config import ConfigError, parse_config
from imagen.backends import comfyui
from imagen.core.actions import (
    Action,
    FollowStream,
    HttpRequest,
    OpenStream,
    ProbeMembers,
    Record,
    StoreImage,
)
from imagen.core.events import (
    ImageStored,
    JobMoved,
    JobOverflowed,
    JobPlaced,
    JobRequested,
    MembersProbed,
    RequestFailed,
    RequestSent,
    ResponseReceived,
    StreamClosed,
)
from imagen.core.inputs import GenerateInputs
from imagen.testing.comfyui import free_port
from imagen.testing.replicate import ReplicateDouble
from tests.support.cli import Sandbox
from tests.support.doubles import FAST, SCHNELL, TOKEN_ENV, comfyui_double
from tests.support.history import History
from tests.support.properties import SETTINGS, Draw, Drive


def pool_box(tmp_path: Path, *urls: str, **options: object) -> Sandbox:
    box = Sandbox(tmp_path)
    box.write_backend("pool", "comfyui", urls=list(urls), member_grace_s=0.5, **FAST, **options)
    return box


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ({"url": "http://a:8188", "urls": ["http://b:8188"]}, "not both"),
        ({"urls": []}, "non-empty list"),
        ({"urls": ["ftp://a"]}, "not an http"),
    ],
)
def test_a_pool_config_that_cannot_be_meant_is_one_line(table: dict[str, Any], says: str) -> None:
    raw = {"backends": {"pool": {"type": "comfyui", **table}}}
    with pytest.raises(ConfigError, match=says) as err:
        parse_config(raw, "config.toml", {})
    assert "\n" not in str(err.value) and "backends.pool" in str(err.value)


def _sidecars(box: Sandbox) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(box.out.glob("*.json"))]


def test_two_members_take_a_batch_together_each_job_once(tmp_path: Path) -> None:
    with comfyui_double() as a, comfyui_double() as b:
        box = pool_box(tmp_path, a.url, b.url)
        result = box.run("generate", "--steps", "2", *[f"fox {n}" for n in range(6)])
        assert result.returncode == 0, result.stderr
        assert a.executed + b.executed == 6 and a.executed and b.executed
        docs = _sidecars(box)
        assert len(docs) == 6
        assert {d["server"] for d in docs} == {a.url, b.url}
        ran: dict[str, float] = {}
        for job in box.job_ids():
            placed = [e for e in box.events(job) if e.type == "JobPlaced"]
            assert len(placed) == 1 and placed[0].stream_version < _first(box, job, "RequestSent")
            for e in box.events(job):
                if e.type == "MembersProbed":
                    ran.update(json.loads(e.data_json).get("image_s", {}))
        # Jobs placed after others had finished saw those members' run times (overflow_after_s)
        assert ran and set(ran) <= {a.url, b.url} and all(v >= 0 for v in ran.values())


def _first(box: Sandbox, job: str, type_: str) -> int:
    return next(e.stream_version for e in box.events(job) if e.type == type_)


def test_a_member_killed_mid_batch_moves_its_jobs_and_none_runs_twice(tmp_path: Path) -> None:
    with comfyui_double() as a, comfyui_double() as b:
        a.hold_next()  # the first prompt on `a` holds, the next queues behind it
        box = pool_box(tmp_path, a.url, b.url)
        proc = box.popen("generate", "--steps", "2", *[f"owl {n}" for n in range(6)])
        a.wait_until(lambda d: d.held is not None and d.submitted >= 2, timeout=60)
        made_on_a = a.executed  # the held one has not run its sampler, and never will
        a.kill()
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        docs = _sidecars(box)
        assert len(docs) == 6 and all(Path(d["image"]["path"]).exists() for d in docs)
        moved = [job for job in box.job_ids() if any(e.type == "JobMoved" for e in box.events(job))]
        assert len(moved) == 2  # the held prompt and the one queued behind it
        assert made_on_a + b.executed == 6  # every job executed once, kept once
        for job in moved:
            [doc] = [d for d in docs if d["job_id"] == job]
            assert doc["server"] == b.url and doc["result"]["moved"] == 1


def test_overflow_with_every_member_down_spends_exactly_the_budget(
    tmp_path: Path, rep: ReplicateDouble
) -> None:
    """8 jobs race to overflow on a budget worth 4 images: exactly 4 are paid, 4 refused."""
    down = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]  # nothing listens there
    box = Sandbox(tmp_path, env={**TOKEN_ENV, "MAI_FROM_ID": "racer"})
    box.write_config(
        'default_backend = "pool"\n'
        f'[backends.pool]\ntype = "comfyui"\nurls = {json.dumps(down)}\n'
        'member_grace_s = 0.2\noverflow = "paid"\npoll_interval_s = 0.05\n'
        f'[backends.paid]\ntype = "replicate"\nmodel = "{SCHNELL}"\n'
        f'base_url = "{rep.url}"\nretry_base_s = 0.01\n'
        f'[output]\ndirectory = "{box.out}"\n'
    )
    assert box.run("budget", "set", "racer", "0.012", "--per", "day").returncode == 0
    result = box.run("generate", "--concurrency", "8", *[f"hare {n}" for n in range(8)])
    assert result.returncode != 0 and "4 done, 4 failed" in result.stderr, result.stderr
    assert rep.billed == 4
    ends: list[str] = []
    for job in box.job_ids():
        events = box.events(job)
        sent = [json.loads(e.data_json) for e in events if e.type == "RequestSent"]
        assert not any(s["purpose"] == "prompt" for s in sent)  # never both local and paid
        end = events[-1]
        ends.append(end.type)
        if end.type == "JobSucceeded":
            assert "JobOverflowed" in [e.type for e in events]
        else:  # refused by the budget as the overflow was recorded: nothing sent
            assert "overflow paid" in end.data_json and "JobOverflowed" not in box.types(job)
            assert not any(s["purpose"] == "create" for s in sent)
    assert sorted(ends) == ["JobFailed"] * 4 + ["JobSucceeded"] * 4
    jobs = json.loads(box.run("jobs", "--json").stdout)
    paid = [j for j in jobs if j["status"] == "succeeded"]
    assert {(j["backend"], j["cost_usd"]) for j in paid} == {("paid", "0.003000")}
    # The sidecar names where the image was made as the job object does: the overflow backend.
    assert {j["server"] for j in paid} == {"paid"}
    assert {json.loads(Path(j["sidecar"]).read_text())["server"] for j in paid} == {"paid"}


def _pool_and_paid(box: Sandbox, urls: list[str], rep_url: str, extra: str = "") -> None:
    box.write_config(
        'default_backend = "pool"\n'
        f'[backends.pool]\ntype = "comfyui"\nurls = {json.dumps(urls)}\n'
        f"member_grace_s = 0.2\npoll_interval_s = 0.05\n{extra}"
        f'[backends.paid]\ntype = "replicate"\nmodel = "{SCHNELL}"\n'
        f'base_url = "{rep_url}"\nretry_base_s = 0.01\n'
        f'[output]\ndirectory = "{box.out}"\n'
    )


@pytest.mark.parametrize("name", ["nope", "pool"])
def test_overflow_names_a_configured_replicate_backend_or_is_one_line(
    tmp_path: Path, name: str
) -> None:
    box = Sandbox(tmp_path, env=TOKEN_ENV)
    _pool_and_paid(box, ["http://127.0.0.1:9"], "http://127.0.0.1:9")
    result = box.run("generate", "a fox", "--overflow", name)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"--overflow {name}: not a configured Replicate backend; configured: paid" in (
        result.stderr
    )
    assert box.job_ids() == []


def test_overflow_flag_sends_a_batch_to_replicate_when_every_member_is_down(
    tmp_path: Path, rep: ReplicateDouble
) -> None:
    down = [f"http://127.0.0.1:{free_port()}"]  # the pool has no overflow key: the flag's
    box = Sandbox(tmp_path, env=TOKEN_ENV)
    _pool_and_paid(box, down, rep.url)
    result = box.run("generate", "hare 1", "hare 2", "--overflow", "paid")
    assert result.returncode == 0, result.stderr
    assert rep.billed == 2
    jobs = json.loads(box.run("jobs", "--json").stdout)
    assert {(j["backend"], j["server"]) for j in jobs} == {("paid", "paid")}


A, B = "http://127.0.0.1:9001", "http://127.0.0.1:9002"


def _probed_pool(cfg: dict[str, Any], sizes: dict[str, int], ran: dict[str, float]) -> History:
    cfg = {"urls": [A, B], **cfg}
    params = comfyui.normalise(GenerateInputs("a fox", 7, steps=2), cfg)
    request = JobRequested("pool", "comfyui", "flux", "a fox", params, cfg, "/tmp/out.png")
    h = History(comfyui.decide, request, job_id="job0123456789abc")
    assert isinstance(h.decide(), ProbeMembers)
    answers = {
        u: {"status": 200, "sizes": {"queue_running": min(n, 1), "queue_pending": max(n - 1, 0)}}
        for u, n in sizes.items()
    }
    return h.add(MembersProbed(answers, {}, ran))


SPILL = {"backend": "paid", "backend_type": "replicate", "model": SCHNELL, "price_usd": 0.003}


@pytest.mark.parametrize(
    ("cfg", "sizes", "ran", "spills"),
    [
        # 3 queued x 10 s > 20 s on both: to Replicate
        ({"overflow_after_s": 20, "image_s": 10}, {A: 3, B: 4}, {}, True),
        # one member would start it within 20 s: stays
        ({"overflow_after_s": 20, "image_s": 10}, {A: 3, B: 1}, {}, False),
        # no image_s: each member's observed run time (B's unknown: it stays local)
        ({"overflow_after_s": 20}, {A: 3, B: 3}, {A: 9.0, B: 8.0}, True),
        ({"overflow_after_s": 20}, {A: 3, B: 3}, {A: 9.0}, False),
        # an idle member starts it at once, whatever the time per prompt
        ({"overflow_after_s": 20}, {A: 3, B: 0}, {A: 9.0}, False),
        # no overflow backend prepared: stays
        ({"overflow_after_s": 1, "image_s": 9, "overflow_request": None}, {A: 3, B: 3}, {}, False),
    ],
)
def test_a_queue_too_long_on_every_member_overflows_before_anything_is_posted(
    cfg: dict[str, Any], sizes: dict[str, int], ran: dict[str, float], spills: bool
) -> None:
    cfg = {"overflow_request": SPILL, **cfg}
    h = _probed_pool(cfg, sizes, ran)
    action = h.decide()
    assert isinstance(action, Record)
    [event] = action.events
    if spills:
        assert isinstance(event, JobOverflowed) and "would wait over 20s" in event.reason
    else:
        assert isinstance(event, JobPlaced)


def test_a_job_once_posted_never_overflows_on_its_queue() -> None:
    """Moved after its prompt was posted: placed again locally, never paid (no JobOverflowed)."""
    cfg = {"overflow_request": SPILL, "overflow_after_s": 1, "image_s": 10}
    h = _probed_pool(cfg, {A: 0, B: 0}, {})
    h.apply(h.decide())  # placed on A
    h.add(RequestSent("p1", "prompt", "POST", f"{A}/prompt"), JobMoved(A, "refused the prompt"))
    assert isinstance(h.decide(), ProbeMembers)
    h.add(MembersProbed(_probed_pool(cfg, {A: 5, B: 5}, {}).records[-1].event.answers, {}, {}))
    action = h.decide()
    assert isinstance(action, Record) and isinstance(action.events[0], JobPlaced)


# -- the property: members that die and come back --------------------------------------------


class PoolWorld:
    """Two members; between decisions one may die (its queue and history lost, as a killed
    ComfyUI) or come back empty. A posted prompt executes at once on a live member."""

    def __init__(self) -> None:
        self.up = {A: True, B: True}
        self.done: dict[str, set[str]] = {A: set(), B: set()}
        self.executions: dict[str, int] = {}  # prompt id -> successful executions

    def check(self, h: History, action: Action) -> None:
        stored = [r for r in h.records if isinstance(r.event, ImageStored)]
        if stored and isinstance(action, HttpRequest) and action.purpose == "prompt":
            raise AssertionError("posted again after an image was kept")

    def _member(self, url: str) -> str:
        parts = urlsplit(url.replace("ws://", "http://"))
        return f"http://{parts.netloc}"

    def _flip(self, draw: Draw | None) -> None:
        if draw is None:
            return
        what = draw(st.sampled_from([None] * 6 + [A, B]))
        if what is not None:
            self.up[what] = not self.up[what]
            if not self.up[what]:
                self.done[what] = set()  # killed: its history is gone

    def perform(self, h: History, action: Action, draw: Draw | None) -> bool:
        self._flip(draw)
        if isinstance(action, ProbeMembers):
            answers = {
                u: (
                    {"status": 200, "sizes": {"queue_running": 0, "queue_pending": 0}}
                    if self.up[u]
                    else {"error": "refused", "message": "drawn"}
                )
                for u in action.urls
            }
            h.add(MembersProbed(answers, {}))
            return True
        if isinstance(action, FollowStream):
            h.add(StreamClosed("dropped", "the world closes every stream"))
            return True
        url = action.url
        member = self._member(url)
        if isinstance(action, OpenStream):
            if self.up[member]:
                h.opened(action)
            else:
                rid = h.send(action)
                h.wait(0.3)
                h.add(RequestFailed(rid, "stream", "unreachable", "refused"))
            return True
        rid = h.send(action)
        h.wait(0.3)
        purpose = "download" if isinstance(action, StoreImage) else action.purpose
        if not self.up[member]:
            h.add(RequestFailed(rid, purpose, "refused", "drawn"))
            return True
        if isinstance(action, StoreImage):
            h.add(ResponseReceived(rid, purpose, 200, {}, {"bytes": 3}))
            h.add(ImageStored(action.dest, "ab" * 32, 3, "png", 1, 1, action.url, action.index))
            return True
        assert isinstance(action, HttpRequest)
        if action.purpose == "prompt":
            pid = str(action.json_body["prompt_id"])
            self.done[member].add(pid)
            self.executions[pid] = self.executions.get(pid, 0) + 1
            body: Any = {"prompt_id": pid, "number": 1, "node_errors": {}}
        elif action.url.endswith("/queue"):
            body = {"queue_running": [], "queue_pending": []}
        elif "/history/" in action.url:
            pid = action.url.rsplit("/", 1)[-1]
            image = {"filename": f"{pid}.png", "subfolder": "", "type": "output"}
            body = (
                {pid: {"status": {"status_str": "success", "completed": True},
                       "outputs": {"9": {"images": [image]}}}}
                if pid in self.done[member]
                else {}
            )  # fmt: skip
        else:
            body = {}
        h.add(ResponseReceived(rid, purpose, 200, {}, body))
        return True

    def resume(self, h: History, draw: Draw) -> None:
        h.wait(1.0)
        h.resume()


@SETTINGS
@given(st.data())
def test_failover_keeps_one_execution_and_every_job_ends(data: Any) -> None:
    cfg = {"urls": [A, B], "member_grace_s": 1.0, "timeout_s": 30.0}
    params = comfyui.normalise(GenerateInputs("a fox", 7, steps=2), cfg)
    request = JobRequested("pool", "comfyui", "flux", "a fox", params, cfg, "/tmp/out.png")
    h = History(comfyui.decide, request, job_id="job0123456789abc")
    world = PoolWorld()
    Drive(h, world, data.draw, limit=200).run()
    stored = [r.event for r in h.records if isinstance(r.event, ImageStored)]
    # At most one execution kept: every stored image comes from one prompt on one server.
    assert (
        len({(world._member(i.source), i.source.split("filename=")[-1][:36]) for i in stored}) <= 1
    )
    placed = [r for r in h.records if isinstance(r.event, JobPlaced | JobMoved)]
    first_image = next((r.version for r in h.records if isinstance(r.event, ImageStored)), None)
    if first_image is not None:
        assert not any(isinstance(r.event, JobMoved) and r.version > first_image for r in placed), (
            "moved after an image was kept"
        )
