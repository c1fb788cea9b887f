"""Atomic file writes: temp file in the same directory, fsync, rename, fsync the directory."""

from __future__ import annotations

import os
import re
import stat
import tempfile
from pathlib import Path


def umask() -> int:
    """The process's umask, read without changing it where Linux says it (/proc, 4.7+): setting
    and restoring it would briefly apply 0 to files other threads create meanwhile."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o077)
    os.umask(current)
    return current


class FileExists(FileExistsError):
    pass


class NotRegular(FileExistsError):
    pass


def atomic_write(path: Path, data: bytes, *, overwrite: bool = True, mode: int = 0o644) -> None:
    """Write `data` to `path` atomically. Overwriting only ever replaces a regular file: a
    device, FIFO, socket, link or directory under that name is left alone (NotRegular).

    `mode` is what the file may be at most: the umask takes away from it, as open() would
    (mkstemp makes 0600 files, so the mode is set explicitly and the umask applied here)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if overwrite:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISREG(st.st_mode):
                raise NotRegular(
                    f"{path} is not a regular file; imagen only replaces regular files"
                )
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode & ~umask())
        if overwrite:
            os.replace(tmp, path)
        else:
            # link() fails if the name exists: no window in which another writer is clobbered.
            try:
                os.link(tmp, path)
            except FileExistsError:
                if _reserved(path):
                    os.replace(tmp, path)  # the empty name this job reserved before paying
                elif not _holds(path, data):
                    raise FileExists(f"{path} already exists (use --force to overwrite)") from None
                # else: these very bytes are there already (a run killed after writing them
                # and before recording it): writing again is a no-op, not a clobber.
            else:
                os.unlink(tmp)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# mkstemp(prefix=".<name>.", suffix=".tmp") names: 8 characters from mkstemp's alphabet.
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
STALE_TEMP_S = 15 * 60  # far longer than any write takes: a live writer's temp file is fresh


def sweep_temp_files(
    directory: Path, now: float, *, older_than: float = STALE_TEMP_S
) -> list[Path]:
    """Remove temp files a killed imagen left behind: only regular files named the way
    atomic_write names them, and only old ones (another process may be writing a new one)."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        if not _TEMP_NAME.match(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and now - st.st_mtime > older_than:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


def _reserved(path: Path) -> bool:
    """An empty regular file: the placeholder `imagen generate` creates to claim a name."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == 0


def _holds(path: Path, data: bytes) -> bool:
    """Is `path` a regular file with exactly these bytes?"""
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size != len(data):
            return False
        return path.read_bytes() == data
    except OSError:
        return False
