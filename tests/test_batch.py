"""Batches through the CLI (issue 15): many images from one command, each its own job, against
the real doubles on 127.0.0.1."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from datetime import timedelta
from pathlib import Path
from urllib.request import urlopen

import pytest

from imagen.core.job import parse_time
from imagen.testing.comfyui import ComfyUIDouble
from imagen.testing.replicate import ReplicateDouble
from tests.support.cli import Sandbox
from tests.support.doubles import SCHNELL, comfy_box, rep_box


def requests_of(box: Sandbox) -> dict[str, dict]:
    """Each job's JobRequested payload."""
    return {e.stream_id: e.data for e in box.events() if e.type == "JobRequested"}


def test_replicate_batch_of_prompts_and_count(tmp_path: Path, rep: ReplicateDouble) -> None:
    box = rep_box(tmp_path, rep)
    result = box.run("generate", "a fox", "an owl", "-n", "3", "--seed", "10")
    assert result.returncode == 0, result.stderr
    paths = result.stdout.split()
    assert len(paths) == 6 and len(set(paths)) == 6
    for p in paths:
        assert Path(p).read_bytes()[:4] == b"\x89PNG" and Path(f"{p}.json").exists()
    assert rep.billed == 6
    reqs = requests_of(box)
    assert len(reqs) == 6
    [batch] = {r["batch"] for r in reqs.values()}
    assert sorted((r["prompt"], r["params"]["seed"]) for r in reqs.values()) == [
        ("a fox", 10),
        ("a fox", 11),
        ("a fox", 12),
        ("an owl", 10),
        ("an owl", 11),
        ("an owl", 12),
    ]
    assert sorted(r["batch_index"] for r in reqs.values()) == list(range(6))
    assert "6 done, 0 failed, 0 cancelled" in result.stderr


def test_a_batch_whose_reader_goes_away_finishes_quietly(
    tmp_path: Path, rep: ReplicateDouble
) -> None:
    # `| head`: the reader is gone when a worker's thread prints the first line. No
    # traceback; every job still ends recorded; the broken-pipe code, as a single generate.
    box = rep_box(tmp_path, rep)
    with subprocess.Popen(
        box.cmd("generate", "a b", "c d", "--json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=box.env,
        cwd=box.root,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        # Gone before the first line (a reader that has read all it wanted): the first path
        # printed meets a closed pipe whatever the timing, as `head` closing early does.
        proc.stdout.close()
        err = proc.stderr.read()
        code = proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert code == 141, err
    assert rep.billed == 2 and len(box.job_ids()) == 2


def test_comfyui_batch_from_file_json_lines(tmp_path: Path, comfy: ComfyUIDouble) -> None:
    box = comfy_box(tmp_path, comfy)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "a lighthouse\n"
        "\n"
        + json.dumps({"prompt": "a harbour", "seed": 7, "size": "512x512", "count": 2})
        + "\n"
        + json.dumps({"prompt": "a boat", "steps": 2, "aspect": "16:9"})
        + "\n"
    )
    out = tmp_path / "shots"
    result = box.run("generate", "--from", str(prompts), "--json", "--output", str(out))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(r["index"] for r in rows) == [0, 1, 1, 2]
    assert all(r["status"] == "succeeded" and Path(r["image"]).parent == out for r in rows)
    harbour = sorted((r["seed"], r["width"]) for r in rows if r["index"] == 1)
    assert harbour == [(7, 512), (8, 512)]
    assert comfy.executed == 4


def batch_id_of(stderr: str) -> str:
    match = re.search(r"batch ([0-9a-f]{16})", stderr)
    assert match, stderr
    return match.group(1)


def jobs_of(box: Sandbox, batch: str) -> list[dict]:
    result = box.run("jobs", "--batch", batch, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_from_stdin_one_prompt_a_line(tmp_path: Path, rep: ReplicateDouble) -> None:
    box = rep_box(tmp_path, rep)
    result = subprocess.run(
        box.cmd("generate", "--from", "-", "--json"),
        input="a red fox\nan owl at night\n\na lighthouse\n",
        capture_output=True,
        text=True,
        env=box.env,
        cwd=box.root,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted((r["index"], r["status"]) for r in rows) == [
        (0, "succeeded"),
        (1, "succeeded"),
        (2, "succeeded"),
    ]
    batch = rows[0]["batch"]
    listed = jobs_of(box, batch)
    assert [j["prompt"] for j in listed] == ["a red fox", "an owl at night", "a lighthouse"]
    assert {j["batch"] for j in listed} == {batch}
    assert rep.billed == 3


@pytest.mark.parametrize(
    ("lines", "says"),
    [
        (['{"prompt": "ok"}', '{"prompt": "x", "steps": 99}'], "line 2: --steps 99"),
        (["fine", "", '{"prompt": "x", "colour": 1}'], "line 3: unknown key 'colour'"),
        (["fine", '{"prompt": "x"'], "line 2: not valid JSON"),
        (["fine", '{"seed": 3}'], "line 2: no prompt"),
        (["a", '{"prompt": "b", "seed": "7"}'], "line 2: seed must be an integer"),
        (['{"prompt": "same", "seed": 5}', '{"prompt": "same", "seed": 5}'], "line 2: writes"),
        (["x", '{"prompt": "y", "backend": "nope"}'], "line 2: unknown backend 'nope'"),
    ],
)
def test_a_bad_line_is_named_and_nothing_is_recorded(
    tmp_path: Path, rep: ReplicateDouble, lines: list[str], says: str
) -> None:
    box = rep_box(tmp_path, rep)
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(["a good prompt"] * 3 + lines) + "\n")
    says = says.replace("line ", "line ", 1)
    result = box.run("generate", "--from", str(source))
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    n = int(says.split()[1].rstrip(":")) + 3
    assert line.startswith(f"imagen: error: line {n}: ") and says.split(": ", 1)[1] in line, line
    assert result.stdout == ""
    assert rep.requests == [] and box.events() == []
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("prompts", [["a fox"], ["a fox", "a hare"]])
@pytest.mark.parametrize("value", ["0", "65", "-1"])
def test_a_concurrency_out_of_range_is_bad_input_for_one_image_too(
    tmp_path: Path, rep: ReplicateDouble, prompts: list[str], value: str
) -> None:
    box = rep_box(tmp_path, rep)
    result = box.run("generate", *prompts, "--concurrency", value)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"imagen: error: --concurrency {value}: use 1 to 64"]
    assert rep.requests == [] and box.events() == []


def test_ctrl_c_cancels_the_whole_batch(tmp_path: Path, rep: ReplicateDouble) -> None:
    box = rep_box(tmp_path, rep, wait_s=1)
    rep.behaviour(never_finish=True)
    proc = box.popen("generate", "a fox", "-n", "5", "--concurrency", "2")
    rep.wait_for_request(lambda r: r[0] == "POST" and r[1].endswith("/predictions"), timeout=30)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert out == ""
    jobs = jobs_of(box, batch_id_of(err))
    assert len(jobs) == 5 and {j["status"] for j in jobs} == {"cancelled"}, jobs
    assert "0 done, 0 failed, 5 cancelled" in err
    # Nothing left running at Replicate: every prediction made was cancelled.
    states = {p["status"] for p in rep.predictions.values()}
    assert rep.predictions and states == {"canceled"}, states
    assert box.run("audit").returncode == 0


def test_ctrl_c_of_a_comfyui_batch_leaves_nothing_queued(
    tmp_path: Path, comfy: ComfyUIDouble
) -> None:
    box = comfy_box(tmp_path, comfy)
    comfy.hold_next()
    proc = box.popen("generate", "a fox", "-n", "4", "--size", "256x256")
    comfy.wait_until(lambda d: d.held is not None and d.submitted >= 2, timeout=30)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    jobs = jobs_of(box, batch_id_of(err))
    # Every job ended. The held (running) prompt is interrupted; the queued one is deleted,
    # unless the interrupt let it start first: the instant double then finishes it at once,
    # and an image made is fetched, never thrown away.
    statuses = [j["status"] for j in jobs]
    assert statuses.count("cancelled") >= 3 and set(statuses) <= {"cancelled", "succeeded"}
    assert comfy.executed == statuses.count("succeeded")
    assert comfy.running is None and comfy.held is None
    queue = json.loads(urlopen(f"{comfy.url}/queue", timeout=5).read())
    assert queue == {"queue_running": [], "queue_pending": []}


def test_sigterm_leaves_the_batch_resumable_and_resume_batch_id_finishes_it(
    tmp_path: Path, rep: ReplicateDouble
) -> None:
    box = rep_box(tmp_path, rep, wait_s=1)
    rep.behaviour(polls=2)  # created predictions finish on their second poll
    proc = box.popen("generate", "a fox", "-n", "5", "--concurrency", "2", "--seed", "1")
    rep.wait_for_request(lambda r: r[0] == "POST" and r[1].endswith("/predictions"), timeout=30)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    batch = batch_id_of(err)
    assert f"imagen resume {batch}" in err
    jobs = jobs_of(box, batch)
    assert len(jobs) == 5 and {j["status"] for j in jobs} == {"interrupted"}, jobs
    billed = rep.billed
    assert 1 <= billed <= 2
    resumed = box.run("resume", batch[:6])
    assert resumed.returncode == 0, resumed.stderr
    assert len(resumed.stdout.split()) == 5
    assert rep.billed == 5  # the predictions made before SIGTERM were picked up, not re-made
    assert {j["status"] for j in jobs_of(box, batch)} == {"succeeded"}
    again = box.run("resume", batch)
    assert again.returncode == 0 and "no unfinished jobs" in again.stderr


def test_a_429_pauses_every_worker_of_the_backend(tmp_path: Path, rep: ReplicateDouble) -> None:
    box = rep_box(tmp_path, rep)
    rep.fail_next("create", 429, retry_after=1)
    result = box.run("generate", "a fox", "-n", "6", "--concurrency", "2")
    assert result.returncode == 0, result.stderr
    assert rep.billed == 6
    events = box.events()
    [throttled] = [e for e in events if e.type == "ResponseReceived" and e.data["status"] == 429]
    assert any(e.type == "RetryScheduled" and e.stream_id == throttled.stream_id for e in events)
    [asked] = [
        e
        for e in events
        if e.type == "RequestSent"
        and e.data["request_id"] == throttled.data["request_id"]
        and e.stream_id == throttled.stream_id
    ]
    # The 429 came after its request was recorded: nothing may be sent for a second from then.
    until = parse_time(asked.recorded_at) + timedelta(seconds=1)
    answers = {
        (e.stream_id, e.data["request_id"]): e for e in events if e.type == "ResponseReceived"
    }
    later = [
        answers[(e.stream_id, e.data["request_id"])]
        for e in events
        if e.position > throttled.position
        and e.type == "RequestSent"
        and e.data["purpose"] == "create"
    ]
    # The other worker went on creating after the 429 was recorded, and waited as it asked
    # (an answer comes after its request was sent).
    assert any(e.stream_id != throttled.stream_id for e in later)
    assert all(parse_time(e.recorded_at) >= until for e in later)


@pytest.mark.parametrize("backend", ["replicate", "comfyui"])
def test_kill_9_in_the_middle_of_a_40_image_batch_then_resume_all(
    tmp_path: Path, rep: ReplicateDouble, comfy: ComfyUIDouble, backend: str
) -> None:
    box = rep_box(tmp_path, rep) if backend == "replicate" else comfy_box(tmp_path, comfy)
    proc = box.popen("generate", "a lighthouse", "-n", "40", "--size", "256x256")
    assert proc.stdout is not None
    for _ in range(10):
        assert proc.stdout.readline()
    # From here on the jobs in flight are caught unfinished: Replicate makes (and bills) each
    # prediction but its answer is late; ComfyUI parks the next execution.
    if backend == "replicate":
        before = sum(1 for method, _ in rep.requests if method == "POST")
        rep.slow_next("create", 2.0, times=40)
        posts = [0]

        def a_late_create(request: tuple[str, str]) -> bool:
            posts[0] += request[0] == "POST"
            return posts[0] > before

        rep.wait_for_request(a_late_create, timeout=30)
    else:
        comfy.hold_next()
        comfy.wait_until(lambda d: d.held is not None, timeout=30)
    proc.kill()
    proc.communicate(timeout=30)
    if backend == "replicate":
        rep.clear_faults()
    else:
        comfy.release()
    states = [e.data for e in box.events() if e.type in ("JobSucceeded",)]
    assert 10 <= len(states) < 40
    resumed = box.run("resume", "--all")
    assert resumed.returncode == 0, resumed.stderr
    images = sorted((tmp_path / "out").glob("*.png"))
    assert len(images) == 40 and all(p.stat().st_size > 0 for p in images)
    assert all(Path(f"{p}.json").exists() for p in images)
    if backend == "replicate":
        assert rep.billed == 40
        # A create whose answer never came was looked up and adopted, not made again.
        assert any(e.type == "LookupConcluded" for e in box.events())
    else:
        assert comfy.executed == 40
    audit = box.run("audit")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "verified" in audit.stdout + audit.stderr


def test_one_batch_across_two_backends(
    tmp_path: Path, rep: ReplicateDouble, comfy: ComfyUIDouble
) -> None:
    box = rep_box(tmp_path, rep)
    box.write_config(
        f'default_backend = "rep"\n'
        f'[backends.rep]\ntype = "replicate"\nmodel = "{SCHNELL}"\nbase_url = "{rep.url}"\n'
        f"poll_interval_s = 0.05\nmax_concurrency = 3\n"
        f'[backends.local]\ntype = "comfyui"\nurl = "{comfy.url}"\npoll_interval_s = 0.05\n'
        f'[output]\ndirectory = "{tmp_path / "out"}"\n'
    )
    source = tmp_path / "mixed.jsonl"
    source.write_text(
        "\n".join(
            json.dumps({"prompt": f"shot {i}", "backend": "local" if i % 2 else "rep"})
            for i in range(6)
        )
        + "\n"
    )
    result = box.run("generate", "--from", str(source), "--json")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted((r["index"], r["backend"]) for r in rows) == [
        (i, "local" if i % 2 else "rep") for i in range(6)
    ]
    assert rep.billed == 3 and comfy.executed == 3


def test_several_images_take_a_directory(tmp_path: Path, rep: ReplicateDouble) -> None:
    box = rep_box(tmp_path, rep)
    result = box.run("generate", "a fox", "an owl", "--output", str(tmp_path / "one.png"))
    assert result.returncode == 2 and "give a directory" in result.stderr
    assert box.events() == [] and rep.requests == []
