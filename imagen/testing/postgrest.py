"""A PostgREST-protocol-faithful HTTP server over a real PostgreSQL, for tests and the demo.

It answers what supabase-py sends to `<project url>/rest/v1/<table>` the way a Supabase project
(gateway + PostgREST v13+) does: the same status codes, headers and error bodies, with the
database deciding permissions because each request runs as the JWT's role (`SET LOCAL ROLE`).
See /work/shared/reference/supabase.md; PostgREST's source (Error.hs, Response.hs,
RangeQuery.hs, Query/*.hs) is the authority for the behaviour reproduced here.

    with PostgrestDouble(db_url, secret) as api:
        client = create_client(api.url, make_jwt(secret, "service_role"))

Run standalone: `python -m imagen.testing.postgrest --db URL --jwt-secret S [--port N]`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import re
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import psycopg
from psycopg import sql

__all__ = [
    "PostgrestDouble",
    "ensure_supabase_roles",
    "make_jwt",
    "main",
]

REST_PREFIX = "/rest/v1/"
SUPABASE_ROLES = ("anon", "authenticated", "service_role")
_JSON = "application/json; charset=utf-8"
_SINGULAR = "application/vnd.pgrst.object+json"
_JWT_SKEW_SECONDS = 30  # PostgREST's allowedSkewSeconds for exp/nbf/iat
# Query parameters PostgREST reserves; every other key is a filter.
_RESERVED = frozenset({"select", "order", "limit", "offset", "columns", "on_conflict"})
_OPERATORS = {
    "eq": "=",
    "neq": "<>",
    "gt": ">",
    "gte": ">=",
    "lt": "<",
    "lte": "<=",
    "like": "LIKE",
    "ilike": "ILIKE",
    "match": "~",
    "imatch": "~*",
}
_IS_VALUES = {
    "null": "NULL",
    "not_null": "NOT NULL",
    "true": "TRUE",
    "false": "FALSE",
    "unknown": "UNKNOWN",
}
_CAST_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_ ]*(\[\])?$")


# --------------------------------------------------------------------------------------- JWT


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_jwt(secret: str, role: str, exp: float | None = None) -> str:
    """An HS256 JWT with a `role` claim, shaped like Supabase's legacy anon/service_role keys."""
    header = {"alg": "HS256", "typ": "JWT"}
    claims: dict[str, Any] = {"iss": "supabase", "role": role, "iat": int(time.time())}
    if exp is not None:
        claims["exp"] = int(exp)
    compact = (",", ":")
    signing_input = (
        f"{_b64url(json.dumps(header, separators=compact).encode())}."
        f"{_b64url(json.dumps(claims, separators=compact).encode())}"
    )
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(signature)}"


def _signature_ok(token: str, secret: str) -> bool:
    parts = token.split(".")
    if len(parts) != 3:
        return False
    try:
        header = json.loads(_b64url_decode(parts[0]))
        given = _b64url_decode(parts[2])
    except ValueError:
        return False
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        return False
    expected = hmac.new(secret.encode(), f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256)
    return hmac.compare_digest(expected.digest(), given)


def _verify_jwt(token: str, secret: str, now: float) -> dict[str, Any]:
    """PostgREST's Auth/Jwt.hs checks, raising its PGRST301/PGRST303 errors."""
    if not token:
        raise _jwt_error("PGRST301", "Empty JWT is sent in Authorization header")
    parts = token.split(".")
    if len(parts) != 3:
        raise _jwt_error("PGRST301", f"Expected 3 parts in JWT; got {len(parts)}")
    if not _signature_ok(token, secret):
        raise _jwt_error("PGRST301", "JWT cryptographic operation failed")
    try:
        claims = json.loads(_b64url_decode(parts[1]))
    except ValueError:
        raise _jwt_error("PGRST303", "Parsing claims failed") from None
    if not isinstance(claims, dict):
        raise _jwt_error("PGRST303", "Parsing claims failed")
    for name, message, in_past in (
        ("exp", "JWT expired", True),
        ("nbf", "JWT not yet valid", False),
        ("iat", "JWT issued at future", False),
    ):
        if name not in claims:
            continue
        value = claims[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _jwt_error("PGRST303", f"The JWT '{name}' claim must be a number")
        if in_past and now - _JWT_SKEW_SECONDS > value:
            raise _jwt_error("PGRST303", message)
        if not in_past and now + _JWT_SKEW_SECONDS < value:
            raise _jwt_error("PGRST303", message)
    return claims


def _jwt_error(code: str, message: str) -> _ApiError:
    header = f'Bearer error="invalid_token", error_description={json.dumps(message)}'
    return _ApiError(401, code, message, headers=[("WWW-Authenticate", header)])


# ------------------------------------------------------------------------------------ errors


class _ApiError(Exception):
    """An error answered with PostgREST's body `{code, details, hint, message}`."""

    def __init__(
        self,
        status: int,
        code: str | None,
        message: str,
        details: str | None = None,
        hint: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
        gateway: bool = False,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details, self.hint, self.headers, self.gateway = details, hint, list(headers), gateway

    def response(self) -> _Response:
        if self.gateway:  # Supabase's API gateway answers before PostgREST, in its own shape
            body: dict[str, Any] = {"message": self.message, "hint": self.hint}
            return _Response(self.status, self.headers, _dumps(body), _JSON)
        body = {
            "code": self.code,
            "details": self.details,
            "hint": self.hint,
            "message": self.message,
        }
        headers = [*self.headers, ("Proxy-Status", f"PostgREST; error={self.code}")]
        return _Response(self.status, headers, _dumps(body), _JSON)


def _pg_status(sqlstate: str, message: str, authed: bool) -> int:
    """PostgREST's mapSQLtoHTTP (Error.hs)."""
    exact = {
        "23503": 409,
        "23505": 409,
        "25006": 405,
        "53400": 500,
        "57P01": 503,
        "P0001": 400,
        "42P01": 404,
        "42P17": 500,
    }
    if sqlstate in exact:
        return exact[sqlstate]
    if sqlstate == "42501":
        return 403 if authed else 401
    if sqlstate == "21000":
        return 400 if message.endswith("requires a WHERE clause") else 500
    if sqlstate == "22023":
        return 401 if message.startswith("role") and message.endswith("does not exist") else 400
    if sqlstate == "42883":
        return 406 if message.startswith("function xmlagg(") else 404
    prefixes = {
        "08": 503, "09": 500, "0L": 403, "0P": 403, "25": 500, "28": 403, "2D": 500,
        "38": 500, "39": 500, "3B": 500, "40": 500, "53": 503, "54": 500, "55": 500,
        "57": 500, "58": 500, "F0": 500, "HV": 500, "P0": 500, "XX": 500,
    }  # fmt: skip
    if sqlstate[:2] in prefixes:
        return prefixes[sqlstate[:2]]
    if sqlstate.startswith("PT") and sqlstate[2:].isdigit():
        return int(sqlstate[2:])
    return 400


def _from_pg_error(exc: psycopg.Error, authed: bool) -> _ApiError:
    if exc.sqlstate is None:  # the connection broke mid-request, not a server-side error
        message = "Database client error. Retrying the connection."
        return _ApiError(503, "PGRST001", message, str(exc))
    diag = exc.diag
    sqlstate = exc.sqlstate
    message = diag.message_primary or str(exc)
    status = _pg_status(sqlstate, message, authed)
    headers = [("WWW-Authenticate", "Bearer")] if status == 401 else []
    return _ApiError(status, sqlstate, message, diag.message_detail, diag.message_hint, headers)


def _query_error(message: str, details: str | None = None) -> _ApiError:
    return _ApiError(400, "PGRST100", message, details)


# ---------------------------------------------------------------------------------- plumbing


@dataclass
class _Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    content_type: str | None = None


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _conninfo(url: str) -> str:
    """A libpq URL from a SQLAlchemy one (`postgresql+psycopg://` → `postgresql://`)."""
    return re.sub(r"^postgres(ql)?\+\w+://", "postgresql://", url)


def ensure_supabase_roles(conn_or_url: psycopg.Connection[Any] | str) -> None:
    """Create Supabase's API roles (NOLOGIN; service_role BYPASSRLS) if they are missing.

    Roles are cluster-wide, so concurrent callers may race: each CREATE swallows the duplicate.
    """
    statements = [
        f"""DO $$ BEGIN
              IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
                CREATE ROLE {role} NOLOGIN NOINHERIT{" BYPASSRLS" if role == "service_role" else ""};
              END IF;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
            END $$"""
        for role in SUPABASE_ROLES  # constants, not input
    ]
    if isinstance(conn_or_url, str):
        with psycopg.connect(_conninfo(conn_or_url), autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)
        return
    for statement in statements:
        conn_or_url.execute(statement)


class _Pool:
    """A few idle connections kept between requests; psycopg_pool is not a dependency."""

    def __init__(self, conninfo: str, keep: int = 8) -> None:
        self._conninfo, self._keep = conninfo, keep
        self._idle: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            try:
                # UTC like a Supabase database; no server-side prepares, so DDL run by tests
                # between requests never meets a stale cached plan.
                conn = psycopg.connect(
                    self._conninfo,
                    autocommit=True,
                    options="-c TimeZone=UTC",
                    prepare_threshold=None,
                )
            except psycopg.OperationalError as exc:
                raise _ApiError(503, "PGRST000", "Database connection error.", str(exc)) from None
        reusable = False
        try:
            yield conn
            reusable = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        finally:
            with self._lock:
                if reusable and not self._closed and len(self._idle) < self._keep:
                    self._idle.append(conn)
                    conn = None
            if conn is not None:
                conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


@dataclass(frozen=True)
class _Table:
    schema: str
    name: str
    columns: dict[str, tuple[str, str | None]]  # name → (type, default expression)
    pk: tuple[str, ...]

    def ident(self, column: str | None = None) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name, *([column] if column else []))


_INTROSPECT = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), pg_get_expr(d.adbin, d.adrelid),
       array_position(i.indkey::int2[], a.attnum)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'v', 'm', 'f', 'p')
ORDER BY a.attnum
"""


def _introspect(conn: psycopg.Connection[Any], schema: str, name: str) -> _Table:
    """Read the table from the catalog on every request: DDL shows up at once, like Supabase's
    NOTIFY-driven schema cache reload."""
    rows = conn.execute(_INTROSPECT, [schema, name]).fetchall()
    if not rows:
        raise _ApiError(
            404, "PGRST205", f"Could not find the table '{schema}.{name}' in the schema cache"
        )
    columns = {row[0]: (row[1], row[2]) for row in rows}
    pk = tuple(row[0] for row in sorted((r for r in rows if r[3] is not None), key=lambda r: r[3]))
    return _Table(schema, name, columns, pk)


def _split_names(text: str) -> list[str]:
    """`a,"b c",d` → names; PostgREST allows `"`-quoted names with `\\` escapes."""
    names: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            names.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    names.append("".join(current).strip())
    return [name for name in names if name]


def _split_list(text: str) -> list[str]:
    """The inside of `in.(a,"b,c")`: values, quotes removed."""
    values: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            values.append("".join(current))
            current = []
        else:
            current.append(char)
    values.append("".join(current))
    return values


@dataclass
class _Prefs:
    resolution: str | None = None
    missing: str | None = None
    representation: str | None = None
    count: str | None = None
    timezone: str | None = None

    @classmethod
    def parse(cls, values: list[str]) -> _Prefs:
        prefs = cls()
        tokens = [token.strip() for value in values for token in value.split(",")]
        accepted = {
            "resolution": ("merge-duplicates", "ignore-duplicates"),
            "missing": ("default", "null"),
            "return": ("representation", "minimal", "headers-only"),
            "count": ("exact", "planned", "estimated"),
        }
        for token in tokens:  # first valid value wins, like Preferences.hs
            key, _, value = token.partition("=")
            attr = "representation" if key == "return" else key
            if key in accepted and value in accepted[key] and getattr(prefs, attr) is None:
                setattr(prefs, attr, value)
            elif key == "timezone" and value and prefs.timezone is None:
                prefs.timezone = value
        return prefs

    def applied(self, *, write: bool, resolution_applies: bool) -> str | None:
        """Preference-Applied: resolution, missing, return, count, timezone; `, ` separated."""
        values = [
            f"resolution={self.resolution}"
            if write and resolution_applies and self.resolution
            else None,
            f"missing={self.missing}" if write and self.missing else None,
            f"return={self.representation}" if write and self.representation else None,
            f"count={self.count}" if self.count else None,
            f"timezone={self.timezone}" if self.timezone else None,
        ]
        present = [value for value in values if value]
        return ", ".join(present) if present else None


def _content_range(lower: int, upper: int, total: int | None) -> str:
    """RangeQuery.contentRangeH."""
    span = f"{lower}-{upper}" if total != 0 and lower <= upper else "*"
    return f"{span}/{'*' if total is None else total}"


# -------------------------------------------------------------------------------- the API


class _Api:
    """Turns one request into one response; no HTTP server concerns here."""

    def __init__(
        self, conninfo: str, jwt_secret: str, schemas: Sequence[str], max_rows: int | None
    ) -> None:
        self.pool = _Pool(conninfo)
        self.secret = jwt_secret
        self.schemas = list(schemas)
        self.max_rows = max_rows
        self.anon_role = "anon"

    # ---- request context

    def handle(self, method: str, target: str, headers: Message, body: bytes) -> _Response:
        try:
            return self._handle(method, target, headers, body)
        except _ApiError as exc:
            return exc.response()

    def _handle(self, method: str, target: str, headers: Message, body: bytes) -> _Response:
        parts = urlsplit(target)
        if not parts.path.startswith(REST_PREFIX):
            raise _ApiError(404, "PGRST125", "Invalid path specified in request URL")
        query = parse_qsl(parts.query, keep_blank_values=True)  # form-decodes `+` like PostgREST
        claims = self._authenticate(headers, query)
        query = [(k, v) for k, v in query if k != "apikey"]
        resource = unquote(parts.path[len(REST_PREFIX) :])
        if not resource or "/" in resource:
            raise _ApiError(404, "PGRST125", "Invalid path specified in request URL")
        read = method in ("GET", "HEAD")
        profile_header = headers.get("Accept-Profile" if read else "Content-Profile")
        schema = profile_header or self.schemas[0]
        if schema not in self.schemas:
            raise _ApiError(
                406,
                "PGRST106",
                f"Invalid schema: {schema}",
                hint="Only the following schemas are exposed: " + ", ".join(self.schemas),
            )
        prefs = _Prefs.parse(headers.get_all("Prefer") or [])
        role = claims.get("role") if isinstance(claims.get("role"), str) else self.anon_role
        authed = role != self.anon_role
        accept = headers.get("Accept") or "*/*"
        singular = _SINGULAR in accept
        with self.pool.connection() as conn:
            try:
                with conn.transaction():
                    table = _introspect(conn, schema, resource)
                    conn.execute(
                        "SELECT set_config('role', %s, true), "
                        "set_config('request.jwt.claims', %s, true), "
                        "set_config('request.method', %s, true)",
                        [role, json.dumps(claims), method],
                    )
                    if prefs.timezone:
                        conn.execute("SELECT set_config('timezone', %s, true)", [prefs.timezone])
                    if read:
                        response = self._read(conn, table, query, headers, prefs, method, singular)
                    elif method == "POST":
                        response = self._insert(conn, table, query, body, prefs, singular)
                    elif method == "PATCH":
                        response = self._update(conn, table, query, body, prefs)
                    elif method == "DELETE":
                        response = self._delete(conn, table, query, prefs)
                    else:
                        raise _ApiError(405, "PGRST117", f"Unsupported HTTP method: {method}")
            except psycopg.Error as exc:
                raise _from_pg_error(exc, authed) from None
        if profile_header and response.content_type:
            response.headers.append(("Content-Profile", schema))
        return response

    def _authenticate(self, headers: Message, query: list[tuple[str, str]]) -> dict[str, Any]:
        """The gateway checks `apikey`; PostgREST then checks the Bearer token (anon without one)."""
        apikey = headers.get("apikey") or next((v for k, v in query if k == "apikey"), None)
        if not apikey:
            raise _ApiError(
                401,
                None,
                "No API key found in request",
                hint="No `apikey` request header or url param was found.",
                gateway=True,
            )
        if not _signature_ok(apikey, self.secret):
            raise _ApiError(
                401,
                None,
                "Invalid API key",
                hint="Double check your Supabase `anon` or `service_role` API key.",
                gateway=True,
            )
        authorization = headers.get("Authorization")
        if authorization is None or not authorization.lower().startswith("bearer"):
            return {"role": self.anon_role}
        return _verify_jwt(authorization[len("bearer") :].strip(), self.secret, time.time())

    # ---- query parameter → SQL pieces

    def _select_list(
        self, table: _Table, select: str, source: sql.Composable | None
    ) -> sql.Composed:
        """`*`, `col`, `alias:col`, `col::type`, no embedding. `source` qualifies the columns."""
        items: list[sql.Composable] = []
        for raw in _split_names(select or "*"):
            if raw == "*":
                items.extend(self._col(table, name, source) for name in table.columns)
                continue
            head, _, cast = raw.partition("::")
            alias, _, column = head.rpartition(":")
            column, alias = column.strip().strip('"'), alias.strip().strip('"')
            if cast and not _CAST_RE.match(cast):
                raise _query_error(f'"failed to parse select parameter ({select})"')
            piece: sql.Composable = self._col(table, column, source)
            if cast:  # validated above; types cannot be parameters
                piece = sql.SQL("CAST({} AS {})").format(piece, sql.SQL(cast))
            items.append(sql.SQL("{} AS {}").format(piece, sql.Identifier(alias or column)))
        return sql.SQL(", ").join(items)

    @staticmethod
    def _col(table: _Table, name: str, source: sql.Composable | None) -> sql.Composable:
        # Table-qualified so Postgres says `column items.x does not exist`, as under PostgREST.
        return (
            sql.SQL("{}.{}").format(source, sql.Identifier(name)) if source else table.ident(name)
        )

    def _where(
        self, table: _Table, query: list[tuple[str, str]]
    ) -> tuple[sql.Composable, list[Any]]:
        clauses: list[sql.Composable] = []
        params: list[Any] = []
        for key, value in query:
            if key in _RESERVED:
                continue
            if key in ("or", "and", "not.or", "not.and"):
                raise _ApiError(400, "PGRST127", "Feature not implemented",
                                details="logic trees (or/and) are not implemented by the double")  # fmt: skip
            column = table.ident(key.strip('"'))
            negate = value.startswith("not.")
            operator, dot, operand = value[4 if negate else 0 :].partition(".")
            if not dot:
                raise _query_error(f'"failed to parse filter ({value})" (line 1, column 1)')
            if operator in _OPERATORS:
                if operator in ("like", "ilike"):
                    operand = operand.replace("*", "%")
                clause = sql.SQL("{} {} %s").format(column, sql.SQL(_OPERATORS[operator]))
                params.append(operand)
            elif operator == "is" and operand.lower() in _IS_VALUES:
                clause = sql.SQL("{} IS {}").format(column, sql.SQL(_IS_VALUES[operand.lower()]))
            elif operator == "in" and operand.startswith("(") and operand.endswith(")"):
                values = _split_list(operand[1:-1]) if operand[1:-1] else []
                if values:
                    marks = sql.SQL(", ").join(sql.Placeholder() * len(values))
                    clause = sql.SQL("{} IN ({})").format(column, marks)
                    params.extend(values)
                else:
                    clause = sql.SQL("FALSE")
            else:
                raise _query_error(f'"failed to parse filter ({value})" (line 1, column 1)')
            clauses.append(sql.SQL("NOT ({})").format(clause) if negate else clause)
        if not clauses:
            return sql.SQL(""), params
        return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(clauses), params

    def _order(self, table: _Table, order: str | None) -> sql.Composable:
        if not order:
            return sql.SQL("")
        terms: list[sql.Composable] = []
        for raw in _split_names(order):
            column, *modifiers = raw.split(".")
            pieces: list[sql.Composable] = [table.ident(column.strip('"'))]
            for modifier in modifiers:
                if modifier not in ("asc", "desc", "nullsfirst", "nullslast"):
                    raise _query_error(f'"failed to parse order ({order})" (line 1, column 1)')
                words = {"nullsfirst": "NULLS FIRST", "nullslast": "NULLS LAST"}
                pieces.append(sql.SQL(words.get(modifier, modifier.upper())))
            terms.append(sql.SQL(" ").join(pieces))
        return sql.SQL(" ORDER BY ") + sql.SQL(", ").join(terms)

    def _range(
        self, query: list[tuple[str, str]], headers: Message, method: str
    ) -> tuple[int, int | None]:
        """[lower, upper] from the Range header (GET only), offset/limit and db-max-rows."""
        lower, upper = 0, None
        header = headers.get("Range") if method == "GET" else None
        match = re.fullmatch(r"(\d+)-(\d*)", header.strip()) if header else None
        if match:
            lower = int(match.group(1))
            upper = int(match.group(2)) if match.group(2) else None
            if upper is not None and upper < lower:
                raise _ApiError(416, "PGRST103", "Requested range not satisfiable",
                                details="The lower boundary must be lower than or equal to the "
                                "upper boundary in the Range header.")  # fmt: skip
        params = dict(query)
        for name in ("offset", "limit"):
            if name in params and not params[name].isdigit():
                raise _query_error(f'"failed to parse {name} parameter ({params[name]})"')
        if "offset" in params:
            lower = max(lower, int(params["offset"]))
        if "limit" in params:
            limit_upper = int(params.get("offset", 0)) + int(params["limit"]) - 1
            upper = limit_upper if upper is None else min(upper, limit_upper)
        if self.max_rows is not None:
            capped = lower + self.max_rows - 1
            upper = capped if upper is None else min(upper, capped)
        return lower, upper

    # ---- verbs

    def _read(
        self,
        conn: psycopg.Connection[Any],
        table: _Table,
        query: list[tuple[str, str]],
        headers: Message,
        prefs: _Prefs,
        method: str,
        singular: bool,
    ) -> _Response:
        params = dict(query)
        select = self._select_list(table, params.get("select", "*"), None)
        where, where_params = self._where(table, query)
        lower, upper = self._range(query, headers, method)
        limit = sql.SQL("")
        page_params: list[Any] = []
        if upper is not None:
            limit = sql.SQL(" LIMIT %s OFFSET %s")
            page_params = [max(upper - lower + 1, 0), lower]
        elif lower:
            limit = sql.SQL(" OFFSET %s")
            page_params = [lower]
        statement = sql.SQL(
            "SELECT count(*), coalesce(json_agg(_postgrest_t), '[]')::text "
            "FROM (SELECT {} FROM {}{}{}{}) _postgrest_t"
        ).format(select, table.ident(), where, self._order(table, params.get("order")), limit)
        row = conn.execute(statement, [*where_params, *page_params]).fetchone()
        assert row is not None
        page_total, body = int(row[0]), str(row[1])
        total: int | None = None
        if prefs.count:  # planned/estimated are answered exactly: the double has no planner stats
            count_sql = sql.SQL("SELECT count(*) FROM {}{}").format(table.ident(), where)
            count_row = conn.execute(count_sql, where_params).fetchone()
            total = int(count_row[0]) if count_row else 0
        upper_seen = lower + page_total - 1
        status = 200
        if total is not None:
            if lower > total:
                error = _ApiError(416, "PGRST103", "Requested range not satisfiable",
                                  details=f"An offset of {lower} was requested, but there are "
                                  f"only {total} rows.")  # fmt: skip
                response = error.response()
                response.headers.insert(
                    0, ("Content-Range", _content_range(lower, upper_seen, total))
                )
                return response
            if page_total < total:
                status = 206
        if singular:
            body = self._singular(body, page_total)
        qs = "&".join(f"{k}={v}" for k, v in sorted(query))
        response_headers = [
            ("Content-Range", _content_range(lower, upper_seen, total)),
            ("Content-Location", f"/{table.name}" + (f"?{qs}" if qs else "")),
        ]
        applied = prefs.applied(write=False, resolution_applies=False)
        if applied:
            response_headers.append(("Preference-Applied", applied))
        content_type = _SINGULAR + "; charset=utf-8" if singular else _JSON
        return _Response(status, response_headers, body.encode(), content_type)

    @staticmethod
    def _singular(body: str, rows: int) -> str:
        if rows != 1:
            raise _ApiError(406, "PGRST116", "Cannot coerce the result to a single JSON object",
                            details=f"The result contains {rows} rows")  # fmt: skip
        return json.dumps(json.loads(body)[0], ensure_ascii=False, separators=(",", ":"))

    def _payload(
        self, table: _Table, body: bytes, columns_param: str | None
    ) -> tuple[str, list[str]]:
        """The body as a JSON array text plus the columns to insert (Payload.hs rules)."""
        try:
            payload = json.loads(body) if body.strip() else None
        except ValueError:
            payload = None
        if not isinstance(payload, dict | list):
            raise _ApiError(400, "PGRST102", "Empty or invalid json")
        text = body.decode()
        if isinstance(payload, dict):
            text = f"[{text}]"
        if columns_param is not None:
            columns = _split_names(columns_param)
        else:
            rows = payload if isinstance(payload, list) else [payload]
            keysets = {frozenset(r) if isinstance(r, dict) else None for r in rows}
            if len(keysets) > 1 or None in keysets:
                raise _ApiError(400, "PGRST102", "All object keys must match")
            columns = list(rows[0]) if rows else []
        for column in columns:
            if column not in table.columns:
                raise _ApiError(400, "PGRST204",
                                f"Could not find the '{column}' column of '{table.name}' in the schema cache")  # fmt: skip
        return text, columns

    def _body_source(self, table: _Table, columns: list[str], prefs: _Prefs) -> sql.Composed:
        """`FROM json_to_recordset(...) AS pgrst_body(col type, ...)`, as QueryBuilder does."""
        typed = sql.SQL(", ").join(
            # format_type() output from the catalog: trusted, and types cannot be parameters
            sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(table.columns[c][0]))
            for c in columns
        )
        defaults = [(c, table.columns[c][1]) for c in columns if table.columns[c][1] is not None]
        if prefs.missing == "default" and defaults:
            # missing keys take the column DEFAULT: merge defaults under each element
            build = sql.SQL(", ").join(
                sql.SQL("{}, {}").format(sql.Literal(c), sql.SQL(expr))  # type: ignore[arg-type]
                for c, expr in defaults
            )
            return sql.SQL(
                "FROM jsonb_to_recordset((SELECT jsonb_agg(jsonb_build_object({}) || elem) "
                "FROM jsonb_array_elements(%s::jsonb) elem)) AS pgrst_body({})"
            ).format(build, typed)
        return sql.SQL("FROM json_to_recordset(%s::json) AS pgrst_body({})").format(typed)

    def _insert(
        self,
        conn: psycopg.Connection[Any],
        table: _Table,
        query: list[tuple[str, str]],
        body: bytes,
        prefs: _Prefs,
        singular: bool,
    ) -> _Response:
        params = dict(query)
        text, columns = self._payload(table, body, params.get("columns"))
        conflict = (
            _split_names(params["on_conflict"]) if "on_conflict" in params else list(table.pk)
        )
        resolution = prefs.resolution if conflict else None
        merge = resolution == "merge-duplicates"
        idents = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        if columns:
            target = sql.SQL("({}) ").format(idents)
            source = sql.SQL("SELECT {} ").format(
                sql.SQL(", ").join(sql.Identifier("pgrst_body", c) for c in columns)
            ) + self._body_source(table, columns, prefs)
        else:  # `{}` or `[{}, ...]`: every column takes its default
            target = sql.SQL(" ")
            source = sql.SQL("SELECT FROM json_array_elements(%s::json) pgrst_body")
        # PostgREST counts inserted (vs updated) rows with this GUC, needing no SELECT grant.
        counter = "set_config('pgrst.inserted', (coalesce(nullif(current_setting('pgrst.inserted', true), '')::int, 0) {} 1)::text, true) <> {}"
        on_conflict = sql.SQL("")
        if resolution:
            conflict_cols = sql.SQL(", ").join(sql.Identifier(c) for c in conflict)
            if resolution == "ignore-duplicates" or not columns:
                action = sql.SQL("DO NOTHING")
            else:
                action = sql.SQL("DO UPDATE SET {} WHERE {}").format(
                    sql.SQL(", ").join(
                        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in columns
                    ),
                    sql.SQL(counter.format("-", "'-1'")),
                )
            on_conflict = sql.SQL(" ON CONFLICT({}) {}").format(conflict_cols, action)
        if merge:
            source = source + sql.SQL(" WHERE ") + sql.SQL(counter.format("+", "'0'"))
        representation = prefs.representation == "representation"
        returning = (
            sql.SQL("{}.*").format(sql.Identifier("pgrst_t")) if representation else sql.SQL("1")
        )
        body_sql = (
            sql.SQL(
                "(SELECT coalesce(json_agg(_postgrest_t), '[]')::text FROM (SELECT {} FROM pgrst_source) _postgrest_t)"
            ).format(
                self._select_list(table, params.get("select", "*"), sql.Identifier("pgrst_source"))
            )
            if representation
            else sql.SQL("NULL")
        )
        statement = sql.SQL(
            "WITH pgrst_source AS (INSERT INTO {} AS pgrst_t {}{}{} RETURNING {}) "
            "SELECT (SELECT count(*) FROM pgrst_source), {}"
        ).format(table.ident(), target, source, on_conflict, returning, body_sql)
        row = conn.execute(statement, [text]).fetchone()
        assert row is not None
        returned, rendered = int(row[0]), row[1]
        status = 201
        if merge:
            inserted_row = conn.execute(
                "SELECT nullif(current_setting('pgrst.inserted', true), '')::int"
            ).fetchone()
            inserted = int(inserted_row[0] or 0) if inserted_row else 0
            status = 200 if inserted <= 0 else 201
        headers = [("Content-Range", _content_range(1, 0, returned if prefs.count else None))]
        applied = prefs.applied(write=True, resolution_applies=bool(conflict))
        if applied:
            headers.append(("Preference-Applied", applied))
        if representation:
            payload = str(rendered)
            if singular:
                payload = self._singular(payload, returned)
            content_type = _SINGULAR + "; charset=utf-8" if singular else _JSON
            return _Response(status, headers, payload.encode(), content_type)
        return _Response(status, headers)

    def _update(
        self,
        conn: psycopg.Connection[Any],
        table: _Table,
        query: list[tuple[str, str]],
        body: bytes,
        prefs: _Prefs,
    ) -> _Response:
        params = dict(query)
        text, columns = self._payload(table, body, params.get("columns"))
        if not columns:  # PostgREST answers an empty PATCH without touching the table
            return _Response(204, [("Content-Range", "*/*")])
        where, where_params = self._where(table, query)
        sets = sql.SQL(", ").join(
            sql.SQL("{0} = pgrst_body.{0}").format(sql.Identifier(c)) for c in columns
        )
        source = self._body_source(table, columns, prefs)
        # one object: the first element of the (wrapped) array
        statement = sql.SQL("UPDATE {} SET {} FROM (SELECT * {} LIMIT 1) pgrst_body{}").format(
            table.ident(), sets, source, where
        )
        return self._mutation_result(
            conn, table, statement, [text, *where_params], params, prefs, True
        )

    def _delete(
        self,
        conn: psycopg.Connection[Any],
        table: _Table,
        query: list[tuple[str, str]],
        prefs: _Prefs,
    ) -> _Response:
        where, where_params = self._where(table, query)
        statement = sql.SQL("DELETE FROM {}{}").format(table.ident(), where)
        return self._mutation_result(
            conn, table, statement, where_params, dict(query), prefs, False
        )

    def _mutation_result(
        self,
        conn: psycopg.Connection[Any],
        table: _Table,
        statement: sql.Composed,
        params: list[Any],
        query: dict[str, str],
        prefs: _Prefs,
        is_update: bool,
    ) -> _Response:
        representation = prefs.representation == "representation"
        returning = sql.SQL("{}.*").format(table.ident()) if representation else sql.SQL("1")
        body_sql = (
            sql.SQL(
                "(SELECT coalesce(json_agg(_postgrest_t), '[]')::text FROM (SELECT {} FROM pgrst_source) _postgrest_t)"
            ).format(
                self._select_list(table, query.get("select", "*"), sql.Identifier("pgrst_source"))
            )
            if representation
            else sql.SQL("NULL")
        )
        full = sql.SQL(
            "WITH pgrst_source AS ({} RETURNING {}) SELECT (SELECT count(*) FROM pgrst_source), {}"
        ).format(statement, returning, body_sql)
        row = conn.execute(full, params).fetchone()
        assert row is not None
        returned = int(row[0])
        total = returned if prefs.count else None
        # Response.hs: PATCH reports 0-(n-1), DELETE reports */n
        content_range = (
            _content_range(0, returned - 1, total) if is_update else _content_range(1, 0, total)
        )
        headers = [("Content-Range", content_range)]
        applied = prefs.applied(write=True, resolution_applies=False)
        if applied:
            headers.append(("Preference-Applied", applied))
        if representation:
            return _Response(200, headers, str(row[1]).encode(), _JSON)
        return _Response(204, headers)

    def close(self) -> None:
        self.pool.close()


# ---------------------------------------------------------------------------------- server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so every response carries Content-Length
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        double = self.server.double
        injected = double._record(self.command, self.path)
        if injected is not None and injected[0] == "reset":
            self.close_connection = True  # hang up without a byte: httpx sees "Server disconnected"
            return
        if injected is not None:
            _, status, fail_body = injected
            response = _injected_response(status, fail_body)
        else:
            try:
                response = double._api.handle(self.command, self.path, self.headers, body)
            except Exception as exc:  # a bug in the double: still answer, loudly
                response = _ApiError(500, "PGRSTX00", f"double failed: {exc!r}").response()
        self._send(response)

    def _send(self, response: _Response) -> None:
        self.send_response(response.status)
        if response.content_type:
            self.send_header("Content-Type", response.content_type)
        for name, value in response.headers:
            self.send_header(name, value)
        if self.command == "HEAD":  # PostgREST sends no length for headers-only reads
            self.end_headers()
            return
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    do_GET = do_HEAD = do_POST = do_PATCH = do_DELETE = do_PUT = _dispatch


def _injected_response(
    status: int, body: str | bytes | dict[str, Any] | list[Any] | None
) -> _Response:
    if body is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        body = {"code": str(status), "details": None, "hint": None, "message": phrase}
    if isinstance(body, dict | list):
        return _Response(status, [], _dumps(body), _JSON)
    raw = body.encode() if isinstance(body, str) else body
    return _Response(status, [], raw, "text/plain; charset=utf-8")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], double: PostgrestDouble) -> None:
        self.double = double
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)


class PostgrestDouble:
    """`with PostgrestDouble(db_url, secret) as api:` — a Supabase project URL at `api.url`.

    Ready when the constructor returns (the socket is bound and served); `close()` is quick.
    """

    def __init__(
        self,
        db_url: str,
        jwt_secret: str,
        schemas: Sequence[str] = ("public", "mai"),
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        max_rows: int | None = 1000,
        ensure_roles: bool = True,
    ) -> None:
        conninfo = _conninfo(db_url)
        if ensure_roles:
            ensure_supabase_roles(conninfo)
        self._api = _Api(conninfo, jwt_secret, list(schemas), max_rows)
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._injections: deque[tuple[Any, ...]] = deque()
        self._server = _Server((host, port), self)
        self.port: int = self._server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"postgrest-double:{self.port}", daemon=True,
        )  # fmt: skip
        self._thread.start()
        self._closed = False

    def _record(self, method: str, path_qs: str) -> tuple[Any, ...] | None:
        with self._lock:
            self.requests.append((method, path_qs))
            return self._injections.popleft() if self._injections else None

    def fail_next(
        self,
        status: int,
        times: int = 1,
        body: str | bytes | dict[str, Any] | list[Any] | None = None,
    ) -> None:
        """Answer the next `times` requests with `status` (and `body`) without touching the DB."""
        with self._lock:
            self._injections.extend(("fail", status, body) for _ in range(times))

    def reset_next(self, times: int = 1) -> None:
        """Close the connection of the next `times` requests without answering."""
        with self._lock:
            self._injections.extend(("reset",) for _ in range(times))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        with self._server.sockets_lock:  # wake keep-alive handler threads blocked on reads
            sockets = list(self._server.open_sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)
        self._api.close()

    def __enter__(self) -> PostgrestDouble:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m imagen.testing.postgrest",
        description="Serve a PostgREST-compatible /rest/v1 over a PostgreSQL database.",
    )
    parser.add_argument("--db", required=True, help="database URL (SQLAlchemy or libpq form)")
    parser.add_argument(
        "--jwt-secret", required=True, help="HS256 secret the API keys are signed with"
    )
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--schemas", default="public,mai", help="exposed schemas, comma separated")
    parser.add_argument("--max-rows", type=int, default=1000, help="db-max-rows; 0 for no cap")
    args = parser.parse_args(argv)
    schemas = [s.strip() for s in args.schemas.split(",") if s.strip()]
    double = PostgrestDouble(
        args.db, args.jwt_secret, schemas, args.port, host=args.host, max_rows=args.max_rows or None
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(double.url, flush=True)  # first line: callers read it to learn the port
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        double.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
