"""`imagen mcp` as an agent meets it: the official SDK's client (mcp.client.stdio) starts the
server as a real stdio subprocess against the Replicate double. One session covers the tools
listed, a generate recorded under the client's name with progress notified and its image read
back as a resource, a detached generate followed by `wait`, and a generate over budget answered
with the JSON error object."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from imagen.app import budgets
from imagen.testing.replicate import ReplicateDouble
from tests.support.cli import Sandbox
from tests.support.doubles import TOKEN, rep_box

TOOLS = {
    "generate",
    "quote",
    "wait",
    "show",
    "jobs",
    "resume",
    "cancel",
    "backends",
    "whoami",
    "usage",
}


async def _session_with_the_server(box: Sandbox) -> dict[str, Any]:
    """Everything the checks need from one server process."""
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "imagen", "mcp"], env=box.env, cwd=str(box.root)
    )
    seen: dict[str, Any] = {"progress": []}

    async def progress(value: float, total: float | None, message: str | None) -> None:
        seen["progress"].append((value, message))

    with anyio.fail_after(120):  # generous: a hang fails, a slow machine does not
        async with stdio_client(params) as (read, write):
            client = types.Implementation(name="agent-under-test", version="1")
            async with ClientSession(read, write, client_info=client) as session:
                await session.initialize()
                seen["tools"] = {t.name for t in (await session.list_tools()).tools}
                seen["made"] = await session.call_tool(
                    "generate",
                    {"prompt": "a fox by the sea", "seed": 5},
                    progress_callback=progress,
                )
                job = json.loads(seen["made"].content[0].text)
                seen["listed"] = [r.uri for r in (await session.list_resources()).resources]
                seen["read"] = await session.read_resource(f"imagen://job/{job['job_id']}/image/1")
                seen["detached"] = await session.call_tool(
                    "generate", {"prompt": "an owl", "detach": True}
                )
                detached = json.loads(seen["detached"].content[0].text)
                seen["waited"] = await session.call_tool(
                    "wait", {"job_ids": [detached["job_id"]], "timeout_s": 60}
                )
                seen["refused"] = await session.call_tool("generate", {"prompt": "one too many"})
                seen["whoami"] = await session.call_tool("whoami", {})
    return seen


def test_an_agent_generates_through_the_sdk_client_and_budgets_hold(
    tmp_path: Path, rep: ReplicateDouble
) -> None:
    box = rep_box(tmp_path, rep)
    box.root.mkdir(exist_ok=True)
    store = box.store()
    try:  # two images ($0.003 each on flux-schnell) fit, a third does not
        budgets.set_budget(store, "agent-under-test", "0.007", "total", None, "test")
    finally:
        store.close()

    seen = anyio.run(_session_with_the_server, box)

    assert seen["tools"] == TOOLS
    made = seen["made"]
    assert not made.is_error, made.content[0].text
    job = json.loads(made.content[0].text)
    assert job == made.structured_content
    assert job["status"] == "succeeded" and job["cost_usd"] == "0.003000"
    image = Path(job["image"])
    assert image.is_file()
    # Recorded under the client's name (no MAI_FROM_ID, no tmux in the sandbox).
    [requested] = [e for e in box.events(job["job_id"]) if e.type == "JobRequested"]
    assert json.loads(requested.data_json)["caller"] == "agent-under-test"
    assert json.loads(seen["whoami"].content[0].text)["caller"] == "agent-under-test"
    # Progress arrived while it ran, always increasing.
    values = [v for v, _ in seen["progress"]]
    assert values and values == sorted(set(values))
    assert any("ImageStored" in (m or "") for _, m in seen["progress"])
    # The image as a resource: listed, and read back byte for byte with its type.
    uri = f"imagen://job/{job['job_id']}/image/1"
    assert uri in seen["listed"]
    assert any(getattr(c, "uri", None) == uri for c in made.content)  # linked from the result
    [content] = seen["read"].contents
    assert content.mime_type == "image/png"
    assert base64.b64decode(content.blob) == image.read_bytes()
    # Detached: the job object as soon as it is recorded; `wait` returns it ended.
    detached = json.loads(seen["detached"].content[0].text)
    # (how far it got by then depends on the machine: only that it was not refused)
    assert not seen["detached"].is_error and detached["status"] != "failed"
    waited = json.loads(seen["waited"].content[0].text)
    assert waited["pending"] == [] and [j["job_id"] for j in waited["jobs"]] == [detached["job_id"]]
    assert waited["jobs"][0]["status"] == "succeeded" and Path(waited["jobs"][0]["image"]).is_file()
    # Over budget: a tool error whose text is the JSON error object; nothing was sent for it.
    refused = seen["refused"]
    assert refused.is_error
    error = json.loads(refused.content[0].text)["error"]
    assert error["code"] == "over_budget" and error["exit"] == 9
    assert "over budget" in error["message"] and error["job_id"] in box.job_ids()
    assert len(rep.predictions) == 2
    assert TOKEN not in box.ledger_text()


def test_the_servers_own_identity_comes_before_the_clients_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imagen.cli.mcp_server import Imagen

    monkeypatch.setenv("MAI_FROM_ID", "agent-7")
    shared = Imagen(str(tmp_path / "config.toml"), 0)
    assert shared.environment("some-client").env["MAI_FROM_ID"] == "agent-7"
    assert shared.caller_source == "env"
    monkeypatch.delenv("MAI_FROM_ID")
    monkeypatch.delenv("TMUX", raising=False)
    other = Imagen(str(tmp_path / "config.toml"), 0)
    assert other.environment("some-client").env["MAI_FROM_ID"] == "some-client"
    assert other.caller_source == "client"
