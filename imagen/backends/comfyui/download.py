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
    next_image_index,
    pending_retry,
    request_id,
    retry_time,
)
from imagen.core.actions import Action, Record, StoreImage
from imagen.core.events import JobFailed, JobSucceeded, RequestFailed, RetryScheduled
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
    query = urlencode(
        {"filename": img["filename"], "subfolder": img["subfolder"], "type": img["type"]}
    )
    downloads = [ex for ex in current_downloads(state) if ex.sent_at.version > accepted_at(state)]
    store = StoreImage(
        request_id(state, "download"),
        f"{server_url(state)}/view?{query}",
        dest_for(req.output_path, index, fmt),
        expected_format=fmt,
        overwrite=req.overwrite,
        timeout_s=60,
        auth_env=config_of(state).get("token_env"),
        index=index,
    )
    if not downloads or downloads[-1].outcome is None:
        return store
    if pending_retry(state, "download") is not None:
        return replace(store, not_before=retry_time(state, "download"))
    last = downloads[-1].outcome
    if isinstance(last, RequestFailed) and last.error == "exists":
        return Record((JobFailed("output_exists", last.message, Failure.OUTPUT_EXISTS),))
    if isinstance(last, RequestFailed) and last.error in NETWORK_ERRORS:
        # The image is done on the server: a blip must not lose it.
        if past_deadline(state):
            return still_unreachable(state, f"/view: {outcome_text(last)}")
        n = current_download_retries(state)
        return Record((RetryScheduled("download", n + 1, backoff(n + 1), outcome_text(last)),))
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


NETWORK_ERRORS = ("refused", "timeout", "reset", "connection", "network", "dns", "unreachable")


def dest_for(output_path: str, index: int, fmt: str) -> str:
    """Where file `index` goes: beside the output path (core.job.image_path), its extension
    the file's own format when it is another image format (a .webp is never named .png)."""
    path = image_path(output_path, index)
    head, dot, ext = path.rpartition(".")
    if not dot or "/" in ext or KEPT_FORMATS.get(ext.lower()) in (None, fmt):
        return path
    return f"{head}.{fmt}"
