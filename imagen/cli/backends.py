"""`imagen backends [--check]`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from imagen.cli import context

if TYPE_CHECKING:
    from imagen.backends.contract import Backend


def backends(check: bool = False, json_output: bool = False) -> None:
    """List configured backends with type, model and status.

    Parameters
    ----------
    check
        Probe each backend over the network (short timeout) and say what was found.
    json_output
        Print JSON.
    """
    from imagen import backends as registry

    cfg = context.config()
    rows = []
    for name, b in cfg.backends.items():
        module = registry.load(b.type)
        status = module.status(b.options, context.ENV.env)
        if check and status == "ok":
            status = _probe(module, b.options)
        rows.append(
            {
                "name": name,
                "type": b.type,
                "model": b.model,
                "status": status,
                "default": name == cfg.default_backend,
            }
        )
    if json_output:
        print(json.dumps(rows, indent=2))
        return
    width = max(len(r["name"]) for r in rows) + 2
    for r in rows:
        mark = "*" if r["default"] else " "
        print(f"{mark} {r['name']:<{width}}{r['type']:<11}{r['model']:<40}{r['status']}")


def _probe(module: Backend, options: dict[str, Any]) -> str:
    from imagen.runner.http import Http, TransportFailure

    method, url, auth_env = module.probe_request(options)
    headers = {}
    if auth_env and context.ENV.env.get(auth_env):
        headers["Authorization"] = f"Bearer {context.ENV.env[auth_env]}"
    try:
        reply = Http().send(method, url, headers=headers, timeout_s=3.0)
    except TransportFailure as f:
        return f"unreachable ({f.kind}: {url})"
    return module.probe_verdict(reply.status, reply.body())
