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


@pytest.fixture
def serial_board(tmp_path: Path) -> Iterator[str]:
    """Start `uota sim --serial` (runtime installed) and yield its port path."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "uota", "--json", "sim", "--serial", "--root", str(tmp_path / "device"),
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
