"""The bridge itself: GIL release, Ctrl-C, cancellation, exception tree (no device needed)."""

from __future__ import annotations

import _thread
import asyncio
import signal
import threading
import time
from pathlib import Path

import pytest

import uota
from conftest import next_address

KINDS = [
    uota.TransportError,
    uota.UotaTimeoutError,
    uota.ProtocolError,
    uota.DeviceError,
    uota.SignatureMismatch,
    uota.HashMismatch,
    uota.AuthError,
    uota.InvalidPath,
    uota.ConfigError,
    uota.LocalIOError,
    uota.InterpreterMissing,
    uota.InvalidArgument,
]


def test_exception_tree() -> None:
    assert issubclass(uota.UotaError, Exception)
    for cls in KINDS:
        assert issubclass(cls, uota.UotaError), cls
        assert cls.__module__ == "uota"
        assert cls.__doc__
    assert len(set(KINDS)) == 12
    assert issubclass(uota.UotaTimeoutError, TimeoutError)
    assert issubclass(uota.TransportError, ConnectionError)
    assert issubclass(uota.LocalIOError, OSError)
    assert issubclass(uota.InvalidArgument, ValueError)
    assert issubclass(uota.InvalidPath, ValueError)
    assert not issubclass(uota.AuthError, OSError)


def test_timeout_error_fields() -> None:
    vd = uota.VirtualDevice(host=next_address(), port=2018)  # never started
    with pytest.raises(uota.UotaTimeoutError) as info:
        vd.wait_ready(timeout=0.2)
    assert isinstance(info.value, TimeoutError)
    assert info.value.after == pytest.approx(0.2)
    assert vd.host in info.value.what


def test_blocking_call_releases_the_gil() -> None:
    vd = uota.VirtualDevice(host=next_address(), port=2018)
    ticks = 0
    stop = threading.Event()

    def count() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.001)

    t = threading.Thread(target=count)
    t.start()
    with pytest.raises(uota.UotaTimeoutError):
        vd.wait_ready(timeout=0.5)
    stop.set()
    t.join()
    assert ticks > 50  # the other thread ran while Rust waited


def test_ctrl_c_interrupts_a_blocking_call() -> None:
    # Python's own Ctrl-C handler, whatever this process inherited: a runner
    # that starts the suite in the background has SIGINT ignored, and then
    # Python installs none (and interrupt_main does nothing).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        vd = uota.VirtualDevice(host=next_address(), port=2018)
        threading.Timer(0.3, _thread.interrupt_main).start()
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            vd.wait_ready(timeout=30)
        assert time.monotonic() - start < 5
    finally:
        signal.signal(signal.SIGINT, previous)


def test_async_calls_can_be_cancelled() -> None:
    vd = uota.VirtualDevice(host=next_address(), port=2018)

    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(vd.wait_ready_async(timeout=30), 0.3)

    start = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - start < 5


def test_connect_refused_is_transport_error() -> None:
    with pytest.raises(uota.TransportError) as info:
        uota.Device(next_address(), 9, timeout=2)
    assert isinstance(info.value, ConnectionError)
    assert info.value.errno is not None

    async def main() -> None:
        await uota.Device.connect_async(next_address(), 9, timeout=2)

    with pytest.raises(uota.TransportError):
        asyncio.run(main())


def test_virtual_device_arguments() -> None:
    with pytest.raises(uota.InvalidArgument):
        uota.VirtualDevice("a", image="b")
    vd = uota.VirtualDevice()
    assert vd.root is not None and vd.root.is_dir()  # a temporary folder
    assert vd.image is None and not vd.running
    assert repr(vd) == "VirtualDevice(host='127.0.0.1', port=2018, running=False)"
    vd.stop()  # stopping a device that never started is fine
    with pytest.raises(uota.InvalidArgument):
        uota.VirtualDevice(host="192.0.2.1").start()


def test_version() -> None:
    assert uota.__version__.count(".") == 2


def test_a_virtual_device_with_a_compiled_runtime_on_a_small_heap(tmp_path: Path) -> None:
    root = tmp_path / "device"
    vd = uota.VirtualDevice(
        root, host=next_address(), port=2018, runtime="mpy", heap_size="160k", flash_size=4 << 20
    )
    vd.start()
    try:
        with uota.Device(vd.host, vd.port) as dev:
            info = dev.info()
        assert info["mem_idle"] > 0
        assert (root / "lib/uota/server.mpy").is_file()
        assert not (root / "lib/uota/server.py").exists()
        assert info["fs_free"] > 3 << 20  # the flash size it was given
    finally:
        vd.stop()
    with pytest.raises(uota.InvalidArgument, match="py"):
        uota.VirtualDevice(host=next_address(), runtime="bytecode")  # type: ignore[arg-type]
