"""Files imagen writes take no more permission than the umask allows."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from imagen.runner.files import atomic_write, umask
from imagen.testing.comfyui import ComfyUIDouble
from tests.support.doubles import comfy_box


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_umask_is_read_without_changing_it() -> None:
    before = os.umask(0o027)
    try:
        assert umask() == 0o027
        assert umask() == 0o027
    finally:
        os.umask(before)


def test_atomic_write_takes_the_umask_from_the_mode(tmp_path: Path) -> None:
    before = os.umask(0o077)
    try:
        atomic_write(tmp_path / "a.png", b"x")
        atomic_write(tmp_path / "b.json", b"{}", mode=0o600)
    finally:
        os.umask(before)
    os.umask(0o022)
    try:
        atomic_write(tmp_path / "c.png", b"x")
    finally:
        os.umask(before)
    assert _mode(tmp_path / "a.png") == 0o600
    assert _mode(tmp_path / "b.json") == 0o600
    assert _mode(tmp_path / "c.png") == 0o644


def test_generate_under_umask_077_writes_no_file_others_can_read(
    tmp_path: Path, comfy: ComfyUIDouble
) -> None:
    box = comfy_box(tmp_path, comfy)
    done = subprocess.run(
        box.cmd("generate", "a private harbour", "--seed", "5"),
        capture_output=True,
        text=True,
        timeout=120,
        env=box.env,
        cwd=box.root,
        umask=0o077,
    )
    assert done.returncode == 0, done.stderr
    image = Path(done.stdout.strip())
    written = [image, image.with_name(image.name + ".json")]
    written += [p for p in box.root.glob("ledger.db*")]
    for path in written:
        if path.exists():
            assert _mode(path) & 0o077 == 0, f"{path.name} is {oct(_mode(path))}"
