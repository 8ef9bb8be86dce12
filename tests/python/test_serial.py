"""The serial side from Python: uota.Repl and Device.serial against a serial
virtual device (`uota sim --serial`: the unix port on a pseudo-terminal)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

import uota
from conftest import needs_micropython, next_address

pytestmark = [
    needs_micropython,
    pytest.mark.skipif(sys.platform == "win32", reason="needs a Unix pseudo-terminal"),
]


def _serial_sim(tmp_path: Path, *extra: str) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "uota", "--json", "sim", "--serial", *extra, "--root", str(tmp_path / "device"),
         "--host", next_address(), "--port", "2018"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        path = json.loads(line)["serial"]
        assert path.startswith("/dev/pts/")
        yield path
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture
def serial_board(tmp_path: Path) -> Iterator[str]:
    """`uota sim --serial` (runtime installed); yields its port path."""
    yield from _serial_sim(tmp_path)


@pytest.fixture
def bare_board(tmp_path: Path) -> Iterator[str]:
    """`uota sim --serial --bare` (no runtime); yields its port path."""
    yield from _serial_sim(tmp_path, "--bare")


def test_repl_exec_eval_and_device_exceptions(serial_board: str) -> None:
    with uota.Repl(serial_board) as repl:
        assert repl.port == serial_board
        repl.interrupt()
        assert repl.exec("print(6 * 7)").strip() == "42"
        assert repl.eval("2 ** 10") == "1024"
        with pytest.raises(uota.DeviceError) as info:
            repl.exec("1 / 0")
        assert info.value.exception == "ZeroDivisionError"
        assert "Traceback" in info.value.traceback
        # The REPL is still usable after the exception.
        assert repl.eval("'ok'") == "'ok'"


def test_device_over_serial_answers_and_closes(serial_board: str) -> None:
    dev = uota.Device.serial(serial_board)
    try:
        assert dev.ping() >= 0
        info = dev.info()
        assert info["platform"] == "linux"
        names = [e.name for e in dev.ls("/")]
        assert "boot.py" in names
    finally:
        dev.close()
    assert dev.closed


def test_bootstrap_a_bare_board_then_files_and_ota(bare_board: str, tmp_path: Path) -> None:
    with uota.Repl(bare_board) as repl:
        info = repl.board_info()
        assert info["platform"] == "linux" and info["mem_free"] > 0
        blob = bytes(range(256)) * 300
        repl.put("/blob.bin", blob)
        assert repl.get("/blob.bin") == blob
        assert {"name": "blob.bin", "is_dir": False, "size": len(blob)} in repl.ls()
        report = repl.bootstrap()
        assert any(f.endswith("server.py") for f in report["files"])
        assert report["reset"] is True
    assert (tmp_path / "device" / "lib" / "uota" / "server.py").is_file()
    # The board now boots into uota: an OTA session over the same port.
    dev = uota.Device.serial(bare_board)
    try:
        assert dev.version() == "unknown"
        assert dev.get("blob.bin") == blob
    finally:
        dev.close()


def test_a_serial_link_opens_the_same_session(serial_board: str) -> None:
    with uota.Device.open(f"serial://{serial_board}?baud=115200") as dev:
        assert dev.link == f"serial://{serial_board}?baud=115200"
        assert dev.info()["platform"] == "linux"
    assert dev.closed
