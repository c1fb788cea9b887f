"""Every file a ComfyUI workflow saves is kept, checked by its own format, with its sidecar and
its kind; a workflow saving a kind imagen does not keep is refused before anything is recorded
(issue #25, defect 3). Against the ComfyUI double over real sockets."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from PIL import Image

from imagen.backends.comfyui import read_history
from imagen.core.actions import Record
from imagen.core.events import JobFailed, StreamMessage
from imagen.testing.comfyui import ComfyUIDouble
from tests.support.cli import Sandbox
from tests.support.doubles import comfy_box


def _box(tmp_path: Path, comfy: ComfyUIDouble, graph: dict) -> Sandbox:
    workflow = tmp_path / "flow.json"
    workflow.write_text(json.dumps(graph))
    return comfy_box(tmp_path, comfy, workflow=str(workflow))


def _mixed(*savers: tuple[str, str]) -> dict:
    graph: dict = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": "{{width}}", "height": "{{height}}", "batch_size": 2, "color": 7},
        }
    }
    for node_id, cls in savers:
        inputs: dict = {"images": ["1", 0]}
        if cls != "PreviewImage":
            inputs["filename_prefix"] = "mine"
        if cls == "SaveAnimatedWEBP":
            inputs.update(fps=6.0, lossless=True, quality=80, method="default")
        if cls == "SaveAnimatedPNG":
            inputs.update(fps=6.0, compress_level=4)
        if cls == "SaveWEBM":
            inputs.update(codec="vp9", fps=24.0, crf=32.0)
        graph[node_id] = {"class_type": cls, "inputs": inputs}
    return graph


def test_png_and_animated_webp_are_all_kept_with_sidecars_and_kinds(
    tmp_path: Path, comfy: ComfyUIDouble
) -> None:
    graph = _mixed(
        ("2", "SaveImage"),
        ("3", "SaveAnimatedWEBP"),
        ("4", "SaveAnimatedPNG"),
        ("5", "PreviewImage"),
    )
    box = _box(tmp_path, comfy, graph)
    out = tmp_path / "out" / "mixed.png"
    result = box.run("generate", "mixed", "--size", "64x48", "--output", str(out))
    assert result.returncode == 0, result.stderr
    job = box.only_job()
    stored = [e.data for e in box.events(job) if e.type == "ImageStored"]
    # Two PNGs, one animated WebP of two frames, one APNG of two frames; the preview (temp)
    # is not kept beside saved outputs.
    kinds = sorted((Path(s["path"]).suffix, s["format"], s["frames"]) for s in stored)
    assert kinds == [
        (".png", "png", 1),
        (".png", "png", 1),
        (".png", "png", 2),
        (".webp", "webp", 2),
    ]
    for s in stored:
        path = Path(s["path"])
        assert path.parent == out.parent
        assert hashlib.sha256(path.read_bytes()).hexdigest() == s["sha256"]
        with Image.open(path) as img:
            assert img.format == {"png": "PNG", "webp": "WEBP"}[s["format"]]
        sidecar = json.loads(Path(f"{path}.json").read_text())
        assert sidecar["output_format"] == s["format"] and sidecar["frames"] == s["frames"]
        assert sidecar["count"] == 4
    (row,) = json.loads(box.run("jobs", "--json").stdout)
    assert len(row["images"]) == 4 and row["status"] == "succeeded"
    audit = box.run("audit")
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_a_workflow_saving_only_webp_names_it_webp_and_gives_back_the_reserved_name(
    tmp_path: Path, comfy: ComfyUIDouble
) -> None:
    box = _box(tmp_path, comfy, _mixed(("3", "SaveAnimatedWEBP")))
    out = tmp_path / "anim.png"
    result = box.run("generate", "webp only", "--size", "64x48", "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "anim.webp")
    assert not out.exists()  # the empty name reserved for it is given back
    assert Path(f"{tmp_path / 'anim.webp'}.json").is_file()


def test_a_workflow_saving_video_is_refused_before_anything_is_recorded(
    tmp_path: Path, comfy: ComfyUIDouble
) -> None:
    box = _box(tmp_path, comfy, _mixed(("2", "SaveImage"), ("3", "SaveWEBM")))
    result = box.run("generate", "video", "--size", "64x48")
    assert result.returncode == 2, result.stderr
    assert "3 (SaveWEBM: video (.webm))" in result.stderr
    assert "imagen does not keep" in result.stderr and len(result.stderr.splitlines()) == 1
    assert box.job_ids() == []
    assert not any(path == "/prompt" for _method, path in comfy.requests)
    check = box.run("backends", "--check", "local")
    assert check.returncode == 3 and "SaveWEBM" in check.stdout


def test_a_custom_node_saving_an_unkept_kind_fails_the_job_before_any_file_is_kept() -> None:
    """A node imagen cannot know statically (a custom one) reports a .mp4 beside a PNG: the job
    fails with nothing downloaded, rather than keeping the PNG and failing on the video."""
    from tests.test_comfyui_decide import accepted, new_job, prompt

    job = accepted(new_job())
    pid = prompt(job)
    entry = {
        "status": {"status_str": "success", "completed": True, "messages": []},
        "outputs": {
            "9": {"images": [{"filename": "a_00001_.png", "subfolder": "", "type": "output"}]},
            "12": {
                "gifs": [
                    {
                        "filename": "v_00001.mp4",
                        "subfolder": "",
                        "type": "output",
                        "format": "video/h264-mp4",
                    }
                ]
            },
        },
    }
    read = read_history({pid: entry}, pid)
    assert not isinstance(read, str) and read is not None
    assert [f["filename"] for f in read.images] == ["a_00001_.png", "v_00001.mp4"]
    job.add(StreamMessage("execution_success", {"prompt_id": pid}))
    job.do(job.decide(), {pid: entry})
    action = job.decide()
    assert isinstance(action, Record), action
    (failed,) = action.events
    assert isinstance(failed, JobFailed) and failed.reason == "unsupported_output"
    assert "v_00001.mp4 (node 12)" in failed.message


def test_animated_webp_and_apng_pass_their_checks_with_their_frames_and_a_cut_one_fails() -> None:
    import io

    import pytest

    from imagen.runner.images import InvalidImage, check

    frames = [Image.new("RGB", (8, 6), (i * 40, 0, 0)) for i in range(3)]
    for fmt, name in (("WEBP", "webp"), ("PNG", "png")):
        buf = io.BytesIO()
        frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], duration=100)
        info = check(buf.getvalue(), name)
        assert (info.format, info.width, info.height, info.frames) == (name, 8, 6, 3)
        with pytest.raises(InvalidImage):
            check(buf.getvalue()[: len(buf.getvalue()) * 2 // 3], name)


def test_cancel_of_a_dead_job_whose_prompt_finished_ends_it_complete_with_sidecars(
    tmp_path: Path, comfy: ComfyUIDouble
) -> None:
    """Issue #25 defect 4: `imagen cancel` fetches the finished prompt's image; it also writes
    its sidecar, so audit is clean without a resume."""
    import signal

    box = comfy_box(tmp_path, comfy)
    crashed = box.run(
        "generate", "dead", "--size", "64x64", env={"IMAGEN_CRASH_AFTER": "RemoteJobAccepted"}
    )
    assert crashed.returncode == -signal.SIGKILL
    job = box.only_job()
    pid = next(e.data["remote_id"] for e in box.events(job) if e.type == "RemoteJobAccepted")
    comfy.wait_until(lambda c: c.history(pid) is not None, timeout=120)
    cancelled = box.run("cancel", job)
    assert cancelled.returncode == 0, cancelled.stderr
    (stored,) = [e.data for e in box.events(job) if e.type == "ImageStored"]
    assert Path(f"{stored['path']}.json").is_file()
    audit = box.run("audit")
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_a_workflow_without_a_sampler_claims_no_steps_sampler_or_scheduler(
    tmp_path: Path, comfy: ComfyUIDouble
) -> None:
    """Issue #25 item 6: sidecars record only what the posted graph holds."""
    box = _box(tmp_path, comfy, _mixed(("2", "SaveImage")))
    result = box.run("generate", "no sampler", "--size", "64x48", "--output", "one.png")
    assert result.returncode == 0, result.stderr
    sidecar = json.loads(Path(f"{result.stdout.splitlines()[0]}.json").read_text())
    assert sidecar["steps"] is None and sidecar["seed"] is None
    assert {k: sidecar["result"][k] for k in ("steps", "sampler", "scheduler")} == dict.fromkeys(
        ("steps", "sampler", "scheduler")
    )


def test_a_corrupt_last_output_fails_the_job_before_any_file_is_stored() -> None:
    """Two good PNGs then a corrupt WebP: every output is checked before any is stored, so the
    job fails with nothing on disk instead of keeping two PNGs without sidecars (defect 3)."""
    from imagen.core.actions import StoreImage
    from imagen.core.events import RequestFailed, ResponseReceived
    from tests.test_comfyui_decide import accepted, new_job, prompt

    job = accepted(new_job())
    pid = prompt(job)
    entry = {
        "status": {"status_str": "success", "completed": True, "messages": []},
        "outputs": {
            "9": {
                "images": [
                    {"filename": f"a_0000{n}_.png", "subfolder": "", "type": "output"}
                    for n in (1, 2)
                ]
            },
            "12": {
                "images": [{"filename": "w_00001_.webp", "subfolder": "", "type": "output"}],
                "animated": [True],
            },
        },
    }
    job.add(StreamMessage("execution_success", {"prompt_id": pid}))
    job.do(job.decide(), {pid: entry})
    for _ in range(30):
        action = job.decide()
        if isinstance(action, Record):
            if any(isinstance(e, JobFailed) for e in action.events):
                break
            job.apply(action)
            continue
        assert isinstance(action, StoreImage), action
        assert action.check_only, f"stored {action.url} before every output was checked"
        rid = job.send(action)
        if "webp" in action.url:
            job.add(RequestFailed(rid, "check", "invalid_image", "expected a webp image"))
        else:
            job.add(ResponseReceived(rid, "check", 200, {}, {"bytes": 9, "format": "png"}))
    else:
        raise AssertionError("no end")
    (failed,) = action.events
    assert failed.reason == "download_failed" and "w_00001_.webp (node 12)" in failed.message
    assert not job.state.images
