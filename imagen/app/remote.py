"""The team's Supabase tables through supabase-py (imported lazily: it costs ~160 ms).

`mai.imagen_usage` takes usage rows with an ignore-duplicates upsert on `id`, so re-sending is
harmless; `mai.imagen_ledger_heads` takes head reports the same way on `(ledger_id, position)`.
Reads page past PostgREST's 1000-row cap. Every error becomes one line naming the fix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from imagen.app.config import Config
from imagen.app.errors import UserError
from imagen.app.exit_codes import ExitCode
from imagen.runner.environment import Environment

PAGE = 1000  # PostgREST/Supabase max rows per read
ATTEMPTS = 3
USAGE_TABLE = "imagen_usage"
HEADS_TABLE = "imagen_ledger_heads"
HEAD_COLUMNS = "ledger_id,machine,location,position,hash,reported_at"
UPGRADE_HINT = "run `imagen db upgrade usage` (it migrates the tables and re-applies the grants)"


class SyncError(UserError):
    def __init__(self, message: str) -> None:
        super().__init__(message, ExitCode.BACKEND_UNAVAILABLE)


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
            return f"a usage table is missing in Supabase ({message}): {UPGRADE_HINT}"
        if code in ("PGRST204", "42703"):
            return f"the usage tables are older than this imagen ({message}): {UPGRADE_HINT}"
        if code == "42501":
            return (
                f"Supabase refused access ({message}): {UPGRADE_HINT}, and use the service_role key"
            )
        return f"Supabase error {code}: {message}"
    name = type(exc).__name__
    return f"cannot reach Supabase at {cfg.usage.supabase_url} ({name}: {exc})"


def _retryable(exc: BaseException) -> bool:
    import httpx
    from postgrest import APIError

    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, APIError) and str(exc.code or "").startswith(("5", "PGRST00"))


class Remote:
    """One Supabase project's `mai` schema, as the service_role key sees it."""

    def __init__(self, cfg: Config, env: Environment, timeout_s: float) -> None:
        if not cfg.usage.supabase_url:
            raise UserError("no Supabase configured: set [usage] supabase_url or SUPABASE_URL")
        self.cfg = cfg
        self.sleep = env.sleep
        key = env.env.get(cfg.usage.key_env, "")
        if not key:
            raise SyncError(
                f"set {cfg.usage.key_env} to the Supabase service_role key to sync usage"
            )
        import httpx
        from supabase import ClientOptions, create_client

        # Our own httpx client: a real float timeout (the library truncates floats to int
        # seconds) and no DeprecationWarnings about timeout/verify.
        http = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)))
        options = ClientOptions(httpx_client=http, postgrest_client_retry=False)
        try:
            self.client = create_client(cfg.usage.supabase_url, key, options).schema("mai")
        except Exception as exc:  # bad URL shapes are reported by the library as generic errors
            raise SyncError(
                f"Supabase client: {exc} (check [usage] supabase_url / SUPABASE_URL)"
            ) from None

    def _call(self, call: Callable[[], Any]) -> Any:
        # supabase-py never retries POST; our writes are ignore-duplicates upserts, so we may.
        for attempt in range(ATTEMPTS):
            try:
                return call()
            except Exception as exc:
                if attempt + 1 == ATTEMPTS or not _retryable(exc):
                    raise SyncError(explain(exc, self.cfg)) from None
                self.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    def _rows(self, build: Callable[[], Any], *, limit: int | None = None) -> list[dict[str, Any]]:
        """Every row of a query (ordered by the caller), paged; at most `limit`."""
        out: list[dict[str, Any]] = []
        while True:
            size = PAGE if limit is None else min(PAGE, limit - len(out))

            def page(offset: int = len(out), size: int = size) -> Any:
                return build().range(offset, offset + size - 1).execute()

            data = self._call(page).data
            if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
                raise SyncError("Supabase answered a read with something other than rows")
            out.extend(data)
            if len(data) < size or (limit is not None and len(out) >= limit):
                return out

    # -- usage ---------------------------------------------------------------------------

    def send_usage(self, rows: list[dict[str, Any]]) -> None:
        self._call(
            lambda: (
                self.client.table(USAGE_TABLE)
                .upsert(rows, on_conflict="id", ignore_duplicates=True, returning="minimal")
                .execute()
            )
        )

    def usage_rows(
        self, columns: str, since: str | None, until: str | None
    ) -> list[dict[str, Any]]:
        def build() -> Any:
            q = self.client.table(USAGE_TABLE).select(columns)
            if since:
                q = q.gte("created_at", since)
            if until:
                q = q.lt("created_at", until)
            return q.order("created_at", desc=True).order("id")

        return self._rows(build)

    # -- chain heads ---------------------------------------------------------------------

    def heads_of(self, ledger_id: str, *, latest_only: bool = False) -> list[dict[str, Any]]:
        """Reports of one ledger, furthest first."""

        def build() -> Any:
            return (
                self.client.table(HEADS_TABLE)
                .select(HEAD_COLUMNS)
                .eq("ledger_id", ledger_id)
                .order("position", desc=True)
            )

        return self._rows(build, limit=1 if latest_only else None)

    def heads_of_other_ledgers(
        self, machine: str, ledger_id: str | None, location: str | None = None
    ) -> list[dict[str, Any]]:
        """Reports from `machine` of ledgers other than `ledger_id` (at `location` if given)."""

        def build() -> Any:
            q = self.client.table(HEADS_TABLE).select(HEAD_COLUMNS).eq("machine", machine)
            if ledger_id is not None:
                q = q.neq("ledger_id", ledger_id)
            if location is not None:
                q = q.eq("location", location)
            return q.order("position", desc=True).order("ledger_id")

        return self._rows(build)

    def report_head(self, report: dict[str, Any]) -> None:
        # reported_at is left to the database's clock.
        self._call(
            lambda: (
                self.client.table(HEADS_TABLE)
                .upsert(
                    report,
                    on_conflict="ledger_id,position",
                    ignore_duplicates=True,
                    returning="minimal",
                )
                .execute()
            )
        )
