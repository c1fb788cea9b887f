"""Broken local state and input at the edge of its type: one line, a documented exit code,
nothing recorded or half-written, never a traceback."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from imagen.runner.files import NotRegular, atomic_write
from tests.support.cli import Sandbox

NO_DAC = [
    "setpriv",
    "--inh-caps=-dac_override,-dac_read_search",
    "--bounding-set=-dac_override,-dac_read_search",
    "--",
]


def one_line(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == code, (result.returncode, result.stderr)
    [line] = result.stderr.strip().splitlines()
    for needle in needles:
        assert needle in line, line
    return line


def nothing_recorded(box: Sandbox) -> None:
    ledger = box.root / "ledger.db"
    assert not ledger.exists() or not box.job_ids()


# -- input at the edge of its type ---------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("generate", "bad \udcff byte"),  # what Python makes of argv bytes that are not UTF-8
        ("generate", "a cat", "--output", "x\udcc3.png"),
        ("show", "\udcff"),
    ],
)
def test_arguments_that_are_not_utf8_are_refused(sandbox: Sandbox, args: tuple[str, ...]) -> None:
    result = subprocess.run(
        [*sandbox.cmd(), *args],
        capture_output=True,
        env={**sandbox.env, "PYTHONIOENCODING": "utf-8:surrogateescape"},
        cwd=sandbox.root,
    )
    result = subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
    )
    one_line(result, 2, "is not valid UTF-8")
    nothing_recorded(sandbox)


def test_show_with_the_last_code_point_matches_nothing(sandbox: Sandbox) -> None:
    assert sandbox.run("generate", "a cat").returncode == 0
    one_line(sandbox.run("show", "\U0010ffff"), 6, "no job matches")


def test_output_name_past_the_file_system_limit(sandbox: Sandbox) -> None:
    one_line(
        sandbox.run("generate", "a cat", "--output", "a" * 300 + ".png"),
        2,
        "file name is 304 bytes",
    )
    # 250 bytes fits the file system, but not with the sidecar's temp name beside it
    one_line(sandbox.run("generate", "a cat", "--output", "b" * 246 + ".png"), 2, "at most 236")
    nothing_recorded(sandbox)


# -- the ledger file -------------------------------------------------------------------------


def _ledger_at(box: Sandbox, path: Path) -> dict[str, str]:
    return {"IMAGEN_LEDGER_URL": f"sqlite:///{path}"}


@pytest.mark.parametrize("kind", ["text", "random", "truncated", "directory"])
def test_a_broken_ledger_file_is_one_line(sandbox: Sandbox, kind: str) -> None:
    path = sandbox.root / "other.db"
    if kind == "text":
        path.write_text("these are my notes, not a ledger\n" * 50)
    elif kind == "random":
        path.write_bytes(os.urandom(8192))
    elif kind == "directory":
        path.mkdir()
    else:
        env = _ledger_at(sandbox, path)
        for n in range(3):
            assert sandbox.run("generate", f"cat {n}", env=env).returncode == 0
        size = path.stat().st_size
        with path.open("r+b") as fh:
            fh.truncate(size // 3)
    env = _ledger_at(sandbox, path)
    for args in (("jobs",), ("generate", "a dog"), ("audit",)):
        result = sandbox.run(*args, env=env)
        assert "Traceback" not in result.stderr, result.stderr
        if result.returncode == 7:
            one_line(result, 7, str(path))
        else:  # audit may read what survives and report the break
            assert kind == "truncated" and args == ("audit",) and result.returncode == 4


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) not installed")
def test_a_read_only_ledger_file(sandbox: Sandbox) -> None:
    assert sandbox.run("generate", "a cat").returncode == 0
    ledger = sandbox.root / "ledger.db"
    ledger.chmod(0o400)
    # as root, file modes bind only without CAP_DAC_OVERRIDE: drop it for the command
    result = subprocess.run(
        [*NO_DAC, *sandbox.cmd(), "generate", "a dog"],
        capture_output=True,
        text=True,
        env=sandbox.env,
        cwd=sandbox.root,
    )
    one_line(result, 7, "ledger", "permissions")
    listed = subprocess.run(
        [*NO_DAC, *sandbox.cmd(), "jobs"], capture_output=True, text=True, env=sandbox.env
    )
    assert listed.returncode == 0 and "a cat" in listed.stdout, listed.stderr


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) not installed")
def test_events_still_in_the_wal_are_read_in_a_directory_the_user_cannot_write(
    sandbox: Sandbox,
) -> None:
    """A writer killed before its last connection closed leaves committed events in the -wal
    file only. Read immutable they would be silently missing from a read-only directory."""
    assert sandbox.run("generate", "warm up").returncode == 0
    holder = sqlite3.connect(sandbox.root / "ledger.db")  # so no CLI process is the last to close
    try:
        holder.execute("SELECT count(*) FROM sqlite_master").fetchall()
        for n in range(2):
            assert sandbox.run("generate", f"cat {n}").returncode == 0
        folder = sandbox.root / "ro"
        folder.mkdir()
        for name in ("ledger.db", "ledger.db-wal"):  # no -shm: as a kill -9 may leave it
            shutil.copy(sandbox.root / name, folder / name)
    finally:
        holder.close()
    assert (folder / "ledger.db-wal").stat().st_size > 0
    folder.chmod(0o555)
    env = {**sandbox.env, "IMAGEN_LEDGER_URL": f"sqlite:///{folder / 'ledger.db'}"}
    listed = subprocess.run(
        [*NO_DAC, *sandbox.cmd(), "jobs"], capture_output=True, text=True, env=env
    )
    assert listed.returncode == 0, listed.stderr
    assert "cat 0" in listed.stdout and "cat 1" in listed.stdout, listed.stdout
    assert sorted(p.name for p in folder.iterdir()) == ["ledger.db", "ledger.db-wal"]


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) not installed")
def test_reading_needs_no_write_access_to_the_ledger_directory(sandbox: Sandbox) -> None:
    for n in range(2):
        assert sandbox.run("generate", f"cat {n}").returncode == 0
    folder = sandbox.root / "ro"
    folder.mkdir()
    shutil.copy(sandbox.root / "ledger.db", folder / "ledger.db")  # no -wal, no -shm
    folder.chmod(0o555)
    env = {**sandbox.env, "IMAGEN_LEDGER_URL": f"sqlite:///{folder / 'ledger.db'}"}
    listed = subprocess.run(
        [*NO_DAC, *sandbox.cmd(), "jobs"], capture_output=True, text=True, env=env
    )
    assert listed.returncode == 0, listed.stderr
    assert "cat 0" in listed.stdout and "cat 1" in listed.stdout
    [job] = [line.split()[0] for line in listed.stdout.splitlines() if "cat 0" in line]
    shown = subprocess.run(
        [*NO_DAC, *sandbox.cmd(), "show", job], capture_output=True, text=True, env=env
    )
    assert shown.returncode == 0 and "prompt: cat 0" in shown.stdout, shown.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["ledger.db"]


def test_reading_a_ledger_that_does_not_exist_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "not" / "yet" / "ledger.db"
    box = Sandbox(tmp_path, ledger_url=f"sqlite:///{missing}")
    box.write_backend("c", "comfyui")
    listed = box.run("jobs")
    # An empty list in the CLI's one shape: piped, just the header row.
    assert listed.returncode == 0 and listed.stdout.splitlines() == [
        "job_id\tcreated_at\tstatus\tbackend\tmodel\tserver\tcost_usd\tprompt"
    ]
    assert "no ledger yet" in listed.stderr
    one_line(box.run("show", "abcd"), 6, "no ledger yet")
    assert not (tmp_path / "not").exists()


def test_full_disk_mid_append_is_one_line_and_the_ledger_stays_intact(sandbox: Sandbox) -> None:
    assert sandbox.run("generate", "warm up").returncode == 0  # schema and projections exist

    def small_disk() -> None:
        # A file-size limit: SQLite's WAL can grow to 70 KB (the -shm index is 32 KB): a few appends, then
        # every write fails with EFBIG as on a full disk; SIGXFSZ ignored so write() reports it.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (70_000, 70_000))

    result = subprocess.run(
        [*sandbox.cmd(), "generate", "on a full disk"],
        capture_output=True,
        text=True,
        env=sandbox.env,
        cwd=sandbox.root,
        preexec_fn=small_disk,
    )
    one_line(result, 7, "ledger", "disk")
    audit = sandbox.run("audit")
    assert audit.returncode == 0, audit.stdout
    jobs = sandbox.run("jobs", "--status", "interrupted")
    assert "on a full disk" in jobs.stdout  # honest and resumable
    assert sandbox.run("resume", "--all").returncode == 0
    assert "on a full disk" in sandbox.run("jobs", "--status", "succeeded").stdout


# -- the config ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"backends = 5\n", "backends must be a table"),
        (b'default_backend = "caf\xe9"\n', "not UTF-8 (byte 0xe9"),
        (b'[backends.r]\ntype = "replicate"\nbase_url = "not a url"\n', "is not a URL"),
        (b'[backends.r]\ntype = "replicate"\nbase_url = "api.replicate.com"\n', "is not a URL"),
        (b'[backends.c]\ntype = "comfyui"\nurl = "127.0.0.1:8188"\n', "is not a URL"),
        (b'[backends.c]\ntype = "comfyui"\ntimeout_s = -5\n', "timeout_s = -5 is out of range"),
        (b'[backends.c]\ntype = "comfyui"\ntimeout_s = nan\n', "timeout_s = nan is out of range"),
        (b'[backends.r]\ntype = "replicate"\nmax_image_mb = -1\n', "max_image_mb = -1 is out"),
        (b'[backends.r]\ntype = "replicate"\nwait_s = 0\n', "wait_s = 0 is out of range"),
        (b'[ledger]\nurl = "not a url"\n', "ledger URL 'not a url'"),
        (b'[usage]\nsupabase_url = "example.supabase.co"\n', "is not a URL"),
    ],
)
def test_config_errors_are_caught_when_the_config_is_read(
    tmp_path: Path, content: bytes, needle: str
) -> None:
    box = Sandbox(tmp_path, env={"IMAGEN_LEDGER_URL": ""})
    (tmp_path / "config.toml").write_bytes(content)
    one_line(box.run("jobs"), 2, str(tmp_path / "config.toml"), needle)
    assert not (tmp_path / "ledger.db").exists()


def test_config_path_that_is_a_directory(tmp_path: Path) -> None:
    box = Sandbox(tmp_path)
    (tmp_path / "config.toml").mkdir()
    one_line(box.run("jobs"), 2, "cannot read the config: Is a directory")


def test_ledger_url_that_is_not_a_url(tmp_path: Path) -> None:
    box = Sandbox(tmp_path, ledger_url="not a url")
    box.write_backend("c", "comfyui")
    one_line(box.run("jobs"), 2, "IMAGEN_LEDGER_URL", "'not a url'")


# -- files imagen writes ---------------------------------------------------------------------


def test_force_only_replaces_regular_files(sandbox: Sandbox, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    link = tmp_path / "null.png"
    link.symlink_to("/dev/null")
    for target in (fifo, link, Path("/dev/null")):
        result = sandbox.run("generate", "a cat", "--output", str(target), "--force")
        one_line(result, 2, "not a regular file")
    assert fifo.is_fifo() and link.is_symlink() and Path("/dev/null").is_char_device()
    nothing_recorded(sandbox)
    with pytest.raises(NotRegular):
        atomic_write(fifo, b"data")  # also at write time, whatever was checked before


def test_a_sidecar_never_clobbers_a_file_imagen_did_not_write_for_that_image(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    # Someone's own file where a.png's sidecar would go (imagen writes no image named .json).
    (tmp_path / "a.png.json").write_text('{"notes": "mine"}\n')
    before = (tmp_path / "a.png.json").read_bytes()
    result = sandbox.run("generate", "a dog", "--output", str(tmp_path / "a.png"))
    one_line(result, 2, "a.png.json exists and is not imagen's sidecar for a.png")
    assert (tmp_path / "a.png.json").read_bytes() == before and not (tmp_path / "a.png").exists()
    # imagen's own sidecar for that image is replaced with the image under --force
    out = tmp_path / "b.png"
    assert sandbox.run("generate", "one", "--output", str(out)).returncode == 0
    assert sandbox.run("generate", "two", "--output", str(out), "--force").returncode == 0
    assert '"prompt": "two"' in (tmp_path / "b.png.json").read_text()


def test_temp_files_left_by_a_kill_are_swept_by_the_next_run_and_by_rebuild(
    sandbox: Sandbox,
) -> None:
    out = sandbox.out
    out.mkdir(parents=True)
    old = out / ".cat.png.a1b2c3d4.tmp"
    fresh = out / ".cat.png.e5f6g7h8.tmp"
    notes = out / ".notes.tmp"  # not a name imagen makes
    for f in (old, fresh, notes):
        f.write_bytes(b"partial")
    hour_ago = time.time() - 3600
    os.utime(old, (hour_ago, hour_ago))
    os.utime(notes, (hour_ago, hour_ago))
    assert sandbox.run("generate", "a cat").returncode == 0
    assert not old.exists() and fresh.exists() and notes.exists()
    os.utime(fresh, (hour_ago, hour_ago))
    rebuilt = sandbox.run("rebuild")
    assert rebuilt.returncode == 4 and not fresh.exists() and notes.exists()
    assert "removed a temp file" in rebuilt.stdout


# -- resume --all, escapes -------------------------------------------------------------------


def test_resume_all_resumes_each_job_on_its_own_and_exits_with_the_most_severe_code(
    sandbox: Sandbox, echo_server
) -> None:  # type: ignore[no-untyped-def]
    crash = {"IMAGEN_CRASH_AFTER": "RequestSent"}
    token_config = (sandbox.root / "config.toml").read_text()
    sandbox.write_backend("echo", "echo", url=echo_server.url)  # the same backend, no token_env
    assert sandbox.run("generate", "needs nothing", env=crash).returncode != 0
    sandbox.write_config(token_config)
    # newest first: the job that cannot run comes first and must not stop the other
    assert sandbox.run("generate", "needs a token", env=crash).returncode != 0
    listed = sandbox.run("jobs", "--status", "interrupted").stdout
    assert "needs a token" in listed and "needs nothing" in listed
    resumed = sandbox.run("resume", "--all", env={"ECHO_TOKEN": ""})
    assert "Traceback" not in resumed.stderr
    assert resumed.returncode == 2, resumed.stderr  # the missing credential, whatever the order
    assert "ECHO_TOKEN" in resumed.stderr
    assert "needs nothing" in sandbox.run("jobs", "--status", "succeeded").stdout
    assert "needs a token" in sandbox.run("jobs", "--status", "interrupted").stdout


def test_most_severe_exit_code() -> None:
    from imagen.app.exit_codes import SEVERITY, ExitCode, most_severe

    assert most_severe(ExitCode.OK, ExitCode.JOB_FAILED) == ExitCode.JOB_FAILED
    assert most_severe(ExitCode.JOB_FAILED, ExitCode.BAD_INPUT) == ExitCode.BAD_INPUT
    assert most_severe(ExitCode.LEDGER_ERROR, ExitCode.CONFLICT) == ExitCode.LEDGER_ERROR
    assert most_severe(ExitCode.OK, ExitCode.OK) == ExitCode.OK
    assert {*ExitCode} == set(SEVERITY)  # every code has a rank


HOSTILE_PROMPT = "cat \x1b]0;pwned\x07\x1b[2J\x1b[1A\u202eevil\x9b31m done"


def test_jobs_and_show_print_control_characters_escaped(sandbox: Sandbox) -> None:
    assert sandbox.run("generate", HOSTILE_PROMPT).returncode == 0
    listed = sandbox.run("jobs")
    shown = sandbox.run("show", sandbox.only_job())
    for out in (listed.stdout, shown.stdout):
        assert not any(c in out for c in "\x1b\x07\u202e\x9b"), repr(out)
    assert "cat \\e]0;pwned\\x07\\e[2J" in listed.stdout
    assert "prompt: cat \\e]0;pwned\\x07\\e[2J\\e[1A\\u202eevil\\x9b31m done" in shown.stdout
    # JSON keeps the prompt exactly (escaped by JSON itself)
    import json

    [row] = json.loads(sandbox.run("jobs", "--json").stdout)  # a list is one JSON array
    assert row["prompt"] == HOSTILE_PROMPT


def test_reading_an_empty_postgresql_database_creates_nothing(tmp_path: Path, pg_url: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    box = Sandbox(tmp_path, ledger_url=pg_url)
    box.write_backend("c", "comfyui")
    listed = box.run("jobs")
    assert listed.returncode == 0 and "no ledger yet" in listed.stderr, listed.stderr
    one_line(box.run("show", "abcd"), 6, "no ledger yet")
    conninfo = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert tables == (0,)


def test_an_event_time_edited_into_nonsense_is_one_line_naming_audit(sandbox: Sandbox) -> None:
    """A writer that edits the ledger outside imagen (triggers dropped) leaves a recorded time
    that is not a time: commands that fold the job say so in one line, the ledger error."""
    assert sandbox.run("generate", "a cat").returncode == 0
    job = sandbox.only_job()
    db = sqlite3.connect(sandbox.root / "ledger.db")
    with db:
        db.execute("DROP TRIGGER IF EXISTS events_no_update")
        db.execute(
            "UPDATE events SET recorded_at = 'yesterday-ish' WHERE stream_id = ? "
            "AND stream_version = 1",
            (job,),
        )
    db.close()
    for args in (("show", job), ("usage",)):
        result = sandbox.run(*args)
        one_line(result, 7, "which is not a time")
        assert "imagen audit" in result.stderr
    with sqlite3.connect(sandbox.root / "ledger.db") as db:  # not even text (SQLite keeps any)
        db.execute("UPDATE events SET recorded_at = 20261206 WHERE stream_id = ?", (job,))
    one_line(sandbox.run("show", job), 7, "which is not a time")
