"""Downloading a succeeded prediction's outputs, one image at a time."""

from __future__ import annotations

from typing import Any

from imagen.backends.common import (
    current_downloads,
    next_image_index,
    pending_retry,
    request_id,
    run_start,
)
from imagen.backends.replicate.job import RETRIES_PER_RUN, api_base, backoff, setting, token_env
from imagen.backends.replicate.wire import describe, origin, outputs, same_origin
from imagen.core.actions import Action, Halt, Record, StoreImage
from imagen.core.events import JobFailed, RequestFailed, ResponseReceived, RetryScheduled
from imagen.core.failures import Failure
from imagen.core.job import JobState, image_path

# -- downloading ------------------------------------------------------------------------------


LOCAL_ERRORS = ("write", "exists")


def download(state: JobState, snap: dict[str, Any]) -> Action:
    req = state.request
    assert req is not None
    urls = outputs(snap)
    if not urls or snap.get("data_removed") is True:
        return Record(
            (
                JobFailed(
                    "output_deleted",
                    "Replicate no longer has this prediction's output "
                    "(API outputs are kept about an hour); the prediction was still paid for",
                    Failure.OUTPUT_LOST,
                ),
            )
        )
    index = next_image_index(state, len(urls))
    if index is None:  # every output is on disk (decide succeeds first; kept for safety)
        index = len(urls) - 1
    url = urls[index]
    if not url.startswith("data:") and origin(url) is None:
        return Record(
            (
                JobFailed(
                    "unexpected",
                    f"Replicate gave an output imagen will not fetch: {url[:200]!r} "
                    "(only http(s) URLs without credentials and data: URIs)",
                    Failure.UNEXPECTED,
                ),
            )
        )
    max_mb = setting(state, "max_image_mb", 64)
    store = StoreImage(
        request_id(state, "download"),
        url,
        image_path(req.output_path, index),
        expected_format=req.params.get("output_format"),
        max_bytes=int((max_mb if max_mb > 0 else 64) * 1024 * 1024),
        overwrite=req.overwrite,
        timeout_s=60,
        auth_env=token_env(state) if same_origin(url, api_base(state)) else None,
        index=index,
    )
    downloads = current_downloads(state)  # this image's attempts (each image retried alone)
    if not downloads or pending_retry(state, "download") is not None:
        return store
    last = downloads[-1]
    o = last.outcome
    if o is None or last.sent_at.version <= run_start(state):
        return store  # died mid-download, or a new run after a failure: downloading is free
    if isinstance(o, ResponseReceived) and o.status in (404, 410):
        return Record(
            (
                JobFailed(
                    "output_deleted",
                    f"Replicate no longer serves the output (HTTP {o.status}); "
                    "API outputs are kept about an hour; the prediction was still paid for",
                    Failure.OUTPUT_LOST,
                ),
            )
        )
    if isinstance(o, RequestFailed) and o.error in LOCAL_ERRORS:
        # Paid; the image is at the URL recorded in the prediction while Replicate keeps it.
        fix = "move it away" if o.error == "exists" else "fix that"
        return Halt(
            f"the prediction is paid but its image cannot be saved: {o.message}; {fix}, then "
            f"`imagen resume {state.job_id}` (Replicate keeps outputs about an hour)",
        )
    tries = sum(1 for ex in downloads if ex.sent_at.version > run_start(state))
    if isinstance(o, RequestFailed) and o.error in ("invalid_image", "too_large"):
        if tries < 2:
            return Record((RetryScheduled("download", 1, 0.2, f"download: {describe(o)}"[:300]),))
        return Record(
            (
                JobFailed(
                    "download_failed",
                    f"could not download the image: {describe(o)}",
                    Failure.DOWNLOAD_FAILED,
                ),
            )
        )
    if tries <= RETRIES_PER_RUN:
        return Record(
            (
                RetryScheduled(
                    "download", tries, backoff(state, tries - 1), f"download: {describe(o)}"[:300]
                ),
            )
        )
    return Halt(
        f"could not download the image ({describe(o)}); the prediction is paid: "
        f"`imagen resume {state.job_id}` tries again (Replicate keeps outputs about an hour)",
        Failure.UNREACHABLE,
    )
