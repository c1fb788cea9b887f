"""Usage sync to Supabase (`mai.imagen_usage`) through supabase-py, imported lazily.

The local usage table is the outbox: rows after the `imagen.usage.synced` checkpoint are sent in
batches with an ignore-duplicates upsert on `id`, so re-sending is harmless; the checkpoint
moves only once Supabase confirmed a batch. The ledger's chain head goes to
`mai.imagen_ledger_heads` so `imagen audit --remote` can show history was not rewritten.
"""

from __future__ import annotations

import socket
import time
from dataclasses import asdict, dataclass
from typing import Any

from imagen.app.config import Config
from imagen.app.errors import UserError
from imagen.app.exit_codes import ExitCode
from imagen.projections.usage import table as usage_local
from imagen.projections.usage.fold import COLUMNS
from imagen.runner.environment import Environment
from ledger import EventStore

BATCH = 500
PAGE = 1000  # PostgREST/Supabase max rows per read
ATTEMPTS = 3
USAGE_TABLE = "imagen_usage"
HEADS_TABLE = "imagen_ledger_heads"


class SyncError(UserError):
    def __init__(self, message: str) -> None:
        super().__init__(message, ExitCode.BACKEND_UNAVAILABLE)


@dataclass(frozen=True)
class SyncResult:
    sent: int
    batches: int
    pending: int
    head_position: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _client(cfg: Config, env: Environment, timeout_s: float) -> Any:
    import httpx
    from supabase import ClientOptions, create_client

    url = cfg.usage.supabase_url
    key = env.env.get(cfg.usage.key_env, "")
    if not key:
        raise SyncError(f"set {cfg.usage.key_env} to the Supabase service_role key to sync usage")
    # Our own httpx client: a real float timeout (the library truncates floats to int seconds)
    # and no DeprecationWarnings about timeout/verify.
    http = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)))
    options = ClientOptions(httpx_client=http, postgrest_client_retry=False)
    try:
        return create_client(url, key, options).schema("mai")
    except Exception as exc:  # bad URL shapes are reported by the library as generic errors
        raise SyncError(
            f"Supabase client: {exc} (check [usage] supabase_url / SUPABASE_URL)"
        ) from None


def explain(exc: BaseException, cfg: Config) -> str:
    """Turn a client error into one line that names the fix."""
    from postgrest import APIError

    if isinstance(exc, APIError):
        code, message = str(exc.code or ""), str(exc.message or "")
        if (
            code in ("PGRST301", "PGRST302", "PGRST303")
            or code == "401"
            or "Invalid API key" in message
        ):
            return f"Supabase rejected the key in {cfg.usage.key_env} ({message}); use the project's service_role key"
        if code == "PGRST106":
            return (
                "Supabase does not expose schema mai: add it under Project Settings > Data API > "
                "Exposed schemas"
            )
        if code in ("PGRST205", "42P01"):
            return "table mai.imagen_usage is missing: run `imagen db upgrade usage`"
        if code == "42501":
            return f"Supabase refused access ({message}): run `imagen db upgrade usage` (grants) and use the service_role key"
        return f"Supabase error {code}: {message}"
    name = type(exc).__name__
    return f"cannot reach Supabase at {cfg.usage.supabase_url} ({name}: {exc})"


def _retryable(exc: BaseException) -> bool:
    import httpx
    from postgrest import APIError

    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, APIError) and str(exc.code or "").startswith(("5", "PGRST00"))


def _with_retries(call: Any, cfg: Config, sleep: Any) -> Any:
    # supabase-py never retries POST; the ignore-duplicates upsert on id makes our retry safe.
    for attempt in range(ATTEMPTS):
        try:
            return call()
        except Exception as exc:
            if attempt + 1 == ATTEMPTS or not _retryable(exc):
                raise SyncError(explain(exc, cfg)) from None
            sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


def ledger_id(store: EventStore) -> str | None:
    """A stable id for this ledger: the hash of its first event."""
    first = next(iter(store.read_all(0, batch=1)), None)
    return first.hash if first else None


def sync(
    store: EventStore, cfg: Config, env: Environment, *, timeout_s: float = 10.0
) -> SyncResult:
    usage_local.catch_up(store)
    client = _client(cfg, env, timeout_s)
    sent = batches = 0
    while True:
        rows = usage_local.unsynced(store, BATCH)
        if not rows:
            break
        payload = [{c: r[c] for c in COLUMNS} for r in rows]
        _with_retries(
            lambda p=payload: (
                client.table(USAGE_TABLE)
                .upsert(p, on_conflict="id", ignore_duplicates=True, returning="minimal")
                .execute()
            ),
            cfg,
            env.sleep,
        )
        store.set_checkpoint(usage_local.SYNCED, rows[-1]["seq"])
        sent += len(rows)
        batches += 1
    head = store.head()
    lid = ledger_id(store)
    if lid:
        report = {
            "ledger_id": lid,
            "machine": socket.gethostname(),
            "position": head.position,
            "hash": head.hash,
            "reported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        _with_retries(
            lambda: (
                client.table(HEADS_TABLE)
                .upsert(report, on_conflict="ledger_id", returning="minimal")
                .execute()
            ),
            cfg,
            env.sleep,
        )
    return SyncResult(sent, batches, len(usage_local.unsynced(store, 10**9)), head.position)


def fetch(
    cfg: Config, env: Environment, *, since: str | None, until: str | None
) -> list[dict[str, Any]]:
    """Every remote row in range, paged (reads are capped at 1000 rows)."""
    if not cfg.usage.supabase_url:
        raise UserError("no Supabase configured: set [usage] supabase_url or SUPABASE_URL")
    client = _client(cfg, env, 30.0)
    out: list[dict[str, Any]] = []
    while True:

        def page(offset: int = len(out)) -> Any:
            q = client.table(USAGE_TABLE).select(",".join(COLUMNS))
            if since:
                q = q.gte("created_at", since)
            if until:
                q = q.lt("created_at", until)
            return (
                q.order("created_at", desc=True)
                .order("id")
                .range(offset, offset + PAGE - 1)
                .execute()
            )

        rows = _with_retries(page, cfg, env.sleep).data
        out.extend(rows)
        if len(rows) < PAGE:
            return out


def group(rows: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        k = tuple(r.get(key) for key in keys)
        g = groups.setdefault(
            k,
            {**dict(zip(keys, k, strict=True)), "images": 0, "cost_usd": 0.0, "_lat": 0.0, "_n": 0},
        )
        g["images"] += 1
        g["cost_usd"] += float(r.get("cost_usd_estimate") or 0)
        if r.get("latency_ms") is not None:
            g["_lat"] += float(r["latency_ms"])
            g["_n"] += 1
    out = []
    for k in sorted(groups, key=lambda t: tuple(str(x) for x in t)):
        g = groups[k]
        g["mean_latency_ms"] = g.pop("_lat") / g["_n"] if g["_n"] else None
        g.pop("_n")
        out.append(g)
    return out


def compare_head(store: EventStore, cfg: Config, env: Environment) -> list[dict[str, Any]]:
    """The head last reported must still be in the local chain with the same hash."""
    lid = ledger_id(store)
    if not lid:
        return []
    client = _client(cfg, env, 10.0)
    rows = _with_retries(
        lambda: client.table(HEADS_TABLE).select("*").eq("ledger_id", lid).execute(), cfg, env.sleep
    ).data
    if not rows:
        return [
            {
                "kind": "remote",
                "message": "no chain head reported for this ledger yet (run `imagen usage sync`)",
            }
        ]
    reported = rows[0]
    local = next(iter(store.read_all(int(reported["position"]) - 1, batch=1)), None)
    if (
        local is None
        or local.position != int(reported["position"])
        or local.hash != reported["hash"]
    ):
        return [
            {
                "kind": "remote",
                "position": reported["position"],
                "message": f"the chain head reported to Supabase (position {reported['position']}, "
                f"{reported['hash'][:16]}) is not in the local ledger: history was rewritten",
            }
        ]
    return []
