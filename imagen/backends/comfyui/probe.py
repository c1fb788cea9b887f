"""`imagen backends` and `backends --check` for ComfyUI: is it configured, reachable, and does
it have the node types and model files the job's graph needs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from imagen.backends.comfyui.graph import (
    MISSING_MODEL_NODES,
    SETUP_DOC,
    custom_graph,
    flux_schnell_graph,
)
from imagen.backends.comfyui.inputs import DEFAULT_URL
from imagen.backends.comfyui.outputs import refusal
from imagen.backends.comfyui.wire import as_dict, system_facts


def status(options: Mapping[str, Any], env: Mapping[str, str]) -> str:
    token_env = options.get("token_env")
    if token_env and not env.get(token_env):
        return f"not configured (set {token_env})"
    return "ok"


def probe_request(options: Mapping[str, Any]) -> tuple[str, str, str | None]:
    return (
        "GET",
        f"{str(options.get('url') or DEFAULT_URL).rstrip('/')}/system_stats",
        options.get("token_env"),
    )


def probe_verdict(status_code: int, body: Any) -> str:
    if status_code == 200 and isinstance(body, dict):
        about = system_facts(body)
        version = about["comfyui_version"] or "?"
        return f"ok (ComfyUI {version}, {about['device']['name'] or 'unknown device'})"
    if status_code in (401, 403):
        return "rejected by the proxy (check token_env)"
    return f"unexpected answer: HTTP {status_code}"


def _check_graph(options: Mapping[str, Any]) -> dict[str, Any]:
    params = {"seed": 1, "steps": 4, "width": 1024, "height": 1024}
    if isinstance(options.get("workflow_content"), str):
        return custom_graph(options["workflow_content"], "x", params, options, "p")
    return flux_schnell_graph("x", params, options, "p")


def check_requests(options: Mapping[str, Any]) -> list[tuple[str, str]]:
    """After a good probe: GET /object_info/{class} for each node type the job's graph uses
    (the loaders list the model files the server can load)."""
    try:
        graph = _check_graph(options)
    except ValueError:
        return []
    base = str(options.get("url") or DEFAULT_URL).rstrip("/")
    classes = sorted(
        {
            node["class_type"]
            for node in graph.values()
            if isinstance(node, dict) and isinstance(node.get("class_type"), str)
        }
    )
    return [("GET", f"{base}/object_info/{cls}") for cls in classes]


def check_verdict(options: Mapping[str, Any], answers: list[tuple[int | None, Any]]) -> str | None:
    """None when the server can run the job's graph; else what is missing, by name: model
    files a loader does not list, node types the server does not know."""
    if isinstance(options.get("workflow"), str) and "workflow_content" not in options:
        return None
    try:
        graph = _check_graph(options)
    except ValueError as exc:
        return f"workflow {options.get('workflow')} is not valid JSON ({exc})"
    refused = refusal(options.get("workflow"), as_dict(graph))
    if refused is not None:
        return refused
    info: dict[str, Any] = {}
    for (_method, url), (status, body) in zip(check_requests(options), answers, strict=False):
        cls = url.rsplit("/", 1)[-1]
        if status is None:
            return f"unreachable while asking /object_info/{cls}"
        if status != 200:
            return f"/object_info/{cls}: HTTP {status}"
        info[cls] = as_dict(body).get(cls)
    unknown: set[str] = set()
    missing: list[str] = []
    for node in graph.values():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            continue
        cls = node["class_type"]
        if cls not in info:
            continue
        spec = info[cls]
        if not isinstance(spec, dict):
            unknown.add(cls)
            continue
        inputs = as_dict(node.get("inputs"))
        declared = {
            **as_dict(as_dict(spec.get("input")).get("required")),
            **as_dict(as_dict(spec.get("input")).get("optional")),
        }
        for name, value in inputs.items():
            choices = declared.get(name)
            if not (isinstance(choices, list) and choices and isinstance(choices[0], list)):
                continue  # not a combo (a list of allowed values)
            if isinstance(value, str) and value not in choices[0]:
                what = "model file" if cls in MISSING_MODEL_NODES else "value"
                missing.append(f"{what} {value} ({cls}.{name})")
    problems = []
    if missing:
        problems.append("missing " + ", ".join(missing) + f"; see {SETUP_DOC}")
    if unknown:
        problems.append("node types not installed: " + ", ".join(sorted(unknown)))
    return "; ".join(problems) or None
