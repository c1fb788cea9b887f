"""A Replicate-HTTP-API-faithful server for tests and the demo (FLUX models only).

It answers what imagen and the official `replicate` client send to api.replicate.com: the same
routes, status codes, headers and (RFC 7807-style) error bodies, the prediction life cycle
`starting → processing → succeeded|failed|canceled|aborted`, `Prefer: wait`, `Cancel-After`,
cursor-paginated listing and output files it serves itself (real PNG/WebP/JPEG bytes from
Pillow, deterministic from the seed). See /work/shared/reference/replicate.md for the facts.

    with ReplicateDouble(token="r8_test_token") as rep:
        client = replicate.Client(api_token="r8_test_token", base_url=rep.url)
        rep.behaviour(polls=2)            # scripting: how the next predictions behave
        rep.fail_next("create", status=429, retry_after=3)

Progress is computed lazily from timestamps (and GET counts for `polls=`), so a test may
inject `clock=` to drive deadlines and output expiry; only `Prefer: wait` blocks, on a
Condition. Run standalone: `python -m imagen.testing.replicate [--port N] [--token T]`
(prints the base URL as its first line).

Choices where the real API is unverified or the double simplifies:
- images are rendered at the exact FLUX size (fast encoder settings, ~30 ms per 1 MP image);
- `rep.requests` holds the raw request target, query string included;
- a `Prefer` value outside `wait[=1..60]` is ignored (no hold, no Preference-Applied);
- `Cancel-After` that is malformed or outside 5 s..24 h answers 400 (problem JSON);
- a null optional input field counts as absent; every created prediction is billed, aborted too;
- rate limits (600 creates, 3000 other requests a minute) are counted in `ratelimit-*` headers;
  `rate_limits=` enforces chosen ones (429, Retry-After and `retry_after` until the minute ends);
- the list holds every prediction, newest first, 100 a page (`page_size=`), with an opaque
  `cursor` in `next`/`previous` links and `created_after`/`created_before` filters;
- without Prefer the create answer is the fresh `starting` state, even when `duration=0`;
- `skew_date(offset)` moves the `Date` header alone off the double's clock (hostile clocks);
- output file URLs are http://127.0.0.1 (the official client wraps only https:/data: outputs in
  FileOutput, so `run()` returns plain URL strings unless `output_as="data"`).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import math
import random
import re
import secrets
import signal
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import MappingProxyType
from typing import Any, Literal, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit

from PIL import Image, ImageDraw, ImageOps

__all__ = [
    "ASPECT_SIZES",
    "MODEL_INPUTS",
    "REPLICATE_VERSIONS",
    "Behaviour",
    "ReplicateDouble",
    "main",
]

TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})
ROUTES = frozenset({"create", "get", "cancel", "list", "file", "model"})
OutputAs = Literal["url", "data"]

# FLUX output sizes at 1 megapixel (cog-flux); "0.25" megapixels halves both sides.
ASPECT_SIZES: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "21:9": (1536, 640),
    "3:2": (1216, 832),
    "2:3": (832, 1216),
    "4:5": (896, 1088),
    "5:4": (1088, 896),
    "3:4": (896, 1152),
    "4:3": (1152, 896),
    "9:16": (768, 1344),
    "9:21": (640, 1536),
}
_FORMATS: dict[str, tuple[str, str]] = {
    "webp": ("WEBP", "image/webp"),
    "jpg": ("JPEG", "image/jpeg"),
    "png": ("PNG", "image/png"),
}
_NSFW_ERROR = (
    "All generated images contained NSFW content. Try running it again with a different prompt."
)


# ------------------------------------------------------------------------------- model schemas


@dataclass(frozen=True)
class _Field:
    type: Literal["string", "integer", "number", "boolean", "uri"]
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    enum: tuple[str, ...] | None = None


_ASPECTS = tuple(ASPECT_SIZES)
_COMMON: dict[str, _Field] = {
    "prompt": _Field("string"),
    "aspect_ratio": _Field("string", "1:1", enum=_ASPECTS),
    "seed": _Field("integer"),
    "output_format": _Field("string", "webp", enum=tuple(_FORMATS)),
    "output_quality": _Field("integer", 80, 0, 100),
}
_FLUX_OPEN = {
    **_COMMON,
    "num_outputs": _Field("integer", 1, 1, 4),
    "disable_safety_checker": _Field("boolean", False),
    "go_fast": _Field("boolean", True),
    "megapixels": _Field("string", "1", enum=("1", "0.25")),
}
_FLUX_PRO = {
    **_COMMON,
    "aspect_ratio": _Field("string", "1:1", enum=(*_ASPECTS, "custom")),
    "width": _Field("integer", None, 256, 1440),
    "height": _Field("integer", None, 256, 1440),
    "safety_tolerance": _Field("integer", 2, 1, 6),
    "prompt_upsampling": _Field("boolean", False),
    "image_prompt": _Field("uri"),
}
# Input schemas of the models the double knows (cog-flux predict.py, replicate.com pages).
MODEL_INPUTS: dict[str, dict[str, _Field]] = {
    "black-forest-labs/flux-schnell": {
        **_FLUX_OPEN,
        "num_inference_steps": _Field("integer", 4, 1, 4),
    },
    "black-forest-labs/flux-dev": {
        **_FLUX_OPEN,
        "num_inference_steps": _Field("integer", 28, 1, 50),
        "guidance": _Field("number", 3, 0, 10),
        "image": _Field("uri"),
        "prompt_strength": _Field("number", 0.8, 0, 1),
    },
    "black-forest-labs/flux-pro": {
        **_FLUX_PRO,
        "steps": _Field("integer", 25, 1, 50),
        "guidance": _Field("number", 3, 2, 5),
        "interval": _Field("number", 2, 1, 4),
    },
    "black-forest-labs/flux-1.1-pro": _FLUX_PRO,
}
# schnell/dev answer a list of URIs; the pro models a single URI.
_LIST_OUTPUT = frozenset({"black-forest-labs/flux-schnell", "black-forest-labs/flux-dev"})
# A fixed fake version id per model, for version-pinned creates (`owner/name:<hex>`).
REPLICATE_VERSIONS: dict[str, str] = {
    model: hashlib.sha256(f"imagen-replicate-double:{model}".encode()).hexdigest()
    for model in MODEL_INPUTS
}
_VERSION_MODELS = {v: m for m, v in REPLICATE_VERSIONS.items()}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_BODY_KEYS = frozenset({"input", "webhook", "webhook_events_filter", "webhook_completed", "stream"})


def _openapi_schema(model: str) -> dict[str, Any]:
    """The version's OpenAPI schema, built from the same table the validator uses."""
    props: dict[str, Any] = {}
    for i, (name, f) in enumerate(MODEL_INPUTS[model].items()):
        p: dict[str, Any] = {"title": name.replace("_", " ").title(), "x-order": i}
        if f.enum:
            p.update(type="string", enum=list(f.enum))
        elif f.type == "uri":
            p.update(type="string", format="uri")
        else:
            p["type"] = f.type
        for key, value in (("default", f.default), ("minimum", f.minimum), ("maximum", f.maximum)):
            if value is not None:
                p[key] = value
        props[name] = p
    uri = {"type": "string", "format": "uri"}
    output = {"type": "array", "items": uri} if model in _LIST_OUTPUT else uri
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.1.0"},
        "paths": {},
        "components": {
            "schemas": {
                "Input": {
                    "type": "object",
                    "title": "Input",
                    "required": ["prompt"],
                    "properties": props,
                },
                "Output": {**output, "title": "Output"},
            }
        },
    }


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _validate_input(model: str, inp: Any) -> list[dict[str, str]]:
    """gojsonschema-style invalid_fields for `input` against the model's schema."""
    if not isinstance(inp, dict):
        given = _type_name(inp)
        return [
            _invalid("invalid_type", "input", f"Invalid type. Expected: object, given: {given}")
        ]
    schema = MODEL_INPUTS[model]
    errors: list[dict[str, str]] = []
    if "prompt" not in inp or inp["prompt"] is None:
        errors.append(_invalid("required", "input", "prompt is required"))
    for key, value in inp.items():
        f = schema.get(key)
        if f is None:
            msg = f"Additional property {key} is not allowed"
            errors.append(_invalid("additional_property_not_allowed", "input", msg))
            continue
        if value is None and key != "prompt":
            continue  # lenient: a null optional field means "use the default"
        name = f"input.{key}"
        expected = "string" if f.type == "uri" else f.type
        given = _type_name(value)
        ok = given == expected or (expected == "number" and given == "integer")
        if expected == "integer" and isinstance(value, float) and value.is_integer():
            ok = True
        if not ok:
            msg = f"Invalid type. Expected: {expected}, given: {given}"
            errors.append(_invalid("invalid_type", name, msg))
        elif f.enum is not None and value not in f.enum:
            allowed = ", ".join(f'"{e}"' for e in f.enum)
            msg = f"{name} must be one of the following: {allowed}"
            errors.append(_invalid("enum", name, msg))
        elif f.minimum is not None and value < f.minimum:
            msg = f"Must be greater than or equal to {f.minimum:g}"
            errors.append(_invalid("number_gte", name, msg))
        elif f.maximum is not None and value > f.maximum:
            msg = f"Must be less than or equal to {f.maximum:g}"
            errors.append(_invalid("number_lte", name, msg))
    if not errors and inp.get("aspect_ratio") == "custom":
        for key in ("width", "height"):
            if not isinstance(inp.get(key), int):
                errors.append(_invalid("required", "input", f"{key} is required"))
            elif inp[key] % 32:
                msg = "Must be a multiple of 32"
                errors.append(_invalid("multiple_of", f"input.{key}", msg))
    return errors


def _invalid(kind: str, name: str, description: str) -> dict[str, str]:
    return {"type": kind, "field": name, "description": description}


def _output_size(model: str, inp: Mapping[str, Any]) -> tuple[int, int]:
    aspect = inp.get("aspect_ratio") or "1:1"
    if aspect == "custom":
        return int(inp["width"]), int(inp["height"])
    w, h = ASPECT_SIZES[aspect]
    if model in _LIST_OUTPUT and (inp.get("megapixels") or "1") == "0.25":
        w, h = w // 2, h // 2
    return w, h


# ------------------------------------------------------------------------------------- helpers


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: str) -> datetime:
    """ISO-8601 as a query parameter; a '+' decoded to ' ' by form decoding is repaired."""
    text = text.strip().replace(" ", "+")
    dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


def _parse_duration(text: str) -> float | None:
    """Cancel-After: bare seconds, or Go-style `1h30m45s`; None when malformed."""
    text = text.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    m = _DURATION.fullmatch(text)
    if not text or m is None:
        return None
    h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mi * 60 + s


_PREFER = re.compile(r"^wait(?:=([1-9]|[1-9][0-9]|60))?$")


def _new_id() -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(26))


def _render_image(model: str, inp: Mapping[str, Any], seed: int, index: int) -> bytes:
    """Real image bytes at the exact FLUX size, a pure function of model, input, seed and index."""
    w, h = _output_size(model, inp)
    fmt = inp.get("output_format") or "webp"
    quality = int(inp.get("output_quality") if inp.get("output_quality") is not None else 80)
    key = json.dumps(
        [model, {k: v for k, v in inp.items() if k != "seed"}, seed, index],
        sort_keys=True,
        default=str,
    )
    rng = random.Random(hashlib.sha256(key.encode()).digest())

    def colour() -> tuple[int, int, int]:
        return (rng.randrange(256), rng.randrange(256), rng.randrange(256))

    img = ImageOps.colorize(Image.linear_gradient("L").resize((w, h)), colour(), colour())
    draw = ImageDraw.Draw(img)
    for _ in range(8):
        x, y, s = rng.randrange(w), rng.randrange(h), rng.randrange(16, max(17, min(w, h) // 3))
        draw.ellipse((x, y, x + s, y + s), fill=colour())
    out = io.BytesIO()
    pil_format = _FORMATS[fmt][0]
    # Fast encoder settings keep a 1 MP image under ~40 ms; the bytes stay deterministic.
    if pil_format == "PNG":
        img.save(out, "PNG", compress_level=1)
    elif pil_format == "WEBP":
        img.save(out, "WEBP", quality=quality, method=0)
    else:
        img.save(out, "JPEG", quality=quality)
    return out.getvalue()


# --------------------------------------------------------------------------------- predictions


@dataclass(frozen=True)
class Behaviour:
    """How predictions created from now on progress (see ReplicateDouble.behaviour)."""

    duration: float = 0.0
    polls: int | None = None
    fail_with: str | None = None
    never_finish: bool = False
    nsfw: bool | int = False  # True: every image dropped (→ failed); int k: the first k dropped
    output_as: OutputAs = "url"
    output_url: str | None = None  # template: {base} {host} {port} {id} {name}


@dataclass
class _Prediction:
    id: str
    seq: int
    model: str
    version: str
    input: dict[str, Any]
    created_at: datetime
    behaviour: Behaviour
    seed: int
    deadline: datetime | None
    extra: dict[str, Any]
    gets: int = 0
    poll_started: datetime | None = None
    poll_done: datetime | None = None
    status: str = "starting"
    started_at: datetime | None = None
    completed_at: datetime | None = None
    error: str | None = None
    files: list[str] = field(default_factory=list)
    data_removed: bool = False

    @property
    def num_outputs(self) -> int:
        return int(self.input.get("num_outputs") or 1) if self.model in _LIST_OUTPUT else 1

    @property
    def fmt(self) -> str:
        return str(self.input.get("output_format") or "webp")

    def planned(self) -> tuple[datetime | None, datetime | None]:
        """(start, done) of the natural run: from GET counts if scripted so, else from time."""
        b = self.behaviour
        if b.polls is not None:
            return self.poll_started, None if b.never_finish else self.poll_done
        start = self.created_at + timedelta(seconds=0.1 * b.duration)
        done = None if b.never_finish else self.created_at + timedelta(seconds=b.duration)
        return start, done

    def advance(self, now: datetime, ttl: timedelta) -> None:
        """Bring the stored state up to `now` (idempotent)."""
        if self.status not in TERMINAL:
            start, done = self.planned()
            if (
                self.deadline is not None
                and now >= self.deadline
                and (done is None or done > self.deadline)
            ):
                if start is not None and start <= self.deadline:
                    self._finish("canceled", self.deadline, start)
                else:
                    self._finish("aborted", self.deadline, None)
            elif done is not None and now >= done:
                self._finish("succeeded", done, start)
            elif start is not None and now >= start:
                self.status, self.started_at = "processing", start
        if self.status in TERMINAL and self.completed_at and now >= self.completed_at + ttl:
            self.data_removed, self.files = True, []

    def _finish(self, status: str, at: datetime, started: datetime | None) -> None:
        self.status, self.completed_at, self.started_at = status, at, started
        if status != "succeeded":
            return
        b = self.behaviour
        dropped = self.num_outputs if b.nsfw is True else int(b.nsfw or 0)
        if b.fail_with is not None:
            self.status, self.error = "failed", b.fail_with
        elif dropped >= self.num_outputs:
            self.status, self.error = "failed", _NSFW_ERROR
        else:
            self.files = [f"out-{i}.{self.fmt}" for i in range(dropped, self.num_outputs)]

    def cancel(self, now: datetime) -> None:
        if self.status not in TERMINAL:
            self.status, self.completed_at = "canceled", now

    def logs(self) -> str:
        """cog-flux-like logs; `Using seed: N` lets a client recover the seed actually used."""
        if self.status in ("starting", "aborted"):
            return ""
        steps_field = MODEL_INPUTS[self.model].get("num_inference_steps") or _Field("integer", 28)
        steps = int(
            self.input.get("num_inference_steps") or self.input.get("steps") or steps_field.default
        )
        lines = [f"Using seed: {self.seed}", f"  0%|          | 0/{steps} [00:00<?, ?it/s]"]
        if self.status == "failed" and self.error == self.behaviour.fail_with:
            lines.append(f"Error: {self.error}")
        elif self.status in ("succeeded", "failed"):
            lines.append(f"100%|##########| {steps}/{steps} [00:01<00:00, {steps}.00it/s]")
            lines.append(f"Total safe images: {len(self.files)} out of {self.num_outputs}")
        return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------- the double


@dataclass
class _Fault:
    kind: Literal["fail", "reset", "echo"]
    status: int = 500
    retry_after: int | None = None
    body: Any = None
    html: bool = False


class Received(NamedTuple):
    method: str
    target: str
    host: str
    authorization: str | None


class _Reset(Exception):
    """Raised inside the handler to drop the connection without an answer."""


class ReplicateDouble:
    """A local api.replicate.com for FLUX; see the module docstring."""

    def __init__(
        self,
        token: str | Iterable[str] | None = None,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        clock: Callable[[], datetime] | None = None,
        page_size: int = 100,
        output_ttl: float = 3600.0,
        output_as: OutputAs = "url",
        rate_limits: Mapping[str, int] | None = None,
    ) -> None:
        # None accepts any non-empty token (standalone demo without --token).
        self._tokens: frozenset[str] | None = (
            None if token is None else frozenset([token] if isinstance(token, str) else token)
        )
        self._fake_clock = clock is not None
        self._clock = clock or (lambda: datetime.now(UTC))
        self._page_size = page_size
        self._ttl = timedelta(seconds=output_ttl)
        self._output_as: OutputAs = output_as
        self._behaviour = Behaviour(output_as=output_as)
        self._cond = threading.Condition(threading.RLock())
        self._preds: dict[str, _Prediction] = {}
        self._seq = 0
        self._billed = 0
        self._requests: list[tuple[str, str]] = []
        self._received: list[Received] = []
        self._hostile_next: str | None = None
        self._date_offset = timedelta(0)
        self._faults: dict[str, deque[_Fault]] = {r: deque() for r in ROUTES}
        self._slow: dict[str, deque[float]] = {r: deque() for r in ROUTES}
        self._holds: dict[str, deque[threading.Event]] = {r: deque() for r in ROUTES}
        self._reset_after_create = 0
        self._corrupt = 0
        self._truncate = 0
        self._rate: dict[str, tuple[int, int]] = {}  # bucket -> (minute, count)
        # Requests per minute per bucket ("create", "other"); beyond them a 429. None: Replicate's
        # documented 600 and 3000, counted in the headers but never enforced (tests send few).
        self._limits = dict(rate_limits) if rate_limits is not None else None
        if self._limits is not None and set(self._limits) - {"create", "other"}:
            raise ValueError("rate_limits buckets are 'create' and 'other'")
        self._images: dict[tuple[str, int], bytes] = {}
        self._image_lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._closing = threading.Event()
        self._server = _Server((host, port), _Handler)
        self._server.double = self
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="replicate-double",
            daemon=True,
        )
        self._thread.start()  # the socket already listens, so the double is usable now

    # -- context manager ------------------------------------------------------------------

    def __enter__(self) -> ReplicateDouble:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving: wake held `Prefer: wait` requests and drop open connections."""
        if self._closing.is_set():
            return
        self._closing.set()
        with self._cond:
            self._cond.notify_all()
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- observation ----------------------------------------------------------------------

    @property
    def billed(self) -> int:
        """Predictions created: what the user would pay for."""
        with self._cond:
            return self._billed

    @property
    def predictions(self) -> Mapping[str, dict[str, Any]]:
        """Read-only id → prediction JSON as a GET would show it now (without counting a poll)."""
        with self._cond:
            now = self._clock()
            for p in self._preds.values():
                p.advance(now, self._ttl)
            return MappingProxyType({i: self._json(p) for i, p in self._preds.items()})

    @property
    def received(self) -> list[Received]:
        """Every request with its Host and Authorization headers (to see where a token went)."""
        with self._cond:
            return list(self._received)

    @property
    def requests(self) -> list[tuple[str, str]]:
        """(method, request target incl. query string) of every request received, in order."""
        with self._cond:
            return list(self._requests)

    def wait_for_request(
        self, predicate: Callable[[tuple[str, str]], bool], timeout: float = 60.0
    ) -> tuple[str, str]:
        """Block until a received (method, path) matches; returns it, or raises TimeoutError."""
        end = time.monotonic() + timeout
        with self._cond:
            seen = 0
            while True:
                for req in self._requests[seen:]:
                    if predicate(req):
                        return req
                seen = len(self._requests)
                remaining = end - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no matching request within {timeout} s")
                self._cond.wait(remaining)

    def wait_for_more_requests(self, seen: int, timeout: float) -> int:
        """Block until more than `seen` requests have arrived, or `timeout`; the count now.
        For a test waiting on what a client records after talking to the double."""
        end = time.monotonic() + timeout
        with self._cond:
            while len(self._requests) <= seen and not self._closing.is_set():
                remaining = end - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return len(self._requests)

    # -- scripting --------------------------------------------------------------------------

    def behaviour(
        self,
        duration: float = 0.0,
        polls: int | None = None,
        fail_with: str | None = None,
        never_finish: bool = False,
        nsfw: bool | int = False,
        output_as: OutputAs | None = None,
        output_url: str | None = None,
    ) -> None:
        """How predictions created from now on run (see Behaviour).

        duration: seconds from created to done (the first 10 % in `starting`); polls: finish on
        the Nth GET instead; fail_with: end `failed` with this error; never_finish: stay
        `processing` until canceled or past the deadline; nsfw: True drops every image (→
        failed), k drops the first k; output_as: "url" | "data" (None: the constructor's);
        output_url: a hostile output URL template, e.g.
        "http://127.0.0.1:{port}@localhost:{port}/files/{id}/{name}" (userinfo trick).
        """
        output_as = output_as or self._output_as
        if output_as not in ("url", "data"):
            raise ValueError(f"output_as must be 'url' or 'data', not {output_as!r}")
        with self._cond:
            self._behaviour = Behaviour(
                duration, polls, fail_with, never_finish, nsfw, output_as, output_url
            )

    def fail_next(
        self,
        route: str,
        status: int = 500,
        times: int = 1,
        retry_after: int | None = None,
        body: Any = None,
        html: bool = False,
    ) -> None:
        """The next `times` requests to `route` answer `status` with a faithful error body."""
        fault = _Fault("fail", status, retry_after, body, html)
        self._add_fault(route, fault, times)

    def echo_token_next(self, route: str, form: str = "upper", times: int = 1) -> None:
        """The next `times` requests to `route` answer 400 with the caller's token echoed in an
        error body, in `form`: "plain", "upper", "url" (percent-encoded), "base64" (of
        "Bearer <token>"), "json" (a JSON-escaped string inside the detail), "hex", "html"
        (decimal character references), "split" (over two lines), "spaced" (a space between
        characters), "reversed"."""
        if form not in _ECHO_FORMS:
            raise ValueError(f"form must be one of {sorted(_ECHO_FORMS)}, not {form!r}")
        self._add_fault(route, _Fault("echo", 400, body=form), times)

    def amend(self, pid: str, *, status: str | None = None, outputs: int | None = None) -> None:
        """Change a finished prediction's record after the fact, as a provider's books may
        change (a refund marks it failed, moderation removes outputs): `outputs` keeps the
        first n output files."""
        with self._cond:
            p = self._preds[pid]
            p.advance(self._clock(), self._ttl)
            if status is not None:
                p.status = status
            if outputs is not None:
                p.files = p.files[:outputs]

    def forget(self, pid: str) -> None:
        """The provider no longer has the prediction: gone from the list and from GET."""
        with self._cond:
            del self._preds[pid]

    def hostile_next(self, url: str | None) -> None:
        """Listing pages that have a next page link to `url` instead (None: honest links)."""
        with self._cond:
            self._hostile_next = url

    def skew_date(self, offset: timedelta) -> None:
        """A server whose `Date` header is `offset` off its own clock (a proxy or host with a
        wrong clock) while `created_at` and every deadline stay on the double's clock."""
        self._date_offset = offset

    def clear_faults(self) -> None:
        """Forget scripted faults and delays not yet used (the service recovers)."""
        with self._cond:
            for queue in (*self._faults.values(), *self._slow.values(), *self._holds.values()):
                queue.clear()

    def reset_next(self, route: str, times: int = 1) -> None:
        """The next `times` requests to `route` get a TCP reset instead of an answer."""
        self._add_fault(route, _Fault("reset"), times)

    def reset_after_create(self, times: int = 1) -> None:
        """The next `times` successful creates make (and bill) the prediction, then reset."""
        with self._cond:
            self._reset_after_create += times

    def slow_next(self, route: str, seconds: float, times: int = 1) -> None:
        """Delay the next `times` answers on `route` (after the work is done, e.g. created)."""
        self._check_route(route)
        with self._cond:
            self._slow[route].extend([seconds] * times)

    def hold_next(self, route: str) -> threading.Event:
        """The next answer on `route` waits (after the work is done, e.g. created) until the
        returned event is set, or the double closes: a request caught in flight."""
        self._check_route(route)
        release = threading.Event()
        with self._cond:
            self._holds[route].append(release)
        return release

    def corrupt_next_download(self, times: int = 1) -> None:
        """The next `times` file downloads answer 200 with bytes that are not an image."""
        with self._cond:
            self._corrupt += times

    def truncate_next_download(self, times: int = 1) -> None:
        """The next `times` downloads send half the file under the full Content-Length, then close."""
        with self._cond:
            self._truncate += times

    def _check_route(self, route: str) -> None:
        if route not in ROUTES:
            raise ValueError(f"route must be one of {sorted(ROUTES)}, not {route!r}")

    def _add_fault(self, route: str, fault: _Fault, times: int) -> None:
        self._check_route(route)
        with self._cond:
            self._faults[route].extend([fault] * times)

    # -- request handling (called from handler threads) --------------------------------------

    def _record(self, method: str, target: str, host: str = "", auth: str | None = None) -> None:
        with self._cond:
            self._requests.append((method, target))
            self._received.append(Received(method, target, host, auth))
            self._cond.notify_all()

    def _next_fault(self, route: str) -> tuple[_Fault | None, float]:
        with self._cond:
            fault = self._faults[route].popleft() if self._faults[route] else None
            delay = self._slow[route].popleft() if self._slow[route] else 0.0
            return fault, delay

    def _next_hold(self, route: str) -> threading.Event | None:
        with self._cond:
            return self._holds[route].popleft() if self._holds[route] else None

    def _authorized(self, header: str | None) -> bool:
        scheme, _, token = (header or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() not in ("bearer", "token") or not token:
            return False
        return self._tokens is None or token in self._tokens

    def _rate_headers(self, route: str) -> tuple[dict[str, str], bool]:
        """The rate-limit headers for this request, and whether it is over the limit (only
        when limits are enforced). Separate buckets as observed: creates 600/min, everything
        else 3000/min; windows follow the double's clock (an injected clock resets them)."""
        bucket = "create" if route == "create" else "other"
        limit = (self._limits or {}).get(bucket, 600 if bucket == "create" else 3000)
        now = self._clock().timestamp()
        minute = int(now // 60)
        with self._cond:
            last, count = self._rate.get(bucket, (minute, 0))
            count = count + 1 if last == minute else 1
            self._rate[bucket] = (minute, count)
        reset = max(1, math.ceil(60 - now % 60))
        headers = {"ratelimit-remaining": str(max(limit - count, 0)), "ratelimit-reset": str(reset)}
        over = self._limits is not None and bucket in self._limits and count > limit
        if over:
            headers["Retry-After"] = str(reset)
        return headers, over

    def _json(self, p: _Prediction, *, initial: bool = False) -> dict[str, Any]:
        """The prediction as the API shows it; `initial` = the fresh create answer (starting)."""
        status = "starting" if initial else p.status
        d: dict[str, Any] = {
            "id": p.id,
            "model": p.model,
            "version": p.version,
            "input": p.input,
            "logs": "" if initial else p.logs(),
            "output": None,
            "data_removed": p.data_removed,
            "error": None if initial else p.error,
            "source": "api",
            "status": status,
            "created_at": _iso(p.created_at),
            "urls": {
                "cancel": f"{self.url}/v1/predictions/{p.id}/cancel",
                "get": f"{self.url}/v1/predictions/{p.id}",
                "web": f"https://replicate.com/p/{p.id}",
            },
        }
        d.update(p.extra)
        if p.deadline is not None:
            d["deadline"] = _iso(p.deadline)
        if initial:
            return d
        if p.started_at is not None:
            d["started_at"] = _iso(p.started_at)
        if p.completed_at is not None:
            d["completed_at"] = _iso(p.completed_at)
            metrics: dict[str, float] = {}
            if p.started_at is not None:
                metrics["predict_time"] = round((p.completed_at - p.started_at).total_seconds(), 6)
            metrics["total_time"] = round((p.completed_at - p.created_at).total_seconds(), 6)
            d["metrics"] = metrics
        if p.status == "succeeded" and not p.data_removed:
            outs = [self._output_ref(p, name) for name in p.files]
            d["output"] = outs if p.model in _LIST_OUTPUT else outs[0]
        return d

    def _output_ref(self, p: _Prediction, name: str) -> str:
        if p.behaviour.output_url is not None:
            port = self._server.server_address[1]
            return p.behaviour.output_url.format(
                base=self.url, host="127.0.0.1", port=port, id=p.id, name=name
            )
        if p.behaviour.output_as == "data":
            data = self._image(p, int(name.split("-")[1].split(".")[0]))
            mime = _FORMATS[p.fmt][1]
            return f"data:{mime};base64,{base64.b64encode(data).decode()}"
        return f"{self.url}/files/{p.id}/{name}"

    def _image(self, p: _Prediction, index: int) -> bytes:
        with self._image_lock:
            key = (p.id, index)
            if key not in self._images:
                self._images[key] = _render_image(p.model, p.input, p.seed, index)
            return self._images[key]

    def _create(
        self, model: str, version: str, body: dict[str, Any], cancel_after: float | None
    ) -> _Prediction:
        with self._cond:
            now = self._clock()
            self._seq += 1
            self._billed += 1
            inp = dict(body["input"])
            seed = inp.get("seed")
            # cog-flux picks a random 16-bit seed when none is given and logs it.
            seed = int(seed) if seed is not None else int.from_bytes(secrets.token_bytes(2), "big")
            extra = {k: body[k] for k in ("webhook", "webhook_events_filter") if k in body}
            deadline = now + timedelta(seconds=cancel_after) if cancel_after else None
            p = _Prediction(
                _new_id(),
                self._seq,
                model,
                version,
                inp,
                now,
                self._behaviour,
                seed,
                deadline,
                extra,
            )
            self._preds[p.id] = p
            self._cond.notify_all()
        # Real outputs sit on a CDN by the time the prediction completes: render them now, off
        # the request path, so a download measures the client rather than Pillow's encoder.
        threading.Thread(target=self._prerender, args=(p,), daemon=True).start()
        return p

    def _prerender(self, p: _Prediction) -> None:
        try:
            for index in range(p.num_outputs):
                self._image(p, index)
        except Exception:  # rendering again on download reports any real problem
            pass

    def _hold(self, p: _Prediction, seconds: float) -> None:
        """Prefer: wait — block until terminal, `seconds` elapsed, or the double closes."""
        end = time.monotonic() + seconds
        with self._cond:
            while not self._closing.is_set():
                now = self._clock()
                p.advance(now, self._ttl)
                remaining = end - time.monotonic()
                if p.status in TERMINAL or remaining <= 0:
                    return
                events = [t for t in (*p.planned(), p.deadline) if t is not None and t > now]
                timeout = remaining
                if events:
                    timeout = min(timeout, (min(events) - now).total_seconds() + 0.001)
                if self._fake_clock:
                    timeout = min(timeout, 0.05)  # an injected clock can jump without notice
                self._cond.wait(timeout)

    def _get(self, pid: str, *, count_poll: bool) -> _Prediction | None:
        with self._cond:
            p = self._preds.get(pid)
            if p is None:
                return None
            now = self._clock()
            if count_poll and p.behaviour.polls is not None and p.status not in TERMINAL:
                p.gets += 1
                p.poll_started = p.poll_started or now
                if p.gets >= p.behaviour.polls:
                    p.poll_done = now
            p.advance(now, self._ttl)
            self._cond.notify_all()
            return p

    def _list(self, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._cond:
            now = self._clock()
            try:
                after = _parse_time(query["created_after"]) if "created_after" in query else None
                before = _parse_time(query["created_before"]) if "created_before" in query else None
                cursor = _decode_cursor(query["cursor"]) if "cursor" in query else None
            except (ValueError, KeyError, TypeError):
                return 400, {"detail": "Invalid query parameter.", "status": 400}
            items = sorted(self._preds.values(), key=_list_key, reverse=True)
            items = [
                p
                for p in items
                if (after is None or p.created_at > after)
                and (before is None or p.created_at < before)
                and query.get("source", "api") == "api"
            ]
            n = self._page_size
            if cursor is None:
                page = items[:n]
            elif cursor[0] == "older":
                page = [p for p in items if _list_key(p) < cursor[1]][:n]
            else:
                newer = [p for p in items if _list_key(p) > cursor[1]]
                page = newer[-n:]
            for p in page:
                p.advance(now, self._ttl)
            keep = {k: v for k, v in query.items() if k != "cursor"}

            def link(direction: str, p: _Prediction) -> str:
                params = {**keep, "cursor": _encode_cursor(direction, _list_key(p))}
                return f"{self.url}/v1/predictions?{urlencode(params)}"

            nxt = prev = None
            if page and any(_list_key(p) < _list_key(page[-1]) for p in items):
                nxt = self._hostile_next or link("older", page[-1])
            if page and any(_list_key(p) > _list_key(page[0]) for p in items):
                prev = link("newer", page[0])
            return 200, {"next": nxt, "previous": prev, "results": [self._json(p) for p in page]}


def _list_key(p: _Prediction) -> tuple[str, int]:
    return (_iso(p.created_at), p.seq)


def _encode_cursor(direction: str, key: tuple[str, int]) -> str:
    raw = json.dumps([direction, key[0], key[1]]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(text: str) -> tuple[str, tuple[str, int]]:
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    direction, at, seq = json.loads(raw)
    if direction not in ("older", "newer"):
        raise ValueError(direction)
    return direction, (str(at), int(seq))


# -------------------------------------------------------------------------------- HTTP server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # keep-alive handler threads must not delay close()
    allow_reuse_address = True
    # socketserver's default backlog of 5 drops connections when a batch opens dozens at once
    # (a reset a second later); the real API takes them.
    request_queue_size = 128
    double: ReplicateDouble


_UNAUTHENTICATED = {
    "title": "Unauthenticated",
    "detail": "You did not pass a valid authentication token",
    "status": 401,
}
_NOT_FOUND = {"detail": "The requested resource could not be found.", "status": 404}
_NO_CREDIT = (
    "You have insufficient credit to run this model. "
    "Go to https://replicate.com/account/billing#billing to purchase credit."
)
_CLOUDFLARE_HTML = """<!DOCTYPE html>
<html lang="en-US">
<head><title>api.replicate.com | {status}: {phrase}</title></head>
<body>
<div id="cf-wrapper"><div id="cf-error-details">
<h1><span>{phrase}</span> <span>Error code {status}</span></h1>
<p>Visit <a href="https://www.cloudflare.com/">cloudflare.com</a> for more information.</p>
<span>Cloudflare Ray ID: <strong>{ray}</strong></span>
</div></div>
</body>
</html>
"""


def _problem(status: int, retry_after: int | None = None) -> dict[str, Any]:
    """The body Replicate sends for a scripted failure with this status."""
    if status == 401:
        return dict(_UNAUTHENTICATED)
    if status == 402:
        return {"detail": _NO_CREDIT, "status": 402}
    if status == 404:
        return dict(_NOT_FOUND)
    if status == 422:
        fields = [_invalid("required", "input", "prompt is required")]
        return _validation_problem(fields)
    if status == 429:
        if retry_after is None:
            return {"detail": "Request was throttled.", "status": 429}
        detail = f"Request was throttled. Your rate limit resets in ~{retry_after}s."
        return {"detail": detail, "status": 429, "retry_after": retry_after}
    phrase = _phrase(status)
    if status >= 500:
        return {"title": phrase, "detail": phrase, "status": status}
    return {"detail": phrase, "status": status}


_ECHO_FORMS = frozenset(
    {"plain", "upper", "url", "base64", "json", "hex", "html", "split", "spaced", "reversed"}
)


def _echo(form: str, authorization: str) -> dict[str, Any]:
    """A careless server's error that repeats the credential it was given."""
    token = authorization.partition(" ")[2]
    shown = {
        "plain": token,
        "upper": token.upper(),
        "url": "".join(f"%{b:02X}" for b in token.encode()),
        "base64": base64.b64encode(authorization.encode()).decode(),
        # A JSON document quoted inside the detail, its string fully \u-escaped.
        "json": '{"token": "' + "".join(f"\\u{ord(c):04x}" for c in token) + '"}',
        "hex": token.encode().hex(),
        "html": "".join(f"&#{ord(c)};" for c in token),
        "split": token[: len(token) // 2] + "\n" + token[len(token) // 2 :],
        "spaced": " ".join(token),
        "reversed": token[::-1],
    }[form]
    return {"detail": f"Invalid request from client {shown}", "status": 400}


def _validation_problem(fields: list[dict[str, str]]) -> dict[str, Any]:
    detail = "".join(f"- {f['field']}: {f['description']}\n" for f in fields)
    return {
        "title": "Input validation failed",
        "detail": detail,
        "status": 422,
        "invalid_fields": fields,
    }


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


_PATHS: list[tuple[str, str, re.Pattern[str]]] = [
    ("POST", "create", re.compile(r"^/v1/models/(?P<owner>[^/]+)/(?P<name>[^/]+)/predictions$")),
    ("POST", "create", re.compile(r"^/v1/predictions$")),
    ("GET", "list", re.compile(r"^/v1/predictions$")),
    ("GET", "get", re.compile(r"^/v1/predictions/(?P<id>[^/]+)$")),
    ("POST", "cancel", re.compile(r"^/v1/predictions/(?P<id>[^/]+)/cancel$")),
    ("GET", "file", re.compile(r"^/files/(?P<id>[^/]+)/(?P<file>[^/]+)$")),
    ("GET", "model", re.compile(r"^/v1/models/(?P<owner>[^/]+)/(?P<name>[^/]+)$")),
    (
        "GET",
        "model",
        re.compile(r"^/v1/models/(?P<owner>[^/]+)/(?P<name>[^/]+)/versions/(?P<version>[^/]+)$"),
    ),
]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    _hold: threading.Event | None = None  # this answer waits for it (hold_next)

    def version_string(self) -> str:
        return "cloudflare"  # api.replicate.com sits behind Cloudflare

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # quiet: tests assert on rep.requests instead

    def date_time_string(self, timestamp: float | None = None) -> str:
        # The Date header comes from the double's clock, so an injected clock is a skewed server.
        # skew_date() moves the header alone (a Date that disagrees with created_at).
        double = self.server.double
        return format_datetime((double._clock() + double._date_offset).astimezone(UTC), usegmt=True)

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without NODELAY, Nagle + delayed ACK adds ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.double._cond:
            self.server.double._conns.add(self.connection)

    def finish(self) -> None:
        with self.server.double._cond:
            self.server.double._conns.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def do_GET(self) -> None:  # noqa: N802
        self._handle()

    def do_POST(self) -> None:  # noqa: N802
        self._handle()

    do_PUT = do_DELETE = do_PATCH = do_POST  # no such routes: answered 404

    # -- plumbing ---------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _reset(self) -> None:
        """Abort the connection: SO_LINGER 0 makes close() send RST instead of FIN."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()  # the makefile() holds a reference that would keep the fd open
            self.connection.close()
        except OSError:
            pass
        raise _Reset

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        truncate: bool = False,
    ) -> None:
        if delay > 0:
            self.server.double._closing.wait(delay)
        hold, self._hold = self._hold, None
        while hold is not None and not hold.wait(0.05) and not self.server.double._closing.is_set():
            pass
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if truncate:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if truncate else body)

    def _send_json(
        self,
        status: int,
        obj: Any,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
    ) -> None:
        problem = status >= 400
        ctype = "application/problem+json" if problem else "application/json; charset=UTF-8"
        body = json.dumps(obj, separators=(",", ":")).encode()
        self._send(status, body, ctype, headers, delay)

    # -- dispatch ---------------------------------------------------------------------------

    def _handle(self) -> None:
        rep = self.server.double
        rep._record(
            self.command, self.path, self.headers.get("Host", ""), self.headers.get("Authorization")
        )
        try:
            raw = self._read_body()
            self._dispatch(rep, raw)
        except _Reset:
            return
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _dispatch(self, rep: ReplicateDouble, raw: bytes) -> None:
        split = urlsplit(self.path)
        route, params = "", {}
        for method, name, pattern in _PATHS:
            m = pattern.match(split.path)
            if m and method == self.command:
                route, params = name, m.groupdict()
                break
        if not route:
            self._send_json(404, _NOT_FOUND)
            return
        fault, delay = rep._next_fault(route)
        self._hold = rep._next_hold(route)
        if fault is not None and fault.kind == "reset":
            self._reset()
        if fault is not None and fault.kind == "echo":
            self._send_json(400, _echo(str(fault.body), self.headers.get("Authorization") or ""))
            return
        headers, throttled = rep._rate_headers(route)
        if throttled:
            retry_after = int(headers["Retry-After"])
            self._send_json(429, _problem(429, retry_after), headers, delay)
            return
        if fault is not None:
            self._send_fault(fault, headers, delay)
            return
        if route != "file" and not rep._authorized(self.headers.get("Authorization")):
            self._send_json(401, _UNAUTHENTICATED, headers, delay)
            return
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        if route == "create":
            self._create(rep, params, raw, headers, delay)
        elif route == "get":
            p = rep._get(params["id"], count_poll=True)
            if p is None:
                self._send_json(404, _NOT_FOUND, headers, delay)
            else:
                with rep._cond:
                    obj = rep._json(p)
                self._send_json(200, obj, headers, delay)
        elif route == "cancel":
            p = rep._get(params["id"], count_poll=False)
            if p is None:
                self._send_json(404, _NOT_FOUND, headers, delay)
                return
            with rep._cond:
                p.cancel(rep._clock())
                rep._cond.notify_all()
                obj = rep._json(p)
            self._send_json(200, obj, headers, delay)
        elif route == "list":
            status, obj = rep._list(query)
            self._send_json(status, obj, headers, delay)
        elif route == "model":
            self._model(rep, params, headers, delay)
        else:
            self._file(rep, params, delay)

    def _send_fault(self, fault: _Fault, headers: dict[str, str], delay: float) -> None:
        status = fault.status
        if fault.retry_after is not None:
            headers["Retry-After"] = str(fault.retry_after)
        if fault.html or (fault.body is not None and not isinstance(fault.body, dict | list)):
            if fault.body is not None and not isinstance(fault.body, dict | list):
                text = fault.body if isinstance(fault.body, bytes) else str(fault.body).encode()
            else:
                ray = secrets.token_hex(8)
                text = _CLOUDFLARE_HTML.format(status=status, phrase=_phrase(status), ray=ray)
                text = text.encode()
            self._send(status, text, "text/html; charset=UTF-8", headers, delay)
            return
        body = fault.body if fault.body is not None else _problem(status, fault.retry_after)
        self._send_json(status, body, headers, delay)

    def _create(
        self,
        rep: ReplicateDouble,
        params: dict[str, str],
        raw: bytes,
        headers: dict[str, str],
        delay: float,
    ) -> None:
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            self._send_json(
                400, {"detail": "Invalid JSON in request body.", "status": 400}, headers, delay
            )
            return
        if not isinstance(body, dict):
            fields = [
                _invalid(
                    "invalid_type",
                    "(root)",
                    "Invalid type. Expected: object, given: " + _type_name(body),
                )
            ]
            self._send_json(422, _validation_problem(fields), headers, delay)
            return
        if "owner" in params:
            model, version = f"{params['owner']}/{params['name']}", "hidden"
            if model not in MODEL_INPUTS:
                self._send_json(404, _NOT_FOUND, headers, delay)
                return
            allowed = _BODY_KEYS
        else:
            resolved = _resolve_version(body.get("version"))
            if resolved is None:
                self._send_json(
                    422,
                    {
                        "title": "Invalid version or not permitted",
                        "detail": "The specified version does not exist (or perhaps you don't have "
                        "permission to use it?)",
                        "status": 422,
                    },
                    headers,
                    delay,
                )
                return
            model, version = resolved
            allowed = _BODY_KEYS | {"version"}
        fields = [
            _invalid(
                "additional_property_not_allowed",
                "(root)",
                f"Additional property {key} is not allowed",
            )
            for key in body
            if key not in allowed
        ]
        if "input" not in body:
            fields.append(_invalid("required", "(root)", "input is required"))
        else:
            fields += _validate_input(model, body["input"])
        if fields:
            self._send_json(422, _validation_problem(fields), headers, delay)
            return
        cancel_after: float | None = None
        if (header := self.headers.get("Cancel-After")) is not None:
            cancel_after = _parse_duration(header)
            if cancel_after is None or not 5 <= cancel_after <= 86400:
                self._send_json(
                    400,
                    {
                        "title": "Invalid Cancel-After header",
                        "detail": "Cancel-After must be a duration between 5s and 24h, "
                        "e.g. 30, 30s, 5m or 1h30m45s.",
                        "status": 400,
                    },
                    headers,
                    delay,
                )
                return
        prefer = _PREFER.match((self.headers.get("Prefer") or "").strip())
        p = rep._create(model, version, body, cancel_after)
        with rep._cond:
            reset = rep._reset_after_create > 0
            rep._reset_after_create -= int(reset)
        if reset:
            self._reset()
        headers["Location"] = f"{rep.url}/v1/predictions/{p.id}"
        if prefer:
            wait_s = int(prefer.group(1) or 60)
            headers["Preference-Applied"] = f"wait={prefer.group(1)}" if prefer.group(1) else "wait"
            rep._hold(p, wait_s)
            with rep._cond:
                obj = rep._json(p)
        else:
            with rep._cond:
                obj = rep._json(p, initial=True)
        self._send_json(201, obj, headers, delay)

    def _model(
        self, rep: ReplicateDouble, params: dict[str, str], headers: dict[str, str], delay: float
    ) -> None:
        model = f"{params['owner']}/{params['name']}"
        version_id = REPLICATE_VERSIONS.get(model)
        if version_id is None or params.get("version") not in (None, version_id):
            self._send_json(404, _NOT_FOUND, headers, delay)
            return
        version = {
            "id": version_id,
            "created_at": "2024-08-01T00:00:00.000000Z",
            "cog_version": "0.9.13",
            "openapi_schema": _openapi_schema(model),
        }
        if params.get("version"):
            self._send_json(200, version, headers, delay)
            return
        owner, name = model.split("/")
        self._send_json(
            200,
            {
                "url": f"https://replicate.com/{model}",
                "owner": owner,
                "name": name,
                "description": f"{name} (served by the imagen Replicate double)",
                "visibility": "public",
                "github_url": None,
                "paper_url": None,
                "license_url": None,
                "run_count": len(rep._preds),
                "cover_image_url": None,
                "default_example": None,
                "latest_version": version,
            },
            headers,
            delay,
        )

    def _file(self, rep: ReplicateDouble, params: dict[str, str], delay: float) -> None:
        p = rep._get(params["id"], count_poll=False)
        name = params["file"]
        if p is None or name not in p.files:
            # replicate.delivery is a CDN: its 404 is not a problem+json body.
            self._send(404, b"Not Found", "text/plain; charset=utf-8", delay=delay)
            return
        data = rep._image(p, int(name.split("-")[1].split(".")[0]))
        with rep._cond:
            corrupt, truncate = rep._corrupt > 0, rep._corrupt <= 0 and rep._truncate > 0
            rep._corrupt -= int(corrupt)
            rep._truncate -= int(truncate)
        if corrupt:
            # Deterministic garbage of a plausible length, not decodable as any image.
            data = hashlib.sha256(name.encode()).digest() * max(1, len(data) // 32)
        headers = {"Cache-Control": "public, max-age=3600"}
        self._send(200, data, _FORMATS[p.fmt][1], headers, delay, truncate=truncate)


def _resolve_version(value: Any) -> tuple[str, str] | None:
    """(model, version id) for `<hex>`, `owner/name:<hex>` or an official `owner/name`."""
    if not isinstance(value, str):
        return None
    ref, _, vid = value.partition(":")
    if not vid and _HEX64.match(ref):
        model = _VERSION_MODELS.get(ref)
        return (model, ref) if model else None
    if vid:
        return (ref, vid) if REPLICATE_VERSIONS.get(ref) == vid else None
    return (ref, REPLICATE_VERSIONS[ref]) if ref in REPLICATE_VERSIONS else None


# ----------------------------------------------------------------------------------- standalone


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m imagen.testing.replicate",
        description="Serve a local Replicate API double; prints its base URL first.",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--token",
        action="append",
        default=[],
        help="accepted API token (repeatable; default: any token)",
    )
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with ReplicateDouble(token=set(args.token) or None, port=args.port, host=args.host) as rep:
        print(rep.url, flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
