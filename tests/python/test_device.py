"""Device against real virtual devices: pushes, reads, the app, sync and async."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from typing import Any, Callable, Optional

import pytest

import uota
from conftest import Env, needs_micropython, sha256_hex, wait_until

pytestmark = needs_micropython


def assert_device_matches(dev: uota.Device, env: Env, manifest: uota.Manifest) -> None:
    """Every file of ``manifest`` is on the device with the manifest's hash,
    and (config/ota.json aside, which a push rewrites without secrets) with
    the local file's bytes."""
    for path, size, sha in manifest.files:
        data = dev.get(path)
        assert len(data) == size, path
        assert sha256_hex(data) == sha, path
        if path != "config/ota.json":
            assert sha256_hex((env.project / path).read_bytes()) == sha, path


def test_connect_and_query(env: Env) -> None:
    with env.connect() as dev:
        assert dev.protocol == "uota"
        assert (dev.host, dev.port) == (env.host, env.port)
        assert repr(dev) == f"Device(host='{env.host}', port={env.port}, protocol='uota')"
        rtt = dev.ping()
        assert isinstance(rtt, float) and 0 <= rtt < 5
        info = dev.info()
        assert isinstance(info, dict)
        assert info["version"] == dev.version()
        assert "runtime" in info
        entries = dev.ls("/")
        names = {e.name for e in entries}
        assert {"boot.py", "config", "lib"} <= names
        config = next(e for e in entries if e.name == "config")
        assert config.is_dir and isinstance(config, uota.DirEntry)
        boot = next(e for e in entries if e.name == "boot.py")
        assert not boot.is_dir
        assert len(dev.get("/boot.py")) == boot.size == len(dev.get("boot.py"))
        assert not dev.closed
    assert dev.closed
    with pytest.raises(uota.TransportError):
        dev.ping()


def test_a_link_names_the_device(env: Env) -> None:
    link = f"tcp://{env.host}:{env.port}"
    with uota.Device.open(link) as dev:
        assert (dev.link, dev.host, dev.port) == (link, env.host, env.port)
        assert dev.protocol == "uota"
    with uota.Device(link) as dev:
        assert dev.link == link
        version = dev.version()

    async def opened() -> str:
        dev = await uota.Device.open_async(link)
        async with dev:
            return await dev.version_async()

    assert asyncio.run(opened()) == version
    for bad, why in [
        (f"{env.host}:{env.port}", "no scheme"),
        ("ble://board", "not supported"),
        (f"tcp://{env.host}:0", "1 to 65535"),
    ]:
        with pytest.raises(uota.InvalidArgument, match=why):
            uota.Device.open(bad)
    with pytest.raises(uota.InvalidArgument, match="leave out port"):
        uota.Device(link, 2018)


def test_full_then_fast_push(env: Env) -> None:
    events: list[dict[str, Any]] = []
    full = uota.Manifest.for_project(env.project, mode="full")
    since = time.monotonic()
    with env.connect() as dev:
        report = dev.push(env.project, mode="full", progress=events.append)
        # The push returns once the device answers again on the new release;
        # the same Device is connected to it.
        assert report.restart is not None and not report.up_to_date
        assert dev.version() == "1.0.0"
    assert isinstance(report, uota.PushReport)
    assert report.version == full.version == "1.0.0"
    assert report.files_sent == report.files_total == len(full)
    assert report.file_bytes == full.total_size
    # Python source deflates; framing and manifest ride on top of the payload.
    assert report.compressed and report.payload_bytes < report.file_bytes
    assert report.wire_bytes > report.payload_bytes
    assert report.elapsed > 0
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-3:] == ["committing", "committed", "restarting"]
    assert events[0] == {"event": "started", "files": len(full), "bytes": full.total_size}
    assert {e["path"] for e in events if e["event"] == "file"} == {p for p, _, _ in full.files}
    progress = [e for e in events if e["event"] == "progress"]
    assert progress[-1]["sent"] == progress[-1]["total"] == full.total_size
    assert events[-2] == {"event": "committed", "version": "1.0.0"}

    with env.reconnect(since) as dev:
        assert dev.version() == "1.0.0"
        assert_device_matches(dev, env, full)
        state = wait_until(lambda: env.app_state(dev))
        assert state["version"] == "1.0.0"

    # A fast push of a new version sends only the fast set and keeps the rest.
    env.set_version("1.1.0")
    fast = uota.Manifest.for_project(env.project, mode="fast")
    assert len(fast) < len(full)
    since = time.monotonic()
    with env.connect() as dev:
        report = dev.push(env.project, mode="fast")
    assert report.version == "1.1.0"
    # Delta: only the changed config is sent; the unchanged fast files are skipped.
    assert report.files_sent + report.files_skipped == len(fast)
    assert 1 <= report.files_sent < len(fast)
    with env.reconnect(since) as dev:
        assert dev.version() == "1.1.0"
        assert_device_matches(dev, env, fast)
        assert dev.get("www/index.html") == (env.project / "www/index.html").read_bytes()
        # The new app is really running: it records its version at start.
        def new_app_started() -> Optional[dict[str, Any]]:
            state = env.app_state(dev)
            return state if state.get("version") == "1.1.0" else None

        state = wait_until(new_app_started)
        assert state["boots"] >= 2


def test_push_version_override_and_no_reset(env: Env) -> None:
    with env.connect() as dev:
        report = dev.push(env.project, version="7.0.0-rc1", reset=False)
    assert report.version == "7.0.0-rc1"
    with env.reconnect() as dev:
        assert dev.version() == "7.0.0-rc1"


def test_push_manifest_built_separately(env: Env) -> None:
    m = uota.Manifest.build(env.project, include=["main.py", "app/**"], version="5.0.0")
    since = time.monotonic()
    with env.connect() as dev:
        report = dev.push_manifest(env.project, m, mode="full")
    assert report.version == "5.0.0" and report.files_sent == len(m)
    with env.reconnect(since) as dev:
        assert dev.version() == "5.0.0"
        assert_device_matches(dev, env, m)
        assert wait_until(lambda: env.app_state(dev))["version"] == "1.0.0"


def test_rm_and_errors_from_the_device(env: Env) -> None:
    with env.connect() as dev:
        dev.push(env.project, reset=False)
    with env.reconnect() as dev:
        assert dev.get("www/index.html")
        dev.rm("www/index.html")
        with pytest.raises(uota.DeviceError) as info:
            dev.get("www/index.html")
        assert info.value.code == "not_found"
        assert info.value.op == "get"
        with pytest.raises(uota.InvalidPath):
            dev.get("config/.ota.secrets.json")
        with pytest.raises(uota.InvalidPath):
            dev.get("../outside")
        # The connection is still usable after refused requests.
        assert dev.ping() >= 0


def test_progress_callback_error_is_raised_after_push(env: Env) -> None:
    calls: list[dict[str, Any]] = []

    def progress(ev: dict[str, Any]) -> None:
        calls.append(ev)
        raise RuntimeError("boom")

    since = time.monotonic()
    with env.connect() as dev:
        with pytest.raises(RuntimeError, match="boom"):
            dev.push(env.project, progress=progress)
    assert len(calls) == 1  # not called again after it raised
    with env.reconnect(since) as dev:
        assert dev.version() == "1.0.0"  # the push itself went through


def test_async_methods(env: Env) -> None:
    async def main() -> tuple[Any, ...]:
        dev = await uota.Device.connect_async(env.host, env.port)
        async with dev:
            rtt = await dev.ping_async()
            version = await dev.version_async()
            info = await dev.info_async()
            entries = await dev.ls_async("/")
            boot = await dev.get_async("boot.py")
            events: list[dict[str, Any]] = []
            report = await dev.push_async(env.project, mode="full", progress=events.append)
        assert dev.closed
        return rtt, version, info, entries, boot, report, events

    since = time.monotonic()
    rtt, version, info, entries, boot, report, events = asyncio.run(main())
    assert isinstance(rtt, float)
    assert version == info["version"]
    assert "boot.py" in {e.name for e in entries}
    assert boot == (env.device_root / "boot.py").read_bytes()
    assert report.version == "1.0.0"
    assert [e["event"] for e in events[-2:]] == ["committed", "restarting"]

    async def after() -> tuple[str, bytes]:
        await env.vd.wait_ready_async()
        dev = await uota.Device.connect_async(env.host, env.port)
        async with dev:
            info = await dev.info_async()
            assert info["uptime_ms"] < (time.monotonic() - since) * 1000, "not restarted yet"
            return await dev.version_async(), await dev.get_async("app/counter.py")

    def restarted() -> Optional[tuple[str, bytes]]:
        try:
            return asyncio.run(after())
        except AssertionError:
            return None

    version, counter = wait_until(restarted)
    assert version == "1.0.0"
    assert counter == (env.project / "app" / "counter.py").read_bytes()


def test_sync_and_async_share_one_connection(env: Env) -> None:
    dev = env.connect()

    async def both() -> list[Any]:
        return list(await asyncio.gather(dev.ping_async(), dev.version_async(), dev.ls_async()))

    results = asyncio.run(both())
    assert isinstance(results[0], float)
    assert results[1] == dev.version()
    dev.close()

    async def ping() -> float:
        return await dev.ping_async()

    with pytest.raises(uota.TransportError):
        asyncio.run(ping())


def test_reset_and_wipe(env: Env) -> None:
    with env.connect() as dev:
        dev.push(env.project, reset=False)
    with env.reconnect() as dev:
        since = time.monotonic()
        dev.reset()
        with pytest.raises(uota.TransportError):
            dev.ping()
    with env.reconnect(since) as dev:
        assert dev.version() == "1.0.0"
        dev.wipe()
        names = {e.name for e in dev.ls("/")}
        assert "app" not in names and "main.py" not in names
        assert {"boot.py", "config", "lib"} <= names


def test_connection_errors(make_env: Callable[..., Env]) -> None:
    env = make_env()
    with pytest.raises(uota.TransportError) as info:
        uota.Device(env.host, env.port + 1, timeout=2)
    assert isinstance(info.value, ConnectionError)
    assert info.value.target
    with pytest.raises(uota.InvalidArgument):
        uota.Device(env.host, env.port, timeout=-1)
    with pytest.raises(uota.InvalidArgument):
        uota.Device(env.host, env.port, protocol="telnet")  # type: ignore[arg-type]
    with pytest.raises(uota.InvalidArgument):
        uota.VirtualDevice(host="0.0.0.0").start()


def test_micro_ota_protocol(make_env: Callable[..., Env]) -> None:
    # A uota device with "legacy": true also speaks micro-ota's line protocol.
    env = make_env(legacy=True)
    since = time.monotonic()
    with env.connect(protocol="micro-ota") as dev:
        assert dev.protocol == "micro-ota"
        assert dev.ping() >= 0
        assert "boot.py" in {e.name for e in dev.ls("/")}
        report = dev.push(env.project, version="3.0.0")  # stream_ota
    assert report.version == "3.0.0"
    with env.reconnect(since) as dev:
        assert dev.version() == "3.0.0"
    with env.connect(protocol="micro-ota") as dev:
        assert dev.version() == "3.0.0"
    since = time.monotonic()
    with env.connect(protocol="micro-ota") as dev:
        assert dev.push(env.project, version="3.1.0", micro_ota_session=True).version == "3.1.0"
    with env.reconnect(since) as dev:
        assert dev.protocol == "uota"
        assert dev.version() == "3.1.0"
        assert dev.get("app/counter.py") == (env.project / "app/counter.py").read_bytes()


def test_info_is_json_like(env: Env) -> None:
    with env.connect() as dev:
        info = dev.info()
    json.dumps(info)  # plain dicts, lists, str, int, float, bool, None


def test_blocking_call_inside_progress_callback_is_refused(env: Env) -> None:
    errors: list[BaseException] = []
    with env.connect() as dev:

        def progress(ev: dict[str, Any]) -> None:
            if ev["event"] == "started":
                try:
                    dev.ping()  # would deadlock: the push holds the connection
                except RuntimeError as e:
                    errors.append(e)

        dev.push(env.project, reset=False, progress=progress)
    assert len(errors) == 1 and "_async" in str(errors[0])


def test_push_compiles_mpy_files_like_the_cli(env: Env) -> None:
    """``mpyFiles`` (``lib/**`` in the starter): with the board in the project's
    ``.uota_cache.json`` and mpy-cross installed, the device receives ``.mpy``
    files, as from ``uota full``."""
    if not (os.environ.get("UOTA_MPY_CROSS") or shutil.which("mpy-cross")):
        pytest.skip("mpy-cross is not installed")
    micropython = os.environ.get("UOTA_MICROPYTHON") or shutil.which("micropython")
    assert micropython
    # The board: the virtual device's own interpreter.
    mpy = subprocess.run(
        [micropython, "-c", "import sys; print(sys.implementation._mpy)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    board = {
        "micropython": "1.29.0",
        "machine": "virtual",
        "platform": "linux",
        "mpy": int(mpy),
        "mem_free": 1,
        "fs_free": 1,
        "fs_total": 2,
        "has_deflate": True,
        "updated": 1,
    }
    (env.project / ".uota_cache.json").write_text(json.dumps({"devices": {"virtual": board}}))
    (env.project / "lib").mkdir(exist_ok=True)
    (env.project / "lib" / "helper.py").write_text("def double(x):\n    return 2 * x\n")
    with env.connect() as dev:
        report = dev.push(env.project, mode="full", version="8.0.0")
        assert report.version == "8.0.0"
        names = {e.name for e in dev.ls("/lib")}
        assert "helper.mpy" in names and "helper.py" not in names, names
        assert dev.get("lib/helper.mpy")[:1] == b"M"


def test_push_options_are_checked_before_anything_is_sent(env: Env) -> None:
    with env.connect() as dev:
        version = dev.version()
        with pytest.raises(TypeError, match="unexpected keyword argument 'sideways'"):
            dev.push(env.project, sideways=True)  # type: ignore[call-arg]
        with pytest.raises(uota.InvalidArgument, match="push mode"):
            dev.push(env.project, mode="sideways")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="reset"):
            dev.push(env.project, reset="yes")  # type: ignore[arg-type]
        with pytest.raises(uota.InvalidArgument, match="wait"):
            dev.push(env.project, wait=-1.0)
        with pytest.raises(TypeError, match="unexpected keyword argument 'version'"):
            manifest = uota.Manifest.for_project(env.project)
            dev.push_manifest(env.project, manifest, version="1")  # type: ignore[call-arg]
        assert dev.version() == version


def test_connection_options_are_checked_by_name_and_type(env: Env) -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'pasword'"):
        uota.Device(env.host, env.port, pasword="x")
    with pytest.raises(TypeError, match="argument 'timeout'"):
        uota.Device(env.host, env.port, timeout="soon")  # type: ignore[typeddict-item]
    with pytest.raises(uota.InvalidArgument, match="positive number"):
        uota.Device.open(f"tcp://{env.host}:{env.port}", timeout=0)
    with pytest.raises(uota.InvalidArgument, match="unknown protocol"):
        uota.Device(env.host, env.port, protocol="http")  # type: ignore[typeddict-item]
    with pytest.raises(uota.InvalidArgument, match="serial session speaks uota"):
        uota.Device.serial("/dev/null", protocol="micro-ota")  # type: ignore[typeddict-unknown-key]
    with uota.Device(env.host, env.port, timeout=5.0, protocol="uota") as dev:
        assert dev.protocol == "uota"
