"""Fetching a finished prompt's images from /view, one at a time."""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import urlencode

from imagen.backends.comfyui.job import (
    accepted_at,
    backoff,
    past_deadline,
    server_url,
    still_unreachable,
)
from imagen.backends.comfyui.outputs import KEPT_FORMATS, KEPT_TEXT, file_format
from imagen.backends.comfyui.report import success_result
from imagen.backends.comfyui.wire import HistoryEntry, outcome_text
from imagen.backends.common import (
    config_of,
    current_download_retries,
    current_downloads,
    exchanges,
    next_image_index,
    pending_retry,
    request_id,
    retry_time,
)
from imagen.core.actions import Action, Record, StoreImage
from imagen.core.events import (
    JobFailed,
    JobSucceeded,
    RequestFailed,
    ResponseReceived,
    RetryScheduled,
)
from imagen.core.failures import Failure
from imagen.core.job import JobState, image_path

# -- the image -------------------------------------------------------------------------------


def finished(state: JobState, entry: HistoryEntry) -> Action:
    if entry.failure is not None:
        return Record((entry.failure,))
    if not entry.images:
        return Record(
            (
                JobFailed(
                    "no_output",
                    "ComfyUI finished without an image (was the output cached or "
                    "dropped? see `imagen show`)",
                    Failure.GENERATION_FAILED,
                ),
            )
        )
    # Files of type "output" are kept; previews (PreviewImage's "temp") only when the graph
    # saved nothing else (docs/setup-comfyui.md, "Outputs").
    saved = [i for i in entry.images if i["type"] == "output"] or list(entry.images)
    unkept = [i for i in saved if file_format(i["filename"]) is None]
    if unkept and not state.images:
        # Refused whole, before any file is kept: never a failed job with files on disk.
        names = ", ".join(f"{i['filename']} (node {i['node']})" for i in unkept[:3])
        return Record(
            (
                JobFailed(
                    "unsupported_output",
                    f"ComfyUI saved {names}: imagen keeps {KEPT_TEXT} only, so it kept none "
                    "of this job's files; remove that node from the workflow",
                    Failure.GENERATION_FAILED,
                ),
            )
        )
    saved = [i for i in saved if file_format(i["filename"]) is not None]
    index = next_image_index(state, len(saved))
    if index is None:
        return Record((JobSucceeded(success_result(state)),))
    img = saved[index]
    fmt = file_format(img["filename"]) or "png"
    req = state.request
    assert req is not None
    if len(saved) > 1 and not state.images:
        unchecked = check_outputs(state, saved)
        if unchecked is not None:
            return unchecked
    downloads = [ex for ex in current_downloads(state) if ex.sent_at.version > accepted_at(state)]
    store = StoreImage(
        request_id(state, "download"),
        view_url(state, img),
        dest_for(req.output_path, index, fmt),
        expected_format=fmt,
        overwrite=req.overwrite,
        timeout_s=60,
        auth_env=config_of(state).get("token_env"),
        index=index,
    )
    if not downloads or downloads[-1].outcome is None:
        return store
    last = downloads[-1].outcome
    if isinstance(last, RequestFailed) and last.error == "exists":
        return Record((JobFailed("output_exists", last.message, Failure.OUTPUT_EXISTS),))
    again = retry_view(state, store, "download", last, current_download_retries(state))
    if again is not None:
        return again
    if current_download_retries(state) < 1:
        return Record((RetryScheduled("download", 1, 0.2, "download failed"),))
    return Record(
        (
            JobFailed(
                "download_failed",
                f"could not fetch the image from ComfyUI: {outcome_text(last)}",
                Failure.DOWNLOAD_FAILED,
            ),
        )
    )


def view_url(state: JobState, img: dict) -> str:
    query = urlencode(
        {"filename": img["filename"], "subfolder": img["subfolder"], "type": img["type"]}
    )
    return f"{server_url(state)}/view?{query}"


def check_outputs(state: JobState, saved: list[dict]) -> Action | None:
    """Before a job with several outputs stores any, fetch and check each by its own format
    (StoreImage check_only): a corrupt last file then fails the job with none kept, never after
    earlier ones were stored without sidecars (issue #25, defect 3). ComfyUI is local and
    unpaid, so fetching twice costs little and nothing is thrown away. None: all checked."""
    checks = [ex for ex in exchanges(state, "check") if ex.sent_at.version > accepted_at(state)]
    for img in saved:
        url = view_url(state, img)
        mine = [ex for ex in checks if ex.sent.url == url]
        if any(
            isinstance(ex.outcome, ResponseReceived) and ex.outcome.status == 200 for ex in mine
        ):
            continue
        fmt = file_format(img["filename"]) or "png"
        check = StoreImage(
            request_id(state, "check"),
            url,
            "",
            expected_format=fmt,
            timeout_s=60,
            auth_env=config_of(state).get("token_env"),
            check_only=True,
        )
        if not mine or mine[-1].outcome is None:
            return check
        last = mine[-1].outcome
        n = sum(1 for ex in checks if isinstance(ex.outcome, RequestFailed))
        again = retry_view(state, check, "check", last, n)
        if again is not None:
            return again
        if len(mine) < 2:
            return Record((RetryScheduled("check", 1, 0.2, "check failed"),))
        return Record(
            (
                JobFailed(
                    "download_failed",
                    f"ComfyUI's output {img['filename']} (node {img['node']}) failed its "
                    f"check: {outcome_text(last)}; imagen kept none of this job's files",
                    Failure.DOWNLOAD_FAILED,
                ),
            )
        )
    return None


def retry_view(
    state: JobState, action: StoreImage, purpose: str, last: object, retries: int
) -> Action | None:
    """A scheduled retry of a /view fetch goes when due; a network failure is retried with
    backoff until the deadline (the file is done on the server: a blip must not lose it).
    None: neither, the caller decides."""
    if pending_retry(state, purpose) is not None:
        return replace(action, not_before=retry_time(state, purpose))
    if isinstance(last, RequestFailed) and last.error in NETWORK_ERRORS:
        if past_deadline(state):
            return still_unreachable(state, f"/view: {outcome_text(last)}")
        return Record(
            (RetryScheduled(purpose, retries + 1, backoff(retries + 1), outcome_text(last)),)
        )
    return None


NETWORK_ERRORS = ("refused", "timeout", "reset", "connection", "network", "dns", "unreachable")


def dest_for(output_path: str, index: int, fmt: str) -> str:
    """Where file `index` goes: beside the output path (core.job.image_path), its extension
    the file's own format when it is another image format (a .webp is never named .png)."""
    path = image_path(output_path, index)
    head, dot, ext = path.rpartition(".")
    if not dot or "/" in ext or KEPT_FORMATS.get(ext.lower()) in (None, fmt):
        return path
    return f"{head}.{fmt}"
