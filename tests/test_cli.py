"""The CLI skeleton: config files and their errors, backends, version, help and start-up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli import ROOT, Sandbox
from tests.support.doubles import TOKEN, TOKEN_ENV, comfyui_double, replicate_double


@pytest.fixture
def box(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path)


def test_config_init_show_and_path(box: Sandbox) -> None:
    path = box.run("config", "path").stdout.strip()
    assert path == str(box.root / "config.toml")
    init = box.run("config", "init")
    assert init.returncode == 0 and Path(path).exists()
    assert Path(path).stat().st_mode & 0o077 == 0
    assert box.run("config", "init").returncode == 2  # never overwritten silently
    shown = json.loads(box.run("config", "show", "--json", env=TOKEN_ENV).stdout)
    assert set(shown["backends"]) == {
        "flux-schnell-local",
        "flux-schnell-replicate",
        "flux-dev-replicate",
    }
    assert shown["default_backend"] == "flux-schnell-local"
    assert (
        shown["backends"]["flux-schnell-replicate"]["api_token_env"] == "REPLICATE_API_TOKEN (set)"
    )
    text = box.run("config", "show", env=TOKEN_ENV).stdout
    assert TOKEN not in text


@pytest.mark.parametrize("args", [("backends", "--check"), ("generate", "x"), ("backends",)])
def test_echo_is_not_a_backend_users_can_configure(box: Sandbox, args: tuple[str, ...]) -> None:
    """echo is a test adapter: the product's registry refuses it with a config error (it once
    died with AttributeError in `backends --check` and KeyError in `generate`)."""
    box.write_backend("e", "echo", url="http://127.0.0.1:9/render")
    result = box.run(*args)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "backends.e.type = 'echo'; allowed: comfyui, replicate" in line
    assert not (box.root / "ledger.db").exists() or box.job_ids() == []


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("colour = 1\n", "unknown key 'colour'"),
        ("[output]\npreview = 'sometimes'\n", "output.preview = 'sometimes' is not allowed"),
        ("[backends.x]\ntype = 'replicate'\nwait_s = 'long'\n", "backends.x.wait_s must be int"),
        ("[backends.x]\ntype = 'replicate'\nfoo = 1\n", "unknown key backends.x.foo"),
        (
            "[backends.x]\ntype = 'dalle'\n",
            "backends.x.type = 'dalle'; allowed: comfyui, replicate",
        ),
        (
            "default_backend = 'nope'\n[backends.x]\ntype = 'comfyui'\n",
            "default_backend = 'nope' is not a configured backend",
        ),
        ("[output\n", "not valid TOML"),
    ],
)
def test_config_errors_name_file_key_and_fix(box: Sandbox, toml: str, expected: str) -> None:
    box.write_config(toml)
    result = box.run("backends")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert str(box.root / "config.toml") in line and expected in line


def test_missing_explicit_config_is_an_error(box: Sandbox, tmp_path: Path) -> None:
    result = box.run("--config", str(tmp_path / "nope.toml"), "backends")
    assert result.returncode == 2 and "imagen config init" in result.stderr


def test_backends_status_and_check(box: Sandbox) -> None:
    with replicate_double() as rep, comfyui_double() as comfy:
        box.write_config(f"""
default_backend = "local"
[backends.local]
type = "comfyui"
url = "{comfy.url}"
[backends.cloud]
type = "replicate"
base_url = "{rep.url}"
[backends.cloud-unset]
type = "replicate"
api_token_env = "OTHER_TOKEN"
""")
        listed = json.loads(box.run("backends", "--json", env=TOKEN_ENV).stdout)
        status = {r["name"]: r["status"] for r in listed}
        # Not asked, never "ok": only --check says a server answers.
        assert status == {
            "local": "configured",
            "cloud": "configured",
            "cloud-unset": "not configured (set OTHER_TOKEN)",
        }
        checked = box.run("backends", "--check", env=TOKEN_ENV).stdout
        assert "ok (ComfyUI" in checked and "token accepted" in checked
        rejected = box.run("backends", "--check", env={"REPLICATE_API_TOKEN": "r8_wrong"}).stdout
        assert "token rejected" in rejected
    gone = box.run("backends", "--check", env={"REPLICATE_API_TOKEN": "x"}).stdout
    assert "unreachable" in gone


def test_version_and_help(box: Sandbox) -> None:
    from imagen import __version__

    assert box.run("--version").stdout.strip() == __version__
    for command in (
        "generate",
        "jobs",
        "show",
        "resume",
        "audit",
        "rebuild",
        "usage",
        "backends",
        "demo",
        "preview",
        "config",
        "db",
    ):
        result = box.run(command, "--help")
        assert result.returncode == 0 and "Usage:" in result.stdout, command


def test_help_imports_no_heavy_modules() -> None:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "imagen", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    imported = {
        line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line
    }
    assert not imported & {"sqlalchemy", "alembic", "supabase", "urllib3"}


def test_read_only_commands_at_head_skip_alembic(box: Sandbox) -> None:
    box.write_config("")
    assert box.run("jobs").returncode == 0  # creates the ledger and its projection
    out = subprocess.run(
        [*box.cmd("jobs")[:1], "-X", "importtime", *box.cmd("jobs")[1:]],
        capture_output=True,
        text=True,
        env=box.env,
        cwd=box.root,
    )
    assert out.returncode == 0
    assert "alembic" not in out.stderr  # the ledger is at head: nothing to migrate


def test_demo_runs_end_to_end(box: Sandbox) -> None:
    result = box.run("demo", "a test lighthouse", env={"TMPDIR": str(box.root)})
    assert result.returncode == 0, result.stderr
    assert "simulator" in result.stdout
    image = next(
        line.split(None, 1)[1] for line in result.stdout.splitlines() if line.startswith("image ")
    )
    assert Path(image).exists() and Path(f"{image}.json").exists()
    assert "succeeded" in result.stdout and "verified" in result.stdout
    assert not (box.root / "ledger.db").exists()  # never the user's ledger
