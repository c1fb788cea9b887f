"""`imagen gallery`: every job as a page to look at (a static site, or served on 127.0.0.1)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypedDict

from cyclopts import Parameter

from imagen.app.contract import JobObject
from imagen.app.errors import UserError
from imagen.app.exit_codes import ExitCode
from imagen.cli import context, render

if TYPE_CHECKING:
    from imagen.app.gallery import Built


class GalleryObject(TypedDict):
    """`gallery --json`: the written site, and the jobs on it as job objects."""

    index: str
    directory: str
    job_count: int
    image_count: int
    thumbnails_made: int
    head: int
    jobs: list[JobObject]


class ServedObject(TypedDict):
    """`gallery --serve --json`, once listening."""

    url: str
    directory: str


@render.outputs(GalleryObject | ServedObject)
def gallery(
    *,
    since: str | None = None,
    caller: str | None = None,
    backend: str | None = None,
    output: str | None = None,
    open_: Annotated[bool, Parameter(name="--open")] = False,
    serve: bool = False,
    port: int = 0,
    json_output: Annotated[bool, Parameter(name="--json")] = False,
) -> int:
    """Write a gallery of every image: a static site, or served on 127.0.0.1.

    One card per job, newest first: the thumbnail (linking to the full image and its sidecar),
    prompt, seed, size, model, backend, caller, cost, latency and date, and the command that
    makes the same image again; failed and cancelled jobs appear as such. Search by prompt and
    filter by caller, backend and status in the page itself. The site holds prompts: its
    directory is owner-only and it loads nothing from the network. Thumbnails are made once.

    Examples of use:
      imagen gallery --open
      imagen gallery --since 24h --caller claude-1 --output /tmp/today
      imagen gallery --serve          # on 127.0.0.1, refreshes as new images land
      imagen gallery --json | jq -r .index

    Parameters
    ----------
    since
        Only jobs since this date (2026-11-01) or age (7d, 24h).
    caller
        Only this caller's jobs.
    backend
        Only this backend instance.
    output
        The site's directory; default: "gallery" in the output directory.
    open_
        Open the page in the desktop's browser when written.
    serve
        Serve the page on 127.0.0.1 and rebuild it as jobs are recorded (Ctrl-C stops).
    port
        Port for --serve; default: any free port.
    json_output
        Print one JSON object {index, directory, job_count, image_count, thumbnails_made,
        head, jobs} (jobs: the job objects shown); with --serve, {url, directory} once
        listening.
    """
    from imagen.core.times import parse_since

    if port and not serve:
        raise UserError("--port goes with --serve")
    if open_ and serve:
        raise UserError("--open is for the written page; with --serve, open the URL it prints")
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port}: use 1 to 65535 (or 0 for any free port)")
    cfg = context.session().config()
    out = (
        Path(output).expanduser() if output else Path(cfg.output.directory).expanduser() / "gallery"
    )
    if out.exists() and not out.is_dir():
        raise UserError(f"--output {out}: not a directory", ExitCode.BAD_INPUT)
    since_at = (
        parse_since(since, context.session().env.clock(), context.session().env.tz)
        if since
        else None
    )

    shown: list[dict[str, Any]] = []  # the jobs of the last build (for --json)

    def rebuild() -> Built:
        from imagen.app.gallery import build, rows
        from imagen.repository import load

        try:
            reader = context.session().jobs_reader()
        except context.NoLedgerYet:
            return build(out, [], load, head=0, serve=serve)
        try:
            head = reader.head_position()  # before reading: a job landing meanwhile rebuilds
            jobs = rows(
                reader, context.session().env, since=since_at, caller=caller, backend=backend
            )
            shown[:] = jobs
            return build(
                out, jobs, lambda jid: load(reader, jid), head=head, serve=serve, note=context.note
            )
        finally:
            _close(reader)

    if serve:
        return _serve(out, port, lambda: rebuild().head, json_output=json_output)
    try:
        built = rebuild()
    except OSError as exc:
        raise UserError(_os_reason(out, exc), ExitCode.BAD_INPUT) from None
    if json_output:
        from imagen.cli.jobs import job_objects

        result: GalleryObject = {
            "index": str(built.index.resolve()),
            "directory": str(out.resolve()),
            "job_count": built.jobs,
            "image_count": built.images,
            "thumbnails_made": built.thumbnails_made,
            "head": built.head,
            "jobs": job_objects(shown),  # type: ignore[typeddict-item]
        }
        render.print_json(result)
    else:
        print(built.index.resolve())
        context.note(
            f"{built.jobs} job(s), {built.images} image(s); "
            f"{built.thumbnails_made} new thumbnail(s)"
        )
    if open_:
        _open(built.index)
    return 0


def _os_reason(out: Path, exc: OSError) -> str:
    return f"cannot write the gallery in {out}: {exc.strerror or exc}"


def _head() -> int:
    try:
        reader = context.session().reader()
    except context.NoLedgerYet:
        return 0
    try:
        return int(reader.head_position())
    finally:
        _close(reader)


def _close(reader: Any) -> None:
    """Close a reader opened for one build or poll (--serve polls for hours); the process's
    own store stays open for the next."""
    if not context.session().is_its_store(reader) and hasattr(reader, "close"):
        reader.close()


def _serve(out: Path, port: int, rebuild: Any, *, json_output: bool) -> int:
    import threading

    from imagen.app.gallery_server import GalleryServer

    try:
        server = GalleryServer(out, port, head=_head, rebuild=rebuild)
    except OSError as exc:
        if exc.filename is None:
            raise UserError(
                f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}", ExitCode.CONFLICT
            ) from None
        raise UserError(_os_reason(out, exc), ExitCode.BAD_INPUT) from None
    server.warn = context.warn
    server.start()
    if json_output:
        served: ServedObject = {"url": server.url, "directory": str(out.resolve())}
        render.print_json(served)
    else:
        print(server.url)
    import sys

    sys.stdout.flush()
    context.note("serving the gallery on 127.0.0.1 (Ctrl-C stops)")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
    return 0


def _open(index: Path) -> None:
    from imagen.app.preview import PreviewError, open_on_desktop

    try:
        open_on_desktop(index, env=context.session().env.env)
    except PreviewError as exc:
        context.warn(f"the gallery is written but could not be opened: {exc}")
