"""`imagen backends [--check] [NAME]`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypedDict

from cyclopts import Parameter

from imagen.cli import context, render

if TYPE_CHECKING:
    from imagen.backends.contract import Backend


class BackendObject(TypedDict):
    """`backends --json`: one per configured backend."""

    name: str
    type: str
    model: str | None
    status: str
    ready: bool
    default: bool


@render.outputs(list[BackendObject])
def backends(
    name: str | None = None,
    /,
    *,
    check: bool = False,
    json_output: Annotated[bool, Parameter(name="--json")] = False,
) -> int:
    """List configured backends and their status.

    One row per backend: name, type, model, whether it is the default, status, and in JSON
    whether it is ready. Status: `configured` (set up here; not asked), what is missing, or with
    --check what the server answered (`ok (...)` once it answered and has what jobs need).

    Examples of use:
      imagen backends
      imagen backends --check        # also ask each server (short timeouts)
      imagen backends flux-dev-replicate --check && echo ready
      imagen backends --json | jq -r '.[] | select(.ready) | .name'

    With --check, exits 3 when the default backend (or NAME) is not ready, so scripts can use
    it as a health check.

    Parameters
    ----------
    name
        Only this backend.
    check
        Probe each backend over the network (short timeouts): the server answers, and it has
        what the job's graph needs (ComfyUI: the model files its loaders list, the workflow file).
    json_output
        Print a JSON array of {name, type, model, status, ready, default}.
    """
    from imagen import backends as registry
    from imagen.app.errors import UserError
    from imagen.app.exit_codes import ExitCode

    cfg = context.session().config()
    if name is not None and name not in cfg.backends:
        raise UserError(
            f"no backend {name!r}; configured: {', '.join(cfg.backends)}", ExitCode.BAD_INPUT
        )
    rows = []
    for bname, b in cfg.backends.items():
        if name is not None and bname != name:
            continue
        module = registry.load(b.type)
        status = module.status(b.options, context.session().env.env)
        if check and status == "ok":
            status = _check_members(module, b.options)
        elif status == "ok":
            status = "configured"  # set up here; not asked: only --check says it answers
        rows.append(
            {
                "name": bname,
                "type": b.type,
                "model": module.describe_model(_with_files(module, b.options), b.model),
                "status": status,
                "ready": status.startswith("ok") or status == "configured",
                "default": bname == cfg.default_backend,
            }
        )
    if json_output:
        render.print_json(rows)
    else:
        render.table(rows, COLUMNS)
    if check:
        wanted = name or cfg.default_backend
        if any(r["name"] == wanted and not r["ready"] for r in rows):
            return int(ExitCode.BACKEND_UNAVAILABLE)
    return 0


COLUMNS = [
    render.Column("name"),
    render.Column("type", drop=2),
    render.Column("model", shrink=True, drop=1),
    render.Column("default", tty=lambda v: "*" if v else ""),
    render.Column("status"),  # whole: a cut `not config…` hides what to set
]


def _with_files(module: Backend, options: dict[str, Any]) -> dict[str, Any]:
    """The options with the files they name read in, as a job would record them (a file
    that cannot be read is left out; --check says so)."""
    options = dict(options)
    for key in module.FILE_OPTIONS:
        if options.get(key):
            try:
                options[f"{key}_content"] = Path(options[key]).expanduser().read_text()
            except (OSError, UnicodeDecodeError):
                pass
    return options


def _check_members(module: Backend, options: dict[str, Any]) -> str:
    """A pool (ComfyUI `urls`) is checked member by member: ready while one member is."""
    urls = getattr(module, "members", lambda _options: ())(options)
    if not urls:
        return _check(module, options)
    said = [(url, _check(module, {**options, "url": url})) for url in urls]
    ready = sum(1 for _, s in said if s.startswith("ok"))
    each = "; ".join(f"{url}: {s}" for url, s in said)
    return f"{'ok' if ready else 'not ready'} ({ready}/{len(urls)} members ready): {each}"


def _check(module: Backend, options: dict[str, Any]) -> str:
    from imagen.runner.http import Http, TransportFailure

    options = dict(options)
    for key in module.FILE_OPTIONS:
        if options.get(key):
            path = Path(options[key]).expanduser()
            try:
                options[f"{key}_content"] = path.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                return f"not ready: {key} file {path}: {getattr(exc, 'strerror', None) or exc}"
    method, url, auth_env = module.probe_request(options)
    headers = {}
    if auth_env and context.session().env.env.get(auth_env):
        headers["Authorization"] = f"Bearer {context.session().env.env[auth_env]}"
    http = Http()
    try:
        reply = http.send(method, url, headers=headers, timeout_s=3.0)
    except TransportFailure as f:
        return f"unreachable ({f.kind}: {url})"
    verdict = module.probe_verdict(reply.status, reply.body())
    if not verdict.startswith("ok"):
        return verdict
    answers: list[tuple[int | None, Any]] = []
    for method, url in module.check_requests(options):
        try:
            more = http.send(method, url, headers=headers, timeout_s=3.0)
            answers.append((more.status, more.body()))
        except TransportFailure:
            answers.append((None, None))
    missing = module.check_verdict(options, answers)
    return verdict if missing is None else f"not ready: {missing}"
