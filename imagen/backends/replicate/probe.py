"""`imagen backends` and `backends --check` for Replicate: is it configured, can it be reached."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from imagen.backends.common import no_checks, nothing_missing
from imagen.backends.replicate.inputs import api_base_of, token_env_of

check_requests = no_checks
check_verdict = nothing_missing


def status(options: Mapping[str, Any], env: Mapping[str, str]) -> str:
    name = options.get("api_token_env") or "REPLICATE_API_TOKEN"
    return "ok" if env.get(name) else f"not configured (set {name})"


def probe_request(options: Mapping[str, Any]) -> tuple[str, str, str | None]:
    return ("GET", f"{api_base_of(options)}/v1/predictions", token_env_of(options))


def probe_verdict(status_code: int, body: Any) -> str:
    if status_code == 200:
        return "ok (reachable, token accepted)"
    if status_code == 401:
        return "token rejected (check the token in the api_token_env variable)"
    return f"unexpected answer: HTTP {status_code}"
