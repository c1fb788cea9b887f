"""imagen.app.preview against a real, throwaway tmux server (own socket, no user config)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from imagen.app import preview as pv
from imagen.app.preview import (
    DEFAULT_COMMAND,
    Mode,
    NotInTmux,
    PreviewConfigError,
    PreviewError,
    SpawnFailed,
    TmuxNotInstalled,
    TmuxTooOld,
    ViewerNotInstalled,
    build_argv,
    resolve_mode,
    should_preview,
    spawn,
)

TMUX = shutil.which("tmux")
WAIT_S = 10.0  # upper bound for a viewer to report back; normally milliseconds

needs_tmux = pytest.mark.skipif(
    TMUX is None and os.environ.get("CI") != "true", reason="tmux is not installed"
)


# --- resolution ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "env", "flag", "expected"),
    [
        (None, {}, None, Mode.AUTO),
        ("off", {}, None, Mode.OFF),
        ("on", {}, None, Mode.ON),
        ("off", {"IMAGEN_PREVIEW": "on"}, None, Mode.ON),
        ("on", {"IMAGEN_PREVIEW": "auto"}, None, Mode.AUTO),
        ("on", {"IMAGEN_PREVIEW": "0"}, None, Mode.OFF),
        (None, {"IMAGEN_PREVIEW": " Yes "}, None, Mode.ON),
        (None, {"IMAGEN_PREVIEW": "false"}, None, Mode.OFF),
        ("off", {"IMAGEN_PREVIEW": ""}, None, Mode.OFF),  # empty env var counts as unset
        ("off", {"IMAGEN_PREVIEW": "off"}, True, Mode.ON),
        ("on", {"IMAGEN_PREVIEW": "on"}, False, Mode.OFF),
        (None, {}, True, Mode.ON),
    ],
)
def test_resolution_chain(
    config: str | None, env: dict[str, str], flag: bool | None, expected: Mode
) -> None:
    assert resolve_mode(config, env, flag) is expected


def test_invalid_env_value_names_variable_and_choices() -> None:
    with pytest.raises(PreviewConfigError) as info:
        resolve_mode("auto", {"IMAGEN_PREVIEW": "maybe"}, None)
    message = str(info.value)
    assert "IMAGEN_PREVIEW" in message and "auto, on, off" in message
    # A flag does not excuse a broken env var: the user should hear about it.
    with pytest.raises(PreviewConfigError):
        resolve_mode(None, {"IMAGEN_PREVIEW": "maybe"}, True)


def test_invalid_config_value_names_key() -> None:
    with pytest.raises(PreviewConfigError, match="output.preview"):
        resolve_mode("sometimes", {}, None)


def test_mode_parse() -> None:
    assert Mode.parse("ON") is Mode.ON
    assert Mode.parse("no") is Mode.OFF
    with pytest.raises(ValueError, match="auto, on, off"):
        Mode.parse("bogus")


@pytest.mark.parametrize(
    ("mode", "isatty", "env", "expected"),
    [
        (Mode.AUTO, True, {"TMUX": "/s,1,0"}, True),
        (Mode.AUTO, False, {"TMUX": "/s,1,0"}, False),
        (Mode.AUTO, True, {}, False),
        (Mode.AUTO, True, {"TMUX": ""}, False),
        (Mode.ON, False, {}, True),  # spawn() then explains NotInTmux
        (Mode.OFF, True, {"TMUX": "/s,1,0"}, False),
    ],
)
def test_should_preview(mode: Mode, isatty: bool, env: dict[str, str], expected: bool) -> None:
    assert should_preview(mode, stdout_isatty=isatty, env=env) is expected


# --- argv construction (pure) ----------------------------------------------------------------


def test_build_argv_direct_exec() -> None:
    argv = build_argv(DEFAULT_COMMAND, Path("/img/a b.png"), window_name="w", session="$3")
    # At the session's first free index (never -a: it renumbered the windows after it).
    assert argv == ["tmux", "new-window", "-P", "-F", "#{window_id}", "-t", "$3:", "-d"] + [
        "-n",
        "w",
        "--",
        "tmux-img",
        "--hold",
        "/img/a b.png",
    ]


def test_build_argv_substitutes_inside_elements_and_appends_when_missing() -> None:
    argv = build_argv(["v", "--file={path}", "{path}"], Path("/x/{path}.png"), window_name="w")
    assert argv[-3:] == ["v", "--file=/x/{path}.png", "/x/{path}.png"]
    assert build_argv(["v", "-f"], Path("/x.png"), window_name="w")[-3:] == ["v", "-f", "/x.png"]


def test_build_argv_relative_path_made_absolute() -> None:
    argv = build_argv(["v"], Path("rel.png"), window_name="w")
    assert argv[-1] == os.path.join(os.getcwd(), "rel.png")


def test_build_argv_trailing_semicolon_falls_back_to_posix_sh() -> None:
    # tmux's client splits argv words ending in ';' into separate commands.
    argv = build_argv(["v"], Path("/x/shot;"), window_name="w")
    assert argv[-3:] == ["/bin/sh", "-c", "exec v '/x/shot;'"]


def test_build_argv_window_name_is_not_a_format() -> None:
    argv = build_argv(["v"], Path("/x"), window_name="#(touch /tmp/x) #{pane_id};\n")
    name = argv[argv.index("-n") + 1]
    assert name == "##(touch /tmp/x) ##{pane_id},?"
    assert build_argv(["v"], Path("/x"), window_name="w", focus=True).count("-d") == 0


@pytest.mark.parametrize("command", [[], ["", "{path}"], ["{path}"], "tmux-img {path}"])
def test_build_argv_rejects_bad_commands(command: list[str] | str) -> None:
    with pytest.raises(PreviewConfigError, match="preview_command"):
        build_argv(command, Path("/x"), window_name="w")


def test_tmux_version_parsing() -> None:
    assert pv._tmux_version("tmux 3.3a\n") == (3, 3)
    assert pv._tmux_version("tmux next-3.5") == (3, 5)
    assert pv._tmux_version("tmux master") is None


# --- errors that need no server ---------------------------------------------------------------


def _viewer_stub(tmp_path: Path) -> Path:
    stub = tmp_path / "viewer"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    return stub


def test_not_in_tmux(tmp_path: Path) -> None:
    with pytest.raises(NotInTmux, match="TMUX") as info:
        spawn(tmp_path / "a.png", [str(_viewer_stub(tmp_path))], env={"PATH": os.defpath})
    assert "--no-preview" in str(info.value)


def test_tmux_not_installed(tmp_path: Path) -> None:
    env = {"TMUX": "/nonexistent/sock,1,0", "PATH": str(tmp_path)}
    with pytest.raises(TmuxNotInstalled, match="install tmux"):
        spawn(tmp_path / "a.png", [str(_viewer_stub(tmp_path))], env=env, tmux="/nonexistent/tmux")
    with pytest.raises(TmuxNotInstalled):  # bare name, PATH without tmux
        spawn(tmp_path / "a.png", [str(_viewer_stub(tmp_path))], env=env)


def test_tmux_too_old(tmp_path: Path) -> None:
    old = tmp_path / "tmux"
    old.write_text("#!/bin/sh\necho 'tmux 2.9a'\n")
    old.chmod(0o755)
    env = {"TMUX": "/nonexistent/sock,1,0", "PATH": os.defpath}
    with pytest.raises(TmuxTooOld, match="tmux 2.9a is too old"):
        spawn(tmp_path / "a.png", [str(_viewer_stub(tmp_path))], env=env, tmux=str(old))


@needs_tmux
def test_viewer_not_installed(tmp_path: Path) -> None:
    env = {"TMUX": "/nonexistent/sock,1,0", "PATH": f"{tmp_path}:{os.path.dirname(TMUX or '')}"}
    with pytest.raises(ViewerNotInstalled, match="'no-such-viewer' not found on PATH"):
        spawn(tmp_path / "a.png", ["no-such-viewer", "{path}"], env=env)
    with pytest.raises(ViewerNotInstalled, match="preview_command"):
        spawn(tmp_path / "a.png", [str(tmp_path / "missing")], env=env)


def test_errors_are_one_line() -> None:
    assert "\n" not in str(ViewerNotInstalled("viewer 'a\nb' missing"))
    assert issubclass(PreviewConfigError, PreviewError)


def test_preview_turns_errors_into_one_warning(tmp_path: Path) -> None:
    lines: list[str] = []
    opened = pv.preview(
        tmp_path / "a.png",
        Mode.ON,
        command=DEFAULT_COMMAND,
        env={"PATH": os.defpath},
        stdout_isatty=True,
        warn=lines.append,
    )
    assert opened is False
    assert len(lines) == 1 and "\n" not in lines[0] and "TMUX" in lines[0]


def test_preview_off_and_auto_outside_tmux_are_silent(tmp_path: Path) -> None:
    lines: list[str] = []
    for mode in (Mode.OFF, Mode.AUTO):
        opened = pv.preview(
            tmp_path / "a.png",
            mode,
            command=DEFAULT_COMMAND,
            env={},
            stdout_isatty=True,
            warn=lines.append,
        )
        assert opened is False
    assert lines == []


def test_preview_swallows_unexpected_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug\nhere")

    monkeypatch.setattr(pv, "spawn", boom)
    lines: list[str] = []
    assert not pv.preview(
        tmp_path / "a", Mode.ON, command=["v"], env={}, stdout_isatty=True, warn=lines.append
    )
    assert lines == ["preview: unexpected RuntimeError: bug\\nhere"]


# --- real tmux --------------------------------------------------------------------------------


@dataclass
class Server:
    socket: str
    pane: str
    pid: str

    def tmux(self, *args: str, timeout: float = WAIT_S) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [TMUX or "tmux", "-S", self.socket, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )

    def env(self, **extra: str) -> dict[str, str]:
        # What a process inside a pane of this server sees; tmux finds the socket via $TMUX.
        env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE")}
        env.update(TMUX=f"{self.socket},{self.pid},0", TMUX_PANE=self.pane, **extra)
        return env


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    if TMUX is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tmux is required under CI")
        pytest.skip("tmux is not installed")
    # A short /tmp path: unix socket paths are limited to ~100 bytes.
    home = tempfile.mkdtemp(prefix="imagen-tmux-")
    socket = os.path.join(home, "sock")
    base = [TMUX, "-S", socket]
    # -f /dev/null: the user's tmux.conf (default-command, hooks) must not affect the test.
    subprocess.run(
        [*base, "-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", "80", "-y", "24"],
        check=True,
        timeout=WAIT_S,
    )
    info = subprocess.run(
        [*base, "display-message", "-p", "-t", "t", "#{pid} #{pane_id}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=WAIT_S,
    )
    pid, pane = info.stdout.split()
    try:
        yield Server(socket=socket, pane=pane, pid=pid)
    finally:
        subprocess.run([*base, "kill-server"], capture_output=True, timeout=WAIT_S)
        shutil.rmtree(home, ignore_errors=True)


@dataclass
class Viewer:
    program: Path
    out: Path
    channel: str


def make_viewer(
    directory: Path, server: Server, name: str = "fake-viewer", linger: bool = False
) -> Viewer:
    """A viewer that records its argv as JSON (atomically), then signals a tmux channel; with
    `linger`, it then stays (reading its terminal) as a viewer does until a key."""
    channel = f"imagen-{uuid.uuid4().hex}"
    out = directory / f"{channel}.json"
    program = directory / name
    program.write_text(
        f"#!{sys.executable}\n"
        "import json, os, subprocess, sys\n"
        f"out = {str(out)!r}\n"
        "with open(out + '.tmp', 'w', encoding='utf-8') as f:\n"
        "    json.dump(sys.argv[1:], f)\n"
        "os.replace(out + '.tmp', out)\n"
        f"subprocess.run([{TMUX!r}, '-S', {server.socket!r}, 'wait-for', '-S', {channel!r}])\n"
        + ("sys.stdin.read()\n" if linger else "")
    )
    program.chmod(0o755)
    return Viewer(program=program, out=out, channel=channel)


def received(server: Server, viewer: Viewer) -> list[str]:
    # wait-for blocks until the viewer signals (or returns at once if it already did).
    server.tmux("wait-for", viewer.channel)
    return json.loads(viewer.out.read_text(encoding="utf-8"))


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Short path without spaces of its own, so the only odd characters are the ones under test.
    path = Path(tempfile.mkdtemp(prefix="imagen-pv-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def hostile_names(marker: Path) -> list[str]:
    return [
        "plain.png",
        "with space.png",
        "it's.png",
        'say "cheese".png',
        "$HOME.png",
        f"`touch {marker}`.png",
        f"$(touch {marker}).png",
        f"x; touch {marker}.png",
        f"x & touch {marker} #.png",
        "line\nbreak.png",
        "café 🎨.png",
        "#(touch MARK) #{pane_id}.png".replace("MARK", str(marker)),
        "ends with;",
        "ends with\\;",
        "-dash.png",
        "~tilde.png",
        "{path}.png",
    ]


@needs_tmux
def test_hostile_paths_reach_viewer_unchanged(server: Server, workdir: Path) -> None:
    marker = workdir / "pwned"
    for name in hostile_names(marker):
        viewer = make_viewer(workdir, server)
        image = workdir / name  # names with '/' just nest: spawn never needs the file itself
        spawn(image, [str(viewer.program), "{path}"], env=server.env(), window_name=name)
        assert received(server, viewer) == [str(image)], name
    assert not marker.exists() and not list(workdir.glob("pwned*"))


@needs_tmux
def test_default_style_command_with_flags_and_viewer_from_path(
    server: Server, workdir: Path
) -> None:
    viewer = make_viewer(workdir, server, name="tmux-img-fake")
    image = workdir / "café 🎨.png"
    env = server.env(PATH=f"{workdir}{os.pathsep}{os.environ.get('PATH', os.defpath)}")
    spawn(image, ["tmux-img-fake", "--hold", "{path}"], env=env)
    assert received(server, viewer) == ["--hold", str(image)]


@needs_tmux
def test_window_opens_in_background(server: Server, workdir: Path) -> None:
    active_before = server.tmux("display-message", "-p", "-t", "t", "#{window_id}").stdout
    viewer = make_viewer(workdir, server)
    spawn(workdir / "a.png", [str(viewer.program)], env=server.env(), window_name="#{x}")
    assert received(server, viewer) == [str(workdir / "a.png")]
    # -d: focus stays where the user is.
    assert server.tmux("display-message", "-p", "-t", "t", "#{window_id}").stdout == active_before


@needs_tmux
def test_previews_reuse_one_window_and_never_renumber_the_users(
    server: Server, workdir: Path
) -> None:
    server.tmux("new-session", "-d", "-s", "reuse", "-x", "80", "-y", "24")
    try:
        server.tmux("new-window", "-d", "-t", "reuse:1")  # the window right after the user's
        pane = server.tmux("display-message", "-p", "-t", "reuse:0", "#{pane_id}").stdout.strip()
        env = {**server.env(), "TMUX_PANE": pane}

        def windows() -> dict[str, str]:
            listing = server.tmux(
                "list-windows", "-t", "reuse", "-F", "#{window_id} #{window_index}"
            )
            return dict(line.split() for line in listing.stdout.splitlines())

        users = windows()
        for n in (1, 2):
            viewer = make_viewer(workdir, server, name=f"viewer-{n}", linger=True)
            spawn(workdir / f"{n}.png", [str(viewer.program)], env=env)
            assert received(server, viewer) == [str(workdir / f"{n}.png")]
            now = windows()
            assert len(now) == len(users) + 1, now  # one preview window, reused
            assert {w: now[w] for w in users} == users  # nothing renumbered
        active = server.tmux("display-message", "-p", "-t", "reuse", "#{window_index}").stdout
        assert active.strip() == "0"  # -d: focus stays where the user is
    finally:
        server.tmux("kill-session", "-t", "reuse")


@needs_tmux
def test_preview_opens_window_and_returns_true(server: Server, workdir: Path) -> None:
    viewer = make_viewer(workdir, server)
    lines: list[str] = []
    opened = pv.preview(
        str(workdir / "it's $x.png"),
        Mode.AUTO,
        command=[str(viewer.program), "{path}"],
        env=server.env(),
        stdout_isatty=True,
        warn=lines.append,
    )
    assert opened is True and lines == []
    assert received(server, viewer) == [str(workdir / "it's $x.png")]


@needs_tmux
def test_desktop_opener_inside_tmux_finds_the_display_in_the_sessions_environment(
    server: Server, workdir: Path
) -> None:
    opener = workdir / "xdg-open"  # records its argument and the display it was given
    opener.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"open({str(workdir / 'opened.json')!r}, 'w').write("
        "json.dumps([sys.argv[1:], os.environ.get('DISPLAY')]))\n"
    )
    opener.chmod(0o755)
    env = {k: v for k, v in server.env().items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["PATH"] = f"{workdir}{os.pathsep}{env.get('PATH', os.defpath)}"
    image = workdir / "a.png"
    # The pane's shell lost $DISPLAY (made before the desktop attached): tmux knows it.
    server.tmux("set-environment", "-t", "t", "DISPLAY", ":77")
    try:
        assert pv.open_on_desktop(image, env=env) == "xdg-open"
        assert json.loads((workdir / "opened.json").read_text()) == [[str(image)], ":77"]
    finally:
        server.tmux("set-environment", "-t", "t", "-u", "DISPLAY")
    with pytest.raises(pv.NoDesktop) as info:  # the real reason, never "not in tmux"
        pv.open_on_desktop(image, env=env)
    assert "in this tmux session's environment" in str(info.value)
    assert "not in tmux" not in str(info.value)


BATCH_DRIVER = """
import sys
from types import SimpleNamespace

from imagen.app.exit_codes import ExitCode
from imagen.cli.batch import BatchDrive

drive = BatchDrive(json_output=False)  # what `generate -n 3` shows, in this pane's terminal
drive.begin(3, SimpleNamespace(value=None, terminating=False))
for n in range(3):
    drive.on_start(f"job{n}")
    drive.display._live.refresh()  # the live region is on screen when the path lands
    done = SimpleNamespace(
        job_id=f"job{n}", status="succeeded", spent=None, code=ExitCode.OK, summary={},
        images=[f"/images/fox-{n}.png"], message=None,
    )
    drive.on_done(done)
    drive.display._live.refresh()
drive.close()
sys.exit(drive.finish(None, "batch b1", "imagen resume b1"))
"""


@needs_tmux
def test_a_batchs_image_paths_stay_on_screen_and_its_bar_leaves_none(
    server: Server, workdir: Path
) -> None:
    script = workdir / "batch.py"
    script.write_text(BATCH_DRIVER)
    channel = f"imagen-{uuid.uuid4().hex}"
    run = (
        f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}; "
        f"{shlex.quote(TMUX or 'tmux')} -S {shlex.quote(server.socket)} wait-for -S {channel}; "
        "exec sleep 60"
    )
    pane = server.tmux(
        "new-window", "-d", "-P", "-F", "#{pane_id}", "-t", "t:", "--", "/bin/sh", "-c", run
    ).stdout.strip()
    try:
        server.tmux("wait-for", channel)
        screen = server.tmux("capture-pane", "-p", "-t", pane).stdout.splitlines()
    finally:
        server.tmux("kill-window", "-t", pane)
    for n in range(3):
        assert f"/images/fox-{n}.png" in screen, screen
    assert not [line for line in screen if line.startswith(("batch ", "  job"))], screen
    assert any("batch b1: 3 done" in line for line in screen), screen


@needs_tmux
def test_dead_server_is_spawn_failed(workdir: Path) -> None:
    viewer = workdir / "v"
    viewer.write_text("#!/bin/sh\n")
    viewer.chmod(0o755)
    env = {"TMUX": f"{workdir}/no-server,1,0", "PATH": os.environ.get("PATH", os.defpath)}
    with pytest.raises(SpawnFailed, match="tmux display-message failed"):
        spawn(workdir / "a.png", [str(viewer)], env=env)


# --- through the CLI ----------------------------------------------------------------------------


def test_generate_previews_the_image_in_tmux(server: Server, workdir: Path, sandbox) -> None:  # type: ignore[no-untyped-def]
    viewer = make_viewer(workdir, server)
    config = (sandbox.root / "config.toml").read_text()
    sandbox.write_config(config + f'preview_command = ["{viewer.program}", "{{path}}"]\n')
    env = {**server.env(), "IMAGEN_PREVIEW": ""}
    result = sandbox.run("generate", "a previewed fox", "--preview", env=env)
    assert result.returncode == 0, result.stderr
    assert received(server, viewer) == [result.stdout.strip()]
    [job_id] = sandbox.job_ids()
    viewer2 = make_viewer(workdir, server, name="viewer-two")
    sandbox.write_config(config + f'preview_command = ["{viewer2.program}", "{{path}}"]\n')
    again = sandbox.run("preview", job_id[:6], env=env)
    assert again.returncode == 0, again.stderr
    assert received(server, viewer2) == [result.stdout.strip()]


def test_open_inside_tmux_uses_the_first_installed_viewer(
    server: Server, workdir: Path, sandbox
) -> None:  # type: ignore[no-untyped-def]
    # No preview_command configured: imagen finds "chafa" on PATH (here a recording stand-in)
    # and runs it through the hold-the-window wrapper in a new tmux window.
    image = sandbox.run("generate", "a fox to open in tmux").stdout.strip()
    viewer = make_viewer(workdir, server, name="chafa")
    env = {**server.env(), "PATH": f"{workdir}:{os.environ['PATH']}"}
    opened = sandbox.run("open", sandbox.only_job()[:6], env=env)
    assert opened.returncode == 0, opened.stderr
    assert received(server, viewer) == [image]


def test_preview_failure_is_a_warning_and_exit_0(sandbox) -> None:  # type: ignore[no-untyped-def]
    result = sandbox.run("generate", "no tmux here", "--preview", env={"IMAGEN_PREVIEW": ""})
    assert result.returncode == 0
    assert Path(result.stdout.strip()).exists()
    [warning] = [line for line in result.stderr.splitlines() if "warning" in line]
    assert "tmux" in warning


def test_caller_is_the_tmux_panes_mai_name(server: Server) -> None:
    from imagen.app.caller import resolve_caller

    server.tmux("set-option", "-p", "-t", server.pane, "@mai-name", "agent-blue")
    env = server.env()
    assert resolve_caller(env) == "agent-blue"
    assert resolve_caller({**env, "MAI_FROM_ID": "explicit"}) == "explicit"
    assert resolve_caller({k: v for k, v in env.items() if not k.startswith("TMUX")}) not in (
        "",
        "agent-blue",
    )
