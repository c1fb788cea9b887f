"""Show a freshly written image in a sibling tmux window, or with the desktop's opener.

The viewer: ``output.preview_command`` when set; else the first terminal image viewer installed
of VIEWERS (tmux-img, chafa, timg, viu, catimg). ``tmux-img`` is no published package: it is the
name of the original author's own script (show an image in a tmux window, wait for a key), kept
first so that setups which have it keep it. Viewers that draw and exit run as
``/bin/sh -c '"$0" "$1"; read' VIEWER PATH`` so the window stays until Enter; the path is an
argument, never parsed by the shell.

Resolution: config ``output.preview`` → env ``IMAGEN_PREVIEW`` → ``--preview``/``--no-preview``;
the later source wins. ``auto`` previews only when stdout is a terminal and ``$TMUX`` is set.

How the viewer is started (verified against tmux 3.3a, see tests/test_preview.py):

* ``tmux new-window -- prog arg ...`` with two or more words execs ``prog`` directly, without
  ``sh -c`` (tmux >= 3.0; older tmux joins the words into one shell string, so we refuse it).
  Spaces, quotes, ``$``, backticks, newlines, ``#{...}``/``#(...)`` and unicode reach the
  viewer unchanged.
* The tmux client's own argument parser still treats a word *ending* in ``;`` as a command
  separator. If any word would end in ``;`` (or there is only one word, which tmux would hand
  to the user's ``default-shell``), we run ``/bin/sh -c 'exec <shlex-quoted words>'`` instead:
  explicit POSIX sh, so ``shlex.quote`` is exact, and the quoted string ends in ``'``.
* ``-n`` (window name) *is* format-expanded by tmux, so names are sanitised (``#`` doubled).
* One preview window per session, marked with the window option ``@imagen-preview``: a later
  preview respawns its pane (``respawn-pane -k``, the old viewer goes; respawn-window would
  make it the current window) instead of opening another.
* It opens at the session's first free index (``new-window -t SESSION:``, the session's id
  read with ``display-message -t $TMUX_PANE``; new-window refuses a pane as target): never
  ``-a`` after the current window, which renumbered the user's windows after it.
* ``-d``: the window opens without taking focus, so a user (or an agent) typing in the current
  pane is not interrupted; it shows up in the status line.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from pathlib import Path

__all__ = [
    "DEFAULT_COMMAND",
    "Mode",
    "NoDesktop",
    "NotInTmux",
    "PreviewConfigError",
    "PreviewError",
    "SpawnFailed",
    "TmuxNotInstalled",
    "TmuxTooOld",
    "ViewerNotInstalled",
    "VIEWERS",
    "build_argv",
    "detect_viewer",
    "desktop_env",
    "open_on_desktop",
    "preview",
    "resolve_mode",
    "should_preview",
    "spawn",
]

DEFAULT_COMMAND: tuple[str, ...] = ("tmux-img", "--hold", "{path}")
PLACEHOLDER = "{path}"
# program -> its arguments; tried in this order when output.preview_command is empty.
VIEWERS: dict[str, tuple[str, ...]] = {
    "tmux-img": ("--hold", PLACEHOLDER),
    "chafa": (PLACEHOLDER,),
    "timg": (PLACEHOLDER,),
    "viu": (PLACEHOLDER,),
    "catimg": (PLACEHOLDER,),
}
_HOLD = "printf '\\n[Enter closes this window] '; read -r _"
ENV_VAR = "IMAGEN_PREVIEW"
MIN_TMUX = (3, 0)
_OFF_HINT = "or turn preview off with --no-preview / IMAGEN_PREVIEW=off"
MARK = "@imagen-preview"  # the window option naming a session's preview window

_SYNONYMS: dict[str, str] = {
    "auto": "auto",
    "on": "on",
    "off": "off",
    "1": "on",
    "true": "on",
    "yes": "on",
    "0": "off",
    "false": "off",
    "no": "off",
}
_ALLOWED = "auto, on, off (or 1/0, true/false, yes/no)"


class Mode(StrEnum):
    AUTO = "auto"
    ON = "on"
    OFF = "off"

    @classmethod
    def parse(cls, value: str) -> Mode:
        """Case-insensitive; accepts boolean-ish synonyms so env vars like ``=1`` just work."""
        key = value.strip().lower() if isinstance(value, str) else value
        canonical = _SYNONYMS.get(key) if isinstance(key, str) else None
        if canonical is None:
            raise ValueError(f"invalid preview mode {value!r}: use one of {_ALLOWED}")
        return cls(canonical)


class PreviewError(Exception):
    """Base class; ``str(e)`` is a single line that says what to do."""

    def __init__(self, message: str) -> None:
        # Messages may embed user paths/commands; keep them on one line for the warning.
        super().__init__(message.replace("\r", "\\r").replace("\n", "\\n"))


class TmuxNotInstalled(PreviewError):
    pass


class TmuxTooOld(PreviewError):
    pass


class ViewerNotInstalled(PreviewError):
    pass


class NotInTmux(PreviewError):
    pass


class PreviewConfigError(PreviewError, ValueError):
    pass


class SpawnFailed(PreviewError):
    pass


def resolve_mode(config_value: str | None, env: Mapping[str, str], flag: bool | None) -> Mode:
    """config ``output.preview`` → ``$IMAGEN_PREVIEW`` → flag; each present source overrides."""
    mode = Mode.AUTO
    if config_value is not None:
        if isinstance(config_value, bool):  # TOML `preview = true` is a natural thing to write
            config_value = "on" if config_value else "off"
        try:
            mode = Mode.parse(config_value)
        except ValueError:
            raise PreviewConfigError(
                f"config output.preview = {config_value!r} is invalid: use one of {_ALLOWED}"
            ) from None
    raw = env.get(ENV_VAR)
    if raw is not None and raw.strip():  # empty counts as unset, like most shells' `VAR=`
        try:
            mode = Mode.parse(raw)
        except ValueError:
            raise PreviewConfigError(
                f"{ENV_VAR}={raw!r} is invalid: set it to one of {_ALLOWED}, or unset it"
            ) from None
    if flag is not None:
        mode = Mode.ON if flag else Mode.OFF
    return mode


def should_preview(mode: Mode, *, stdout_isatty: bool, env: Mapping[str, str]) -> bool:
    """ON is honoured even outside tmux so that spawn() can explain why it cannot work."""
    if mode is Mode.ON:
        return True
    if mode is Mode.OFF:
        return False
    return stdout_isatty and bool(env.get("TMUX"))


def _window_name(name: str) -> str:
    # tmux format-expands -n (#{...}, #(cmd)) and splits argv words ending in ';'.
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in name)[:40].replace(";", ",")
    return cleaned.replace("#", "##") or "imagen"


def _needs_shell(words: Sequence[str]) -> bool:
    return len(words) < 2 or any(word.endswith(";") for word in words)


def build_argv(
    command: Sequence[str],
    path: Path,
    *,
    window_name: str,
    tmux: str = "tmux",
    focus: bool = False,
    session: str = "",
) -> list[str]:
    """The full ``tmux new-window`` argv for ``command`` showing ``path`` in a new window at
    ``session``'s first free index (it prints the new window's id). Pure.

    ``{path}`` is replaced inside each element (so ``--file={path}`` works); a command with no
    ``{path}`` gets the path appended as its last argument.
    """
    argv = [tmux, "new-window", "-P", "-F", "#{window_id}", "-t", f"{session}:"]
    if not focus:
        argv.append("-d")
    return [*argv, "-n", _window_name(window_name), "--", *viewer_words(command, path)]


def viewer_words(command: Sequence[str], path: Path) -> list[str]:
    """The words tmux runs for ``command`` on ``path`` (see build_argv). Pure."""
    if isinstance(command, str) or not command:
        raise PreviewConfigError(
            f"output.preview_command must be a non-empty list of strings, e.g. {list(DEFAULT_COMMAND)}"
        )
    if not command[0] or PLACEHOLDER in command[0]:
        raise PreviewConfigError(
            f"output.preview_command must start with the viewer program, e.g. {list(DEFAULT_COMMAND)}"
        )
    target = str(Path(os.path.abspath(path)))  # the new window's cwd is not ours
    words = [command[0], *(arg.replace(PLACEHOLDER, target) for arg in command[1:])]
    if not any(PLACEHOLDER in arg for arg in command[1:]):
        words.append(target)
    if _needs_shell(words):
        words = ["/bin/sh", "-c", "exec " + shlex.join(words)]
    return words


def _tmux_version(text: str) -> tuple[int, int] | None:
    """``tmux 3.3a`` → (3, 3); ``tmux next-3.4`` → (3, 4); ``tmux master`` → None (assume new)."""
    match = re.search(r"(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _run(
    argv: list[str], env: Mapping[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv,
            env=dict(env),
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SpawnFailed(
            f"tmux did not answer within {timeout:g}s: check the tmux server (tmux info), "
            + _OFF_HINT
        ) from None
    except OSError as exc:
        raise SpawnFailed(f"could not run {argv[0]}: {exc.strerror or exc}; {_OFF_HINT}") from None


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def detect_viewer(env: Mapping[str, str]) -> tuple[str, ...] | None:
    """The preview command for the first installed viewer of VIEWERS, or None."""
    for program, args in VIEWERS.items():
        found = shutil.which(program, path=env.get("PATH", os.defpath))
        if found is None:
            continue
        found = os.path.abspath(found)
        if "--hold" in args:
            return (found, *args)
        return ("/bin/sh", "-c", f'"$0" "$1"; {_HOLD}', found, PLACEHOLDER)
    return None


def _auto_command(env: Mapping[str, str]) -> tuple[str, ...]:
    command = detect_viewer(env)
    if command is None:
        raise ViewerNotInstalled(
            f"no terminal image viewer found (looked for {', '.join(VIEWERS)} on PATH): "
            "install one (e.g. apt install chafa), or set output.preview_command, " + _OFF_HINT
        )
    return command


def _find_viewer(program: str, env: Mapping[str, str]) -> str:
    found = shutil.which(program, path=env.get("PATH", os.defpath))
    if found is None:
        where = "" if os.sep in program else " on PATH"
        raise ViewerNotInstalled(
            f"preview viewer {program!r} not found{where}: install it, or set "
            f"output.preview_command to an installed viewer (argv list with {PLACEHOLDER}), "
            + _OFF_HINT
        )
    # Run exactly the program we checked: the tmux server's PATH may differ from ours.
    return os.path.abspath(found)


def spawn(
    path: Path,
    command: Sequence[str] = DEFAULT_COMMAND,
    *,
    env: Mapping[str, str] | None = None,
    window_name: str | None = None,
    tmux: str = "tmux",
    timeout: float = 5.0,
    focus: bool = False,
) -> None:
    """Open a tmux window in the caller's session running ``command`` on ``path``.

    ``env`` is the caller's environment: ``$TMUX`` selects the server socket and ``$TMUX_PANE``
    the session. Raises a PreviewError subclass on any failure; never runs a shell on the path.
    """
    env = os.environ if env is None else env
    path = Path(path)
    if not command:
        command = _auto_command(env)
    # Validate the command before touching tmux, so config mistakes are reported as such.
    build_argv(command, path, window_name="imagen")
    if not env.get("TMUX"):
        raise NotInTmux(
            "preview is on but this is not a tmux session ($TMUX is unset): run imagen "
            "inside tmux, " + _OFF_HINT
        )
    tmux_path = shutil.which(tmux, path=env.get("PATH", os.defpath))
    if tmux_path is None:
        raise TmuxNotInstalled(
            f"tmux not found ({tmux!r}): install tmux >= 3.0 (e.g. apt install tmux), " + _OFF_HINT
        )
    done = _run([tmux_path, "-V"], env, timeout)
    version = _tmux_version(done.stdout)
    if version is not None and version < MIN_TMUX:
        # Older tmux joins new-window's words into one `sh -c` string: unsafe for any path.
        raise TmuxTooOld(
            f"{_first_line(done.stdout)} is too old for previews: upgrade to tmux >= 3.0, "
            + _OFF_HINT
        )
    viewer = _find_viewer(command[0], env)
    command = [viewer, *command[1:]]
    name = window_name if window_name is not None else f"imagen {path.name}"

    def tmux_do(*args: str) -> str:
        done = _run([tmux_path, *args], env, timeout)
        if done.returncode != 0:
            reason = _first_line(done.stderr) or f"exit status {done.returncode}"
            raise SpawnFailed(
                f"tmux {args[0]} failed ({reason}): check that the tmux server in $TMUX is "
                "running, " + _OFF_HINT
            )
        return done.stdout.strip()

    pane = env.get("TMUX_PANE")
    session = tmux_do("display-message", "-p", *(("-t", pane) if pane else ()), "#{session_id}")
    windows = tmux_do("list-windows", "-t", session, "-F", f"#{{window_id}}\t#{{{MARK}}}")
    reuse = _marked(windows)
    if reuse is not None:
        try:
            # respawn-pane: respawn-window would make the window the current one.
            tmux_do("respawn-pane", "-k", "-t", reuse, "--", *viewer_words(command, path))
        except SpawnFailed:
            reuse = None  # closed since it was listed (its viewer ended): open another
    if reuse is not None:
        tmux_do("rename-window", "-t", reuse, _window_name(name))  # format-expanded too
        if focus:
            tmux_do("select-window", "-t", reuse)
        return
    argv = build_argv(command, path, window_name=name, focus=focus, session=session)
    tmux_do("set-option", "-w", "-t", tmux_do(*argv[1:]), MARK, "1")


def _marked(listing: str) -> str | None:
    """The preview window's id in list-windows' `ID<tab>MARK` lines, if there is one."""
    for line in listing.splitlines():
        window, _, mark = line.partition("\t")
        if mark == "1":
            return window
    return None


class NoDesktop(PreviewError):
    pass


_DISPLAYS = ("DISPLAY", "WAYLAND_DISPLAY")


def desktop_env(env: Mapping[str, str], timeout: float = 5.0) -> Mapping[str, str]:
    """`env` with the desktop's display. Inside tmux a shell keeps the variables of the day its
    pane was made: when they are unset here, the tmux session's own environment (which tmux
    updates from each client that attaches) says where the desktop is now."""
    if any(env.get(name) for name in _DISPLAYS) or not env.get("TMUX"):
        return env
    tmux = shutil.which("tmux", path=env.get("PATH", os.defpath))
    if tmux is None:
        return env
    pane = env.get("TMUX_PANE")
    found: dict[str, str] = {}
    for name in _DISPLAYS:
        try:
            done = _run(
                [tmux, "show-environment", *(("-t", pane) if pane else ()), name], env, timeout
            )
        except SpawnFailed:
            return env
        line = done.stdout.strip()
        if done.returncode == 0 and line.startswith(f"{name}=") and line != f"{name}=":
            found[name] = line.split("=", 1)[1]
    return {**env, **found} if found else env


def desktop_opener(env: Mapping[str, str], platform: str = sys.platform) -> str:
    """The desktop's own "open this file" program: `open` on macOS, else xdg-open. `env` is
    the one desktop_env gives."""
    program = "open" if platform == "darwin" else "xdg-open"
    if platform != "darwin" and not any(env.get(name) for name in _DISPLAYS):
        where = " here or in this tmux session's environment" if env.get("TMUX") else " here"
        raise NoDesktop(
            f"no desktop session: $DISPLAY and $WAYLAND_DISPLAY are unset{where}; "
            "open it from a desktop session"
        )
    found = shutil.which(program, path=env.get("PATH", os.defpath))
    if found is None:
        raise ViewerNotInstalled(
            f"{program} not found on PATH: install it (e.g. apt install xdg-utils), or run "
            "imagen inside tmux for a terminal preview"
        )
    return os.path.abspath(found)


def open_on_desktop(
    path: Path, *, env: Mapping[str, str] | None = None, timeout: float = 10.0
) -> str:
    """Hand the image to the desktop's opener; returns the opener's name.

    Openers return once the viewer is launched; one that keeps running past `timeout` (some
    fall back to a viewer in the foreground) is left running, not killed."""
    env = desktop_env(os.environ if env is None else env, timeout)
    opener = desktop_opener(env)
    try:
        proc = subprocess.Popen(
            [opener, str(Path(os.path.abspath(path)))],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise SpawnFailed(f"could not run {opener}: {exc.strerror or exc}") from None
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        return os.path.basename(opener)
    if proc.returncode != 0:
        reason = _first_line(stderr.decode(errors="replace")) or f"exit status {proc.returncode}"
        raise SpawnFailed(f"{os.path.basename(opener)} failed ({reason})")
    return os.path.basename(opener)


def _warn_stderr(line: str) -> None:
    print(f"imagen: warning: {line}", file=sys.stderr)


def preview(
    path: Path | str,
    mode: Mode | str,
    *,
    command: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    stdout_isatty: bool | None = None,
    warn: Callable[[str], None] = _warn_stderr,
    window_name: str | None = None,
    tmux: str = "tmux",
    timeout: float = 5.0,
) -> bool:
    """Decide, spawn, and report: returns True when a window was opened.

    Never raises for preview problems: the image is already on disk, so each failure becomes a
    single ``warn()`` line and the caller's exit code is unaffected.
    """
    env = os.environ if env is None else env
    if stdout_isatty is None:
        stdout_isatty = sys.stdout.isatty()
    try:
        if not isinstance(mode, Mode):
            try:
                mode = Mode.parse(mode)
            except ValueError as exc:
                raise PreviewConfigError(str(exc)) from None
        if not should_preview(mode, stdout_isatty=stdout_isatty, env=env):
            return False
        spawn(
            Path(path),
            command or (),
            env=env,
            window_name=window_name,
            tmux=tmux,
            timeout=timeout,
        )
    except PreviewError as exc:
        warn(f"preview: {exc}")
        return False
    except Exception as exc:  # a bug here must not turn a saved image into a failed run
        warn(f"preview: unexpected {type(exc).__name__}: {exc}".replace("\n", "\\n"))
        return False
    return True
