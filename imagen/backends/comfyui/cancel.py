"""Cancelling: look where the prompt is, do what stops it there, say what was verified."""

from __future__ import annotations

from typing import Any

from imagen.backends.comfyui.download import finished
from imagen.backends.comfyui.job import current_prompt, request, submitted_id
from imagen.backends.comfyui.wire import HistoryEntry, outcome_text, queue_ids, read_history
from imagen.backends.common import exchanges
from imagen.core.actions import Action, Record
from imagen.core.events import CancelRequested, JobCancelled, ResponseReceived
from imagen.core.job import JobState

CANCEL_CHECKS = 20  # /history checks (0.25 s apart) to see an interrupt take effect


# -- cancelling: look where the prompt is, do what stops it there, say what was verified ----


def cancel(state: JobState) -> Action:
    assert state.cancel is not None
    reason = state.cancel.reason
    rec = state.last(CancelRequested)
    floor = rec.version if rec else 0
    pid = current_prompt(state) or submitted_id(state)
    if pid is None:
        return Record((JobCancelled(reason, False, "nothing had been sent to ComfyUI"),))

    def since(purpose: str) -> list[Any]:
        return [ex for ex in exchanges(state, purpose) if ex.sent_at.version > floor]

    queue = since("cancel_queue")
    if not queue or queue[-1].outcome is None and len(queue) == 1:
        return request(state, "cancel_queue", "GET", "/queue", timeout_s=5)
    where = _where(queue[0].outcome, pid)
    if where == "unknown":
        return Record(
            (
                JobCancelled(
                    reason,
                    False,
                    f"could not ask ComfyUI where prompt {pid} is "
                    f"({outcome_text(queue[0].outcome)}); it may still run",
                ),
            )
        )
    if where == "pending":
        deletes = since("queue_delete")
        if not deletes:
            return request(state, "queue_delete", "POST", "/queue", {"delete": [pid]}, timeout_s=5)
        if len(queue) < 2:
            return request(state, "cancel_queue", "GET", "/queue", timeout_s=5)
        after = _where(queue[1].outcome, pid)
        if after == "gone":
            # Out of the queue: deleted, or it started (another prompt interrupted, the next
            # runs at once) and finished before the delete came. Only the history tells.
            looks = since("cancel_history")
            if not looks or looks[-1].outcome is None:
                return request(state, "cancel_history", "GET", f"/history/{pid}", timeout_s=5)
            o = looks[-1].outcome
            entry = (
                read_history(o.body, pid)
                if isinstance(o, ResponseReceived) and o.status == 200
                else "no answer"
            )
            if entry is None:
                return Record(
                    (
                        JobCancelled(
                            reason, True, f"deleted prompt {pid} from ComfyUI's queue (verified)"
                        ),
                    )
                )
            if isinstance(entry, HistoryEntry) and entry.ok and entry.images:
                return finished(state, entry)  # it ran: an image made is never thrown away
            return Record(
                (
                    JobCancelled(
                        reason,
                        isinstance(entry, HistoryEntry),
                        f"prompt {pid} started before it could be deleted from ComfyUI's queue "
                        + (
                            "and was stopped (verified)"
                            if isinstance(entry, HistoryEntry)
                            else f"; not verified ({entry})"
                        ),
                    ),
                )
            )
        if after != "running":
            return Record(
                (
                    JobCancelled(
                        reason,
                        False,
                        f"asked ComfyUI to delete queued prompt {pid}; "
                        f"not verified ({after}): it may still run",
                    ),
                )
            )
        where = "running"  # it started between the two looks: interrupt it
    if where == "running":
        if not since("interrupt"):
            return request(
                state, "interrupt", "POST", "/interrupt", {"prompt_id": pid}, timeout_s=5
            )
    looks = since("cancel_history")
    if looks and looks[-1].outcome is not None:
        o = looks[-1].outcome
        entry = read_history(o.body, pid) if isinstance(o, ResponseReceived) else None
        if isinstance(entry, HistoryEntry):
            if where == "running" and not entry.ok:
                return Record((JobCancelled(reason, True, f"interrupted prompt {pid} (verified)"),))
            if entry.ok and entry.images:
                # It finished before the cancel could stop it: cancelling saves nothing now, and
                # an image made is never thrown away. decide() fetches the rest once one is in.
                return finished(state, entry)
            return Record(
                (
                    JobCancelled(
                        reason,
                        False,
                        f"prompt {pid} had already finished on ComfyUI; the image was not fetched",
                    ),
                )
            )
        if where == "gone":
            return Record(
                (
                    JobCancelled(
                        reason,
                        False,
                        f"ComfyUI has prompt {pid} neither queued nor finished: nothing runs",
                    ),
                )
            )
        if len(looks) >= CANCEL_CHECKS:
            return Record(
                (
                    JobCancelled(
                        reason,
                        False,
                        f"asked ComfyUI to interrupt prompt {pid}; it had not stopped after "
                        f"{CANCEL_CHECKS * 0.25:g} s: it may still finish",
                    ),
                )
            )
        return request(
            state,
            "cancel_history",
            "GET",
            f"/history/{pid}",
            not_before=state.after(0.25),
            timeout_s=5,
        )
    return request(state, "cancel_history", "GET", f"/history/{pid}", timeout_s=5)


def _where(o: Any, pid: str) -> str:
    if not isinstance(o, ResponseReceived) or o.status != 200:
        return "unknown"
    ids = queue_ids(o.body)
    if ids is None:
        return "unknown"
    if pid in ids[0]:
        return "running"
    if pid in ids[1]:
        return "pending"
    return "gone"
