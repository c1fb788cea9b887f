"""`imagen mcp`: imagen's tools for agents over the Model Context Protocol (stdio), on the
official `mcp` SDK (imported by this module, which only `imagen mcp` loads: no other command
pays for it; the tools' annotations name the SDK's types, so they are imported up here).

The server is a second shell beside the cyclopts commands: each tool builds a Session (as the
CLI does, from the global --config) and calls the same use cases in imagen/app/ (generate,
quote, wait, resume, cancel) or the same projections (jobs, usage, budgets); it never goes
through cyclopts. Work runs in a worker thread per call, so one server drives several jobs at
once (one ledger, opened once, shared as a batch's workers share it).

- The caller is the server's MAI_FROM_ID or tmux pane name, else the client's name (its
  `clientInfo.name`): budgets apply to it exactly as on the CLI.
- Results are the JSON contract's objects (a job object, a list of them, ...); a failure (bad
  input, over budget, a job that failed) is a tool error whose text is the JSON error object.
- `generate` reports progress (one notification per recorded event, and the backend's steps);
  each stored image is a resource, imagen://job/ID/image/N (N from 1), listed once this server
  made it and readable for any job of the ledger.

Only `context` is used from the CLI (the global options' session): tests/test_floors.py holds
this module to that.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.to_thread
import mcp_types as types
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError

from imagen.app.errors import UserError
from imagen.app.exit_codes import ExitCode
from imagen.app.session import NoLedgerYet, Session

if TYPE_CHECKING:
    from imagen.core.job import JobState

SERVER_NAME = "imagen"
MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}


def mcp() -> int:
    """Serve imagen's tools to agents over MCP (stdio).

    A Model Context Protocol server on standard input and output: tools generate, quote,
    wait, show, jobs, resume, cancel, backends, whoami and usage, each finished image as a
    resource (imagen://job/ID/image/N). Jobs are recorded under the server's caller
    (MAI_FROM_ID, the tmux pane's name, else the client's name) and its budgets apply.
    Register it with an MCP client as the command `imagen mcp`.

    Examples of use:
      imagen mcp                          # as a client starts it: claude mcp add imagen -- imagen mcp
      imagen --config ~/team.toml mcp     # another config: the global option goes first
      MAI_FROM_ID=agent-7 imagen mcp      # jobs recorded and budgeted as agent-7
    """
    from imagen.cli import context

    base = context.session()
    server = build(config_path=base.config_path, verbosity=base.verbosity)
    server.run("stdio")
    return 0


# -- the JSON contract (one place to switch to app/contract.py's functions) --------------------


def job_object(state: JobState, *, status: str | None = None) -> dict[str, Any]:
    """The job object of every --json output (app/contract.py): MCP results are the same."""
    from imagen.app.contract import job_object as contract_job_object

    return dict(contract_job_object(state, status=status))


def error_object(
    code: ExitCode | int, message: str, *, hint: str | None = None, job_id: str | None = None
) -> dict[str, Any]:
    """The JSON error object {"error": {code, exit, message, hint, job_id}} (app/contract.py)."""
    from imagen.app.contract import error_object as contract_error_object

    return dict(contract_error_object(code, message, hint=hint, job_id=job_id))


class Failed(Exception):
    """A tool's failure, carrying its JSON error object."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error["error"]["message"])
        self.error = error


def check_ended_well(state: JobState) -> None:
    """A job that did not succeed is the tool's failure: its error object names the job."""
    from imagen.app.outcome import exit_code, failure_message

    code = exit_code(state)
    if code != ExitCode.OK:
        message = failure_message(state) or f"job {state.job_id} {state.status}"
        raise Failed(error_object(code, message, job_id=state.job_id))


# -- the server --------------------------------------------------------------------------------


class Imagen:
    """What every tool call shares: the environment (with the caller fixed once known), the
    config and the ledger, each made once."""

    def __init__(self, config_path: str | None, verbosity: int) -> None:
        self.config_path = config_path
        self.verbosity = verbosity
        self._lock = threading.Lock()
        self._env: Any = None
        self._base: Session | None = None
        self.caller_source = ""

    def environment(self, client_name: str | None) -> Any:
        """The Environment of every call: MAI_FROM_ID set to the resolved caller (so each use
        case resolves the same one), stdout pointed at stderr (stdout is the protocol's)."""
        with self._lock:
            if self._env is None:
                from imagen.runner.environment import Environment

                env = dict(os.environ)
                caller, self.caller_source = server_caller(env, client_name)
                self._env = Environment(env={**env, "MAI_FROM_ID": caller}, stdout=sys.stderr)
                self._base = Session(self._env, config_path=self.config_path)
            return self._env

    def session(self, client_name: str | None, *, write: bool, reporter: Any = None) -> Session:
        """A Session for one call over the shared config and ledger (opened here, once: for
        writing when `write`, else read-only, a ledger that does not exist left uncreated)."""
        env = self.environment(client_name)
        assert self._base is not None
        with self._lock:
            config = self._base.config()
            store = None
            if write:
                store = self._base.store()
            else:
                try:
                    store = self._base.reader()
                except NoLedgerYet:
                    store = None
        return Session(
            env,
            config_path=self.config_path,
            verbosity=self.verbosity,
            config=config,
            store=store,
            reporter=(lambda: reporter) if reporter is not None else None,
        )


def server_caller(env: dict[str, str], client_name: str | None) -> tuple[str, str]:
    """The caller and where it came from: MAI_FROM_ID ("env"), the tmux pane's name ("tmux"),
    else the client's name ("client"), else the OS user ("default"); app/caller.py decides
    the first two exactly as for the CLI. (With the contract's resolve_caller_source, the
    tmux/default test below is one call.)"""
    from imagen.app.caller import resolve_caller

    caller = resolve_caller(env)
    if env.get("MAI_FROM_ID"):
        return caller, "env"
    outside_tmux = {k: v for k, v in env.items() if k not in ("TMUX", "TMUX_PANE")}
    if caller != resolve_caller(outside_tmux):
        return caller, "tmux"
    return (client_name, "client") if client_name else (caller, "default")


class Progress:
    """A Reporter sending MCP progress notifications from the worker thread: one per recorded
    event and one per step the backend reports (progress counts them, always increasing)."""

    def __init__(self, send: Callable[[float, str], None]) -> None:
        self._send = send
        self._n = 0

    def _tell(self, message: str) -> None:
        self._n += 1
        try:
            self._send(self._n, message)
        except Exception:  # noqa: BLE001 - a client gone away must not fail the job
            pass

    def event(self, state: JobState, rec: Any) -> None:
        self._tell(f"job {state.job_id}: {type(rec.event).__name__}")

    def progress(self, step: int | None, total: int | None, label: str = "") -> None:
        if step is not None and total:
            self._tell(f"{label or 'step'} {step}/{total}")


class Recorded:
    """A Reporter that tells when the job it reports is recorded (its first event)."""

    def __init__(self) -> None:
        self.job_id: str | None = None
        self.ready = threading.Event()

    def event(self, state: JobState, rec: Any) -> None:
        if self.job_id is None:
            self.job_id = state.job_id
            self.ready.set()

    def progress(self, step: int | None, total: int | None, label: str = "") -> None:
        pass


def _in_background(drive: Callable[[], Any], session: Session) -> JobState:
    """Start `drive()` (one generate) in a thread of its own and return the job's state once it
    is recorded; a failure before that (a bad input) is raised here, as in the foreground.
    The thread is not a daemon: a server told to stop finishes the jobs it drives first."""
    from imagen.repository import load

    said: Recorded = session.reporter()  # type: ignore[assignment]
    failed: list[BaseException] = []

    def run() -> None:
        try:
            drive()
        except BaseException as exc:  # noqa: BLE001 - after recording, the ledger has it
            failed.append(exc)
            if said.job_id is not None:
                session.err(f"imagen: job {said.job_id}: {exc}")
        finally:
            said.ready.set()

    threading.Thread(target=run, name="imagen-detached", daemon=False).start()
    said.ready.wait()
    if said.job_id is None:
        raise failed[0] if failed else UserError("the job was not recorded", ExitCode.INTERNAL)
    return load(session.store(), said.job_id)


def build(config_path: str | None = None, verbosity: int = 0) -> MCPServer:
    """The MCPServer with imagen's tools and resources."""
    from imagen import __version__

    shared = Imagen(config_path, verbosity)
    server = MCPServer(
        SERVER_NAME,
        version=__version__,
        instructions=(
            "imagen turns prompts into images (Replicate or ComfyUI), recording every step in "
            "a ledger so nothing is paid twice. Call `quote` for a price first when it matters; "
            "`generate` returns the job object (image paths in `image`/`images`). A failure is "
            "a JSON error object: never retry a paid failure blindly, `resume` the job."
        ),
        log_level="WARNING",
    )
    listed: set[str] = set()

    def client_name(ctx: Context) -> str | None:
        try:
            params = ctx.session.client_params
            return params.client_info.name if params is not None else None
        except (AttributeError, ValueError):
            return None

    def result(data: dict[str, Any]) -> types.CallToolResult:
        """The data as JSON text and structured content, with a link to each image (each
        also listed as a resource from now on)."""
        from mcp.server.mcpserver.resources import FileResource

        content: list[Any] = [types.TextContent(type="text", text=json.dumps(data))]
        for uri, name, path in _images(data):
            content.append(
                types.ResourceLink(
                    type="resource_link", name=name, uri=uri, mime_type=mime_of(path)
                )
            )
            if uri not in listed and os.path.isabs(path):
                listed.add(uri)
                server.add_resource(
                    FileResource(uri=uri, name=name, mime_type=mime_of(path), path=path)
                )
        return types.CallToolResult(content=content, structured_content=data)

    def failure(error: dict[str, Any]) -> types.CallToolResult:
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=json.dumps(error))],
            structured_content=error,
            is_error=True,
        )

    async def call(
        ctx: Context,
        work: Callable[[Session], Any],
        *,
        write: bool = False,
        progress: bool = False,
        reporter: Any = None,
    ) -> types.CallToolResult:
        """Run `work(session)` in a worker thread; its answer, or its failure as the error
        object (a UserError keeps its exit code; anything else is a bug, INTERNAL)."""
        name = client_name(ctx)
        if progress:

            def send(n: float, message: str) -> None:
                anyio.from_thread.run(ctx.report_progress, n, None, message)

            reporter = Progress(send)

        def run() -> Any:
            session = shared.session(name, write=write, reporter=reporter)
            try:
                return work(session)
            except (UserError, Failed):
                raise
            except Exception as exc:
                ledger = session.ledger_failure(exc)
                if ledger is not None:
                    raise ledger from None
                raise

        try:
            data = await anyio.to_thread.run_sync(run)
        except Failed as exc:
            return failure(exc.error)
        except UserError as exc:  # (a UserError may name its hint and job: the contract's)
            hint, job_id = getattr(exc, "hint", None), getattr(exc, "job_id", None)
            return failure(error_object(exc.code, str(exc), hint=hint, job_id=job_id))
        except Exception as exc:  # noqa: BLE001 - a bug: one line, never a dead server
            return failure(
                error_object(ExitCode.INTERNAL, f"internal error ({type(exc).__name__}: {exc})")
            )
        return result(data)

    # -- tools ---------------------------------------------------------------------------------

    @server.tool()
    async def generate(
        prompt: str,
        ctx: Context,
        backend: str | None = None,
        aspect: str | None = None,
        size: str | None = None,
        seed: int | None = None,
        steps: int | None = None,
        per_job: int = 1,
        options: dict[str, str] | None = None,
        output: str | None = None,
        format: str | None = None,
        overwrite: bool = False,
        detach: bool = False,
    ) -> types.CallToolResult:
        """Generate an image from a prompt: records the job, drives it to its end and returns
        the job object (image paths in `image` and `images`). Progress is notified as it
        runs. `backend`: a configured backend (see `backends`); `aspect` such as 16:9 or
        `size` WIDTHxHEIGHT; `seed` (random when not given, recorded); `steps`; `per_job`:
        images made by this one job; `options`: extra model inputs (e.g. {"guidance": "3.5"});
        `output`: an image path or a directory ending in /; `format`: png, webp or jpg.
        `detach`: return the job object as soon as the job is recorded (this server drives it
        on; `wait` for it). A failure (over budget, backend down, ...) is an error with the
        JSON error object."""
        from imagen.app import generate as use_case

        def work(session: Session) -> dict[str, Any]:
            job_inputs = _job_inputs(prompt, seed, size, aspect, steps, format, options, per_job)
            drive = functools.partial(
                use_case.generate,
                session,
                job_inputs,
                backend=backend,
                output=output,
                overwrite=overwrite,
            )
            if detach:
                state = _in_background(drive, session)
                if state.finished:  # refused as it was recorded (over budget)
                    check_ended_well(state)
                return job_object(state)
            state = drive()
            check_ended_well(state)
            return job_object(state)

        if detach:
            return await call(ctx, work, write=True, reporter=Recorded())
        return await call(ctx, work, write=True, progress=True)

    @server.tool()
    async def quote(
        prompt: str,
        ctx: Context,
        backend: str | None = None,
        aspect: str | None = None,
        size: str | None = None,
        seed: int | None = None,
        steps: int | None = None,
        per_job: int = 1,
        options: dict[str, str] | None = None,
        output: str | None = None,
        format: str | None = None,
        overwrite: bool = False,
    ) -> types.CallToolResult:
        """What `generate` with the same arguments would cost and send, and whether the
        caller's budget admits it (`budget.admitted`); records and sends nothing."""
        from imagen.app.quote import quote as quote_job

        def work(session: Session) -> dict[str, Any]:
            job_inputs = _job_inputs(prompt, seed, size, aspect, steps, format, options, per_job)
            return quote_job(
                session, job_inputs, backend=backend, output=output, overwrite=overwrite
            )

        return await call(ctx, work)

    @server.tool()
    async def wait(
        job_ids: list[str], ctx: Context, timeout_s: float = 300
    ) -> types.CallToolResult:
        """Wait until these jobs (ids or unique prefixes) have ended, at most `timeout_s`
        seconds: {"jobs": [job objects of the ended], "pending": [ids still running]}."""
        from imagen.app.wait import resolve_ids
        from imagen.app.wait import wait as wait_for

        def work(session: Session) -> dict[str, Any]:
            ended: list[dict[str, Any]] = []
            waited = wait_for(
                session,
                resolve_ids(session, job_ids),
                on_end=lambda state: ended.append(
                    job_object(state, status=_status(session, state))
                ),
                timeout_s=min(max(timeout_s, 0.0), 3600.0),
            )
            return {"jobs": ended, "pending": list(waited.pending)}

        return await call(ctx, work)

    @server.tool()
    async def show(job_id: str, ctx: Context) -> types.CallToolResult:
        """One job: its job object and its whole timeline (`events`: time from its start, and
        what happened)."""
        from imagen.app.outcome import resolve_job_id
        from imagen.projections.timeline import timeline
        from imagen.repository import load

        def work(session: Session) -> dict[str, Any]:
            reader = session.reader()
            state = load(reader, resolve_job_id(reader, job_id))
            return {**job_object(state, status=_status(session, state)), "events": timeline(state)}

        return await call(ctx, work)

    @server.tool()
    async def jobs(
        ctx: Context,
        status: str | None = None,
        since: str | None = None,
        backend: str | None = None,
        caller: str | None = None,
        limit: int = 20,
    ) -> types.CallToolResult:
        """Jobs from the ledger, newest first: {"jobs": [job objects]}. `status`: running,
        interrupted, succeeded, failed or cancelled; `since`: 30m, 24h, 7d or a date."""
        from imagen.app.liveness import row_owner_alive
        from imagen.core.times import parse_since
        from imagen.projections.jobs import query as jobs_query
        from imagen.repository import load

        def work(session: Session) -> dict[str, Any]:
            if not 1 <= limit <= 1000:
                raise UserError(f"limit {limit}: use 1 to 1000")
            try:
                reader = session.jobs_reader()
            except NoLedgerYet:
                return {"jobs": []}
            env = session.env
            rows = jobs_query.query(
                reader,
                row_owner_alive(env),
                since=parse_since(since, env.clock(), env.tz) if since else None,
                status=status,
                backend=backend,
                caller=caller,
                limit=limit,
            )
            # Each listed job as the one job object, read from the ledger (as `jobs --json`).
            return {
                "jobs": [job_object(load(reader, r["job_id"]), status=r["status"]) for r in rows]
            }

        return await call(ctx, work)

    @server.tool()
    async def resume(job_id: str, ctx: Context, force_new: bool = False) -> types.CallToolResult:
        """Finish an interrupted job (or every unfinished job of a batch id) without paying
        twice: {"jobs": [job objects]}. `force_new` only when told the first request may not
        have reached the backend, and a person agreed."""
        from imagen.app.resume import resume as resume_jobs

        def work(session: Session) -> dict[str, Any]:
            from imagen.app.outcome import exit_code

            ended: list[JobState] = []

            def shown(state: JobState) -> ExitCode:
                ended.append(state)
                return exit_code(state)

            code = resume_jobs(
                session,
                job_id,
                all_=False,
                force_new=force_new,
                shown=shown,
                watcher=lambda: _Collect(session, ended),
            )
            if code != ExitCode.OK and len(ended) == 1:
                check_ended_well(ended[0])
            objects = [job_object(s) for s in ended]
            if code != ExitCode.OK and len(ended) != 1:
                failed = error_object(code, f"resume {job_id}: not every job succeeded")
                failed["jobs"] = objects
                raise Failed(failed)
            return {"jobs": objects}

        return await call(ctx, work, write=True, progress=True)

    @server.tool()
    async def cancel(job_id: str, ctx: Context) -> types.CallToolResult:
        """End an unfinished job: cancel its remote work, record the end. The job object with
        `message` saying what was done."""
        from imagen.app.cancel import cancel as cancel_job

        def work(session: Session) -> dict[str, Any]:
            state, said = cancel_job(session, job_id)
            return {**job_object(state), "message": said}

        return await call(ctx, work, write=True)

    @server.tool()
    async def backends(ctx: Context) -> types.CallToolResult:
        """The configured backends: name, type, model, status (ok, or what is missing), ready,
        default."""

        def work(session: Session) -> dict[str, Any]:
            return {"backends": backend_rows(session)}

        return await call(ctx, work)

    @server.tool()
    async def whoami(ctx: Context) -> types.CallToolResult:
        """The caller jobs are recorded under, where it came from (env, tmux, client,
        default), and each budget that governs it with spent and left now."""

        def work(session: Session) -> dict[str, Any]:
            from imagen.app.caller import resolve_caller

            caller = resolve_caller(session.env.env)
            budgets: list[dict[str, Any]] = []
            try:
                from imagen.app.budgets import by_caller

                reader = session.reader()
                standing = by_caller(reader, session.env.clock(), session.env.tz)
                budgets = standing.get(caller, [])
            except NoLedgerYet:
                pass
            return {"caller": caller, "source": shared.caller_source, "budgets": budgets}

        return await call(ctx, work)

    @server.tool()
    async def usage(
        ctx: Context,
        since: str | None = None,
        until: str | None = None,
        by: list[str] | None = None,
        raw: bool = False,
    ) -> types.CallToolResult:
        """Images, cost and latency grouped `by` backend, model, caller and/or day (default
        backend and model), or one row per image (`raw`), from this ledger: {"rows": [...]}."""
        from imagen.core.times import parse_since
        from imagen.projections.usage import query as usage_query

        def work(session: Session) -> dict[str, Any]:
            keys = list(dict.fromkeys(by or ["backend", "model"]))
            wrong = [k for k in keys if k not in ("backend", "model", "caller", "day")]
            if wrong:
                raise UserError(f"by {wrong[0]!r}: use backend, model, caller or day")
            env = session.env
            since_t = parse_since(since, env.clock(), env.tz) if since else None
            until_t = parse_since(until, env.clock(), env.tz, "--until") if until else None
            try:
                reader = session.usage_reader()
            except NoLedgerYet:
                return {"rows": []}
            if raw:
                rows = usage_query.rows(reader, since=since_t, until=until_t)
            elif "day" in keys:
                found = usage_query.rows(reader, since=since_t, until=until_t)
                rows = usage_query.grouped_by_day(found, keys, env.tz)
            else:
                rows = usage_query.grouped(reader, keys, since=since_t, until=until_t)
            return {"rows": json.loads(json.dumps(rows, default=str))}

        return await call(ctx, work)

    # -- resources -----------------------------------------------------------------------------

    @server.resource(
        "imagen://job/{job_id}/image/{n}",
        name="image",
        description="Image N (from 1) of any job of the ledger, as stored on disk (the "
        "images this server made are listed with their own type).",
        mime_type="image/png",
    )
    async def image(job_id: str, n: str, ctx: Context) -> bytes:
        from imagen.app.outcome import resolve_job_id
        from imagen.repository import load

        name = client_name(ctx)  # the caller is fixed by the first request, whichever it is

        def read() -> bytes:
            reader = shared.session(name, write=False).reader()
            state = load(reader, resolve_job_id(reader, job_id))
            index = int(n) if n.isdigit() else 0
            if not 1 <= index <= len(state.images):
                raise UserError(
                    f"job {state.job_id} has {len(state.images)} image(s)", ExitCode.NOT_FOUND
                )
            with open(state.images[index - 1].path, "rb") as fh:
                return fh.read()

        try:
            return await anyio.to_thread.run_sync(read)
        except (UserError, OSError) as exc:  # one line for the client, no traceback logged
            raise ResourceError(str(exc)) from None

    return server


# -- helpers -----------------------------------------------------------------------------------


def image_uri(job_id: str, n: int) -> str:
    return f"imagen://job/{job_id}/image/{n}"


def mime_of(path: str) -> str:
    return MIME.get(os.path.splitext(path)[1].lower(), "application/octet-stream")


def _images(data: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(uri, name, path) of each image of the job objects in a result."""
    out = []
    for obj in data.get("jobs", [data]):
        paths = obj.get("images") if isinstance(obj, dict) else None
        if isinstance(paths, list) and obj.get("job_id"):
            for n, path in enumerate(paths, start=1):
                if isinstance(path, str):
                    out.append((image_uri(obj["job_id"], n), f"{obj['job_id']} image {n}", path))
    return out


def _job_inputs(
    prompt: str,
    seed: int | None,
    size: str | None,
    aspect: str | None,
    steps: int | None,
    format: str | None,  # noqa: A002 - the tool's argument name
    options: dict[str, str] | None,
    per_job: int,
) -> Any:
    """generate's and quote's arguments as the use case's inputs (checked as the CLI's)."""
    from imagen.app import generate as use_case

    return use_case.inputs(
        prompt,
        seed=seed,
        size=size,
        aspect=aspect,
        steps=steps,
        output_format=format,
        options=_options(options),
        per_job=per_job,
    )


def _options(options: dict[str, Any] | None) -> list[str]:
    """Extra model inputs as generate's -o key=value words (parsed there, one parser)."""
    return [f"{k}={v}" for k, v in (options or {}).items()]


def _status(session: Session, state: JobState) -> str:
    """`running` whose driver is gone is `interrupted`, as `imagen show` says."""
    from imagen.app.liveness import job_owner_alive

    if state.status == "running" and not job_owner_alive(state, session.env):
        return "interrupted"
    return state.status


def backend_rows(session: Session) -> list[dict[str, Any]]:
    """Each configured backend with its status (no network probe)."""
    from imagen import backends as registry

    cfg = session.config()
    rows = []
    for name, b in cfg.backends.items():
        module = registry.load(b.type)
        status = module.status(b.options, session.env.env)
        rows.append(
            {
                "name": name,
                "type": b.type,
                "model": module.describe_model(b.options, b.model),
                "status": status,
                "ready": status.startswith("ok"),
                "default": name == cfg.default_backend,
            }
        )
    return rows


class _Collect:
    """A batch Watcher (app/batch.py) for `resume` of several jobs: collects their ends."""

    def __init__(self, session: Session, ended: list[Any]) -> None:
        self.session, self.ended = session, ended
        self.code = ExitCode.OK

    def begin(self, total: int, stop: Any) -> None:
        pass

    def refused(self, where: str, exc: UserError) -> None:
        self.code = exc.code

    def on_start(self, job_id: str) -> None:
        pass

    def on_done(self, outcome: Any) -> None:
        from imagen.repository import load

        self.ended.append(load(self.session.store(), outcome.job_id))
        if outcome.code != ExitCode.OK:
            self.code = outcome.code

    def reporter(self) -> Any:
        return self.session.reporter()

    def close(self) -> None:
        pass

    def finish(self, recorded: Any, what: str, resume_hint: str) -> int:
        return int(self.code)
