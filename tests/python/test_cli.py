"""The `uota` command as pip installs it: `python -m uota` / the console script."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Callable

import pytest

import uota
from conftest import Env, needs_micropython, next_address


def uota_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "uota", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_help_and_usage_errors() -> None:
    ok = uota_cli("--help")
    assert ok.returncode == 0
    assert "uota" in ok.stdout and "Usage" in ok.stdout
    bad = uota_cli("no-such-command")
    assert bad.returncode == 2
    assert bad.stderr


def test_run_cli_in_process() -> None:
    assert uota.run_cli(["uota", "--json", "ping", "--host", next_address(), "--port", "9", "--timeout", "1"]) != 0


@needs_micropython
def test_json_version_and_ls(env: Env) -> None:
    res = uota_cli("--json", "version", "--host", env.host, "--port", str(env.port))
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["ok"] is True
    with env.connect() as dev:
        assert out["version"] == dev.version()

    res = uota_cli("--json", "ls", "--host", env.host, "--port", str(env.port), "/")
    assert res.returncode == 0, res.stderr
    names = {e["name"] for e in json.loads(res.stdout)["entries"]}
    assert "boot.py" in names


@needs_micropython
def test_json_push_from_project_config(env: Env) -> None:
    # hostname and port come from the project's config/ota.json.
    since = time.monotonic()
    res = uota_cli("--json", "full", "--project", str(env.project), timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(res.stdout.splitlines()[-1])["ok"] is True
    with env.reconnect(since) as dev:
        assert dev.version() == "1.0.0"


def test_failure_exit_code_and_json_error() -> None:
    host = next_address()  # nothing listens there
    res = uota_cli("--json", "version", "--host", host, "--port", "2018", "--timeout", "2")
    assert res.returncode != 0
    out = json.loads(res.stdout)
    assert out["ok"] is False
    assert out["error"]["message"]


@needs_micropython
def test_auth_failure_exit_code(make_env: Callable[..., Env]) -> None:
    env = make_env(password="pw")
    res = uota_cli(
        "--json", "version", "--host", env.host, "--port", str(env.port), "--password", "wrong"
    )
    assert res.returncode == 3
    assert json.loads(res.stdout)["ok"] is False


@pytest.mark.parametrize("argv0", ["uota", "/some/where/uota"])
def test_run_cli_help(argv0: str) -> None:
    # argv[0] is only the program name; it does not change parsing.
    assert uota.run_cli([argv0, "--help"]) == 0


@needs_micropython
def test_get_to_stdout_keeps_the_bytes_after_the_last_newline(env: Env) -> None:
    # What the pip-installed command writes to stdout is flushed before it exits.
    data = b'{"version": "1.0.0",\n "start": 3}'  # no newline at the end
    target = env.device_root / "data" / "tail.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    res = subprocess.run(
        [sys.executable, "-m", "uota", "get", "data/tail.json", "-", "--host", env.host, "--port", str(env.port)],
        capture_output=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == data
