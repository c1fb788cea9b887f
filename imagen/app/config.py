"""TOML configuration: where it lives, the sample, and validation with errors that name the fix."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from imagen.app.errors import UserError
from imagen.app.paths import config_path, default_ledger_url
from imagen.backends.contract import COMMON, Option

SAMPLE = """\
# imagen configuration. `imagen config show` prints the effective values.
default_backend = "flux-schnell-local"

[backends.flux-schnell-local]
type = "comfyui"
url = "http://127.0.0.1:8188"
unet = "flux1-schnell-fp8.safetensors"
clip_l = "clip_l.safetensors"
t5xxl = "t5xxl_fp8_e4m3fn.safetensors"
vae = "ae.safetensors"
sampler = "euler"
scheduler = "simple"
default_steps = 4
timeout_s = 300
unreachable_hint = "start ComfyUI: python main.py --listen 127.0.0.1 --port 8188"
# token_env = "COMFYUI_TOKEN"      # bearer token for an auth proxy in front of ComfyUI
# workflow = "~/my-flux-workflow.json"  # your own API-format graph with {{prompt}} {{seed}} ...

[backends.flux-schnell-replicate]
type = "replicate"
model = "black-forest-labs/flux-schnell"
api_token_env = "REPLICATE_API_TOKEN"

[backends.flux-dev-replicate]
type = "replicate"
model = "black-forest-labs/flux-dev"
api_token_env = "REPLICATE_API_TOKEN"
default_steps = 28

[output]
directory = "~/Pictures/imagen"
preview = "auto"                   # auto | on | off (or true | false)
preview_command = []               # empty: the first installed of tmux-img, chafa, timg, viu, catimg
private_sidecars = true            # sidecars (they hold the prompt) are 0600 like the ledger

[ledger]
url = ""                           # empty: a SQLite file in the user data directory

[usage]
supabase_url = ""                  # or env SUPABASE_URL; empty: usage stays local
key_env = "SUPABASE_SERVICE_ROLE_KEY"
database_url = ""                  # for `imagen db upgrade usage`; or env IMAGEN_USAGE_DATABASE_URL
"""


class ConfigError(UserError):
    """One line naming the file, the key and what is allowed."""


@dataclass(frozen=True)
class BackendConfig:
    name: str
    type: str
    options: dict[str, Any]

    @property
    def model(self) -> str:
        return str(self.options.get("model") or "")


@dataclass(frozen=True)
class OutputConfig:
    directory: str = "~/Pictures/imagen"
    preview: str = "auto"
    preview_command: tuple[str, ...] = ()  # empty: detect an installed viewer (app/preview.py)
    # Sidecars carry the prompt: private (0600) like the ledger unless relaxed here.
    private_sidecars: bool = True

    @property
    def sidecar_mode(self) -> int:
        return 0o600 if self.private_sidecars else 0o644


@dataclass(frozen=True)
class UsageConfig:
    supabase_url: str = ""
    key_env: str = "SUPABASE_SERVICE_ROLE_KEY"
    database_url: str = ""


@dataclass(frozen=True)
class Config:
    source: str
    default_backend: str
    backends: dict[str, BackendConfig]
    output: OutputConfig = field(default_factory=OutputConfig)
    ledger_url: str = ""
    usage: UsageConfig = field(default_factory=UsageConfig)
    ledger_durability: str = "full"

    def backend(self, name: str | None) -> BackendConfig:
        chosen = name or self.default_backend
        if chosen not in self.backends:
            raise ConfigError(
                f"unknown backend {chosen!r}; configured: {', '.join(self.backends)} "
                f"(see `imagen backends`)"
            )
        return self.backends[chosen]


def load_config(explicit: str | None = None, env: Mapping[str, str] | None = None) -> Config:
    """The config file if it exists, else the sample's defaults; env overrides on top."""
    import tomllib  # here, not at the top: `imagen config path` must start fast

    env = os.environ if env is None else env
    path = config_path(explicit, env)
    if path.exists():
        try:
            raw = tomllib.loads(path.read_bytes().decode("utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{path}: not UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                "save it as UTF-8"
            ) from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the config: {exc.strerror}") from None
        source = str(path)
    elif explicit or env.get("IMAGEN_CONFIG"):
        import shlex

        raise ConfigError(
            f"{path}: no such config file (create it with "
            f"`imagen config init --path {shlex.quote(str(path))}`)"
        )
    else:
        raw, source = tomllib.loads(SAMPLE), "built-in defaults"
    return parse_config(raw, source, env)


def _check(source: str, key: str, value: Any, option: Option) -> Any:
    if option.choices and value not in option.choices:
        raise ConfigError(f"{source}: {key} = {value!r} is not allowed; use {option.describe()}")
    if not isinstance(value, option.types) or (
        isinstance(value, bool) and bool not in option.types
    ):
        raise ConfigError(
            f"{source}: {key} must be {option.describe()}, not {type(value).__name__}"
        )
    if isinstance(value, int | float) and not isinstance(value, bool):
        low, high = option.minimum, option.maximum
        if (
            not math.isfinite(value)
            or (option.positive and value <= 0)
            or (low is not None and value < low)
            or (high is not None and value > high)
        ):
            raise ConfigError(
                f"{source}: {key} = {value!r} is out of range; use {option.describe()}"
            )
    # An optional URL (no default) may be left empty: empty means not configured.
    optional = option.default is None and value == ""
    if option.url and isinstance(value, str) and not optional and not _is_http_url(value):
        raise ConfigError(f"{source}: {key} = {value!r} is not a URL; use {option.describe()}")
    return value


def _is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and value == value.strip()


def check_ledger_url(url: str, where: str) -> str:
    """sqlite:///path or postgresql://…; anything else is refused before it is opened."""
    if not url:
        return url
    scheme, sep, rest = url.partition("://")
    ok = sep and (
        (scheme == "sqlite" and rest.startswith("/") and len(rest) > 1)
        or (scheme.split("+")[0] in ("postgresql", "postgres") and rest)
    )
    if not ok:
        raise ConfigError(
            f"{where}: ledger URL {url!r} is not sqlite:////absolute/path.db or "
            "postgresql://user@host/db"
        )
    return url


_TOP = {"default_backend", "backends", "output", "ledger", "usage"}
_OUTPUT = {
    "directory": Option((str,)),
    "preview": Option((str,), choices=("auto", "on", "off")),
    "preview_command": Option((list,)),
    "private_sidecars": Option((bool,)),
}
_LEDGER = {"url": Option((str,)), "durability": Option((str,), choices=("full", "normal"))}
_USAGE = {
    "supabase_url": Option((str,), url=True),
    "key_env": Option((str,)),
    "database_url": Option((str,)),
}


def _section(source: str, name: str, raw: Any, spec: dict[str, Option]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: [{name}] must be a table")
    for key, value in raw.items():
        if key not in spec:
            raise ConfigError(
                f"{source}: unknown key {name}.{key}; allowed: {', '.join(sorted(spec))}"
            )
        _check(source, f"{name}.{key}", value, spec[key])
    return raw


def parse_config(raw: dict[str, Any], source: str, env: Mapping[str, str]) -> Config:
    import tomllib

    from imagen import backends

    if "backends" not in raw:
        # A config that only sets, say, [output] keeps the sample's three backends.
        sample = tomllib.loads(SAMPLE)
        raw = {"backends": sample["backends"], "default_backend": sample["default_backend"], **raw}
    for key in raw:
        if key not in _TOP:
            raise ConfigError(f"{source}: unknown key {key!r}; allowed: {', '.join(sorted(_TOP))}")
    if not isinstance(raw.get("backends", {}), dict):
        raise ConfigError(f"{source}: backends must be a table of [backends.NAME] tables")
    parsed: dict[str, BackendConfig] = {}
    for name, table in _section(
        source,
        "backends",
        raw.get("backends", {}),
        {k: Option((dict,)) for k in raw.get("backends", {})},
    ).items():
        type_name = table.get("type")
        if type_name not in backends.names():
            raise ConfigError(
                f"{source}: backends.{name}.type = {type_name!r}; allowed: "
                f"{', '.join(backends.names())}"
            )
        module = backends.load(type_name)
        spec = {**COMMON, **module.CONFIG}
        options = {k: v.default for k, v in spec.items() if v.default is not None}
        options["model"] = module.DEFAULT_MODEL
        for key, value in _section(source, f"backends.{name}", table, spec).items():
            options[key] = float(value) if spec[key].types == (float, int) else value
        wrong = getattr(module, "check_options", lambda _table: None)(table)
        if wrong:  # keys that are wrong together (a ComfyUI pool's url and urls)
            raise ConfigError(f"{source}: backends.{name}: {wrong}")
        parsed[name] = BackendConfig(name, type_name, options)
    default = raw.get("default_backend", next(iter(parsed), ""))
    if default not in parsed:
        raise ConfigError(
            f"{source}: default_backend = {default!r} is not a configured backend; "
            f"allowed: {', '.join(parsed) or '(none configured)'}"
        )
    raw_output = raw.get("output", {})
    if isinstance(raw_output, dict) and isinstance(raw_output.get("preview"), bool):
        # TOML has booleans, and `preview = true` is the natural thing to write.
        raw_output = {**raw_output, "preview": "on" if raw_output["preview"] else "off"}
    out = _section(source, "output", raw_output, _OUTPUT)
    ledger = _section(source, "ledger", raw.get("ledger", {}), _LEDGER)
    usage = _section(source, "usage", raw.get("usage", {}), _USAGE)
    if env.get("SUPABASE_URL") and not _is_http_url(env["SUPABASE_URL"]):
        raise ConfigError(
            f"SUPABASE_URL = {env['SUPABASE_URL']!r} is not a URL; "
            "use https://<project>.supabase.co"
        )
    if "preview_command" in out and not all(isinstance(a, str) for a in out["preview_command"]):
        raise ConfigError(f"{source}: output.preview_command must be a list of strings")
    return Config(
        source=source,
        default_backend=default,
        backends=parsed,
        output=OutputConfig(
            directory=out.get("directory", OutputConfig.directory),
            preview=out.get("preview", OutputConfig.preview),
            preview_command=tuple(out.get("preview_command", OutputConfig.preview_command)),
            private_sidecars=out.get("private_sidecars", OutputConfig.private_sidecars),
        ),
        ledger_url=check_ledger_url(env["IMAGEN_LEDGER_URL"], "IMAGEN_LEDGER_URL")
        if env.get("IMAGEN_LEDGER_URL")
        else check_ledger_url(ledger.get("url") or "", f"{source}: ledger.url"),
        ledger_durability=ledger.get("durability", "full"),
        usage=UsageConfig(
            supabase_url=env.get("SUPABASE_URL") or usage.get("supabase_url", ""),
            key_env=usage.get("key_env", UsageConfig.key_env),
            database_url=env.get("IMAGEN_USAGE_DATABASE_URL") or usage.get("database_url", ""),
        ),
    )


def ledger_url(config: Config) -> str:
    return config.ledger_url or default_ledger_url()


def migration_url(branch: str) -> str:
    """The database URL `alembic upgrade <branch>@head` works on (from env or config)."""
    config = load_config()
    if branch == "ledger":
        return ledger_url(config)
    if not config.usage.database_url:
        raise ConfigError(
            "no usage database: set IMAGEN_USAGE_DATABASE_URL or [usage] database_url"
        )
    return config.usage.database_url


def masked(config: Config, env: Mapping[str, str]) -> dict[str, Any]:
    """The effective config for display: env-var names shown with whether they are set, URLs
    stripped of passwords."""

    def env_state(name: str) -> str:
        return f"{name} ({'set' if env.get(name) else 'not set'})"

    def strip_password(url: str) -> str:
        if "@" in url and "://" in url:
            scheme, rest = url.split("://", 1)
            creds, host = rest.rsplit("@", 1)
            return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}" if ":" in creds else url
        return url

    backends_out = {}
    for name, b in config.backends.items():
        opts = dict(b.options)
        for key in ("api_token_env", "token_env"):
            if opts.get(key):
                opts[key] = env_state(opts[key])
        backends_out[name] = {"type": b.type, **opts}
    return {
        "source": config.source,
        "default_backend": config.default_backend,
        "backends": backends_out,
        "output": {
            "directory": config.output.directory,
            "preview": config.output.preview,
            "preview_command": list(config.output.preview_command),
            "private_sidecars": config.output.private_sidecars,
        },
        "ledger": {
            "url": strip_password(ledger_url(config)),
            "durability": config.ledger_durability,
        },
        "usage": {
            "supabase_url": config.usage.supabase_url,
            "key_env": env_state(config.usage.key_env),
            "database_url": strip_password(config.usage.database_url),
        },
    }
