"""Fixtures: real virtual devices (the MicroPython unix port) and starter projects."""

from __future__ import annotations

import faulthandler
import hashlib
import itertools
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generator, Iterator, Optional, TypeVar

import pytest

try:
    import uota
except ImportError:  # not built: only tests that need no device can run (test_device_imports.py)
    uota = None  # type: ignore[assignment]

REPO = Path(__file__).resolve().parents[2]
STARTER = REPO / "examples" / "starter"

#: Hard limit per test; on expiry the tracebacks of all threads are printed
#: and the run stops (no pytest-timeout plugin needed).
TEST_TIMEOUT = float(os.environ.get("UOTA_TEST_TIMEOUT", "180"))

HAVE_MICROPYTHON = bool(os.environ.get("UOTA_MICROPYTHON") or shutil.which("micropython"))
needs_micropython = pytest.mark.skipif(
    not HAVE_MICROPYTHON, reason="the MicroPython unix port (micropython) is not installed"
)

# Each device gets its own loopback address, 127.<X>.<Y>.<Z>, with <X> taken
# from the process id so that concurrent test runs (and the Rust tests, which
# use 127.0.0.N) do not collide.
_OCTET = 100 + os.getpid() % 150
_counter = itertools.count(1)


def next_address() -> str:
    """A loopback address no other device of this run uses."""
    n = next(_counter)
    return f"127.{_OCTET}.{n // 250}.{n % 250 + 1}"


# A fleet of devices gets a /24 of its own, 127.<X>.<Y>.0/24 with <Y> from
# 200 up: next_address stays below that for its first 50 000 addresses, so
# a scan of the block finds that fleet's devices and nothing else.
_blocks = itertools.count(200)


def next_block() -> str:
    """A loopback /24 no other device of this run uses, as ``127.X.Y``
    (devices at ``127.X.Y.1``, ``127.X.Y.2``, ...)."""
    n = next(_blocks)
    assert n < 255, "too many fleets in one run"
    return f"127.{_OCTET}.{n}"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


T = TypeVar("T")


def wait_until(check: Callable[[], Optional[T]], timeout: float = 30.0, interval: float = 0.1) -> T:
    """Call ``check`` until it returns something truthy without raising; return that."""
    deadline = time.monotonic() + timeout
    last: Optional[BaseException] = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except uota.UotaError as e:
            last = e
        else:
            if value:
                return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last error: {last!r})")


@dataclass
class Env:
    """A started virtual device and a starter project that targets it."""

    vd: uota.VirtualDevice
    project: Path
    device_root: Path
    log: Path
    password: Optional[str] = None
    signing_key: Optional[str] = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return self.vd.host

    @property
    def port(self) -> int:
        return self.vd.port

    def connect(self, **kw: object) -> uota.Device:
        kw.setdefault("password", self.password)
        return uota.Device(self.host, self.port, **kw)  # type: ignore[arg-type]

    def reconnect(self, since: Optional[float] = None, timeout: float = 30.0, **kw: object) -> uota.Device:
        """Connect to the device once it is up again.

        With ``since`` (a ``time.monotonic()`` taken before a push or reset
        that restarts the device), wait for the *restarted* runtime: until the
        restart, the old one may still accept connections for a moment. A
        runtime whose uptime is shorter than the time since ``since`` booted
        after it.
        """

        def attempt() -> Optional[uota.Device]:
            dev = self.connect(**kw)
            if since is not None and dev.info()["uptime_ms"] > (time.monotonic() - since) * 1000:
                dev.close()
                return None
            return dev

        return wait_until(attempt, timeout=timeout)

    def set_version(self, version: str) -> None:
        """Bump the release version in the project's config and in the app."""
        config = self.project / "config" / "ota.json"
        data = json.loads(config.read_text())
        data["version"] = version
        config.write_text(json.dumps(data, indent=2))
        counter = self.project / "app" / "counter.py"
        lines = counter.read_text().splitlines(keepends=True)
        counter.write_text(
            "".join(f'VERSION = "{version}"\n' if l.startswith("VERSION = ") else l for l in lines)
        )

    def app_state(self, dev: uota.Device) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(dev.get("/data/app_state.json"))
        return state

    def device_log(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def make_project(
    dest: Path,
    host: str,
    port: int,
    password: Optional[str],
    signing_key: Optional[str],
    legacy: bool = False,
) -> Path:
    """Copy examples/starter to ``dest`` and point it at ``host:port``."""
    shutil.copytree(
        STARTER,
        dest,
        ignore=shutil.ignore_patterns("__pycache__", ".ota.secrets.json", ".uota_cache.json"),
    )
    config = dest / "config" / "ota.json"
    data = json.loads(config.read_text())
    data["hostname"] = host
    data["port"] = port
    if legacy:
        data["legacy"] = True
    config.write_text(json.dumps(data, indent=2))
    if password or signing_key:
        secrets = {"otaPassword": password or "", "signingKey": signing_key or ""}
        (dest / "config" / ".ota.secrets.json").write_text(json.dumps(secrets))
    return dest


@pytest.fixture(autouse=True)
def _hard_timeout() -> Iterator[None]:
    faulthandler.dump_traceback_later(TEST_TIMEOUT, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def make_env(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Env]]:
    """Factory: ``make_env(password=None, signing_key=None, legacy=False)`` starts a
    device and a project that targets it."""
    if not HAVE_MICROPYTHON:
        pytest.skip("the MicroPython unix port (micropython) is not installed")
    started: list[Env] = []

    def make(
        password: Optional[str] = None,
        signing_key: Optional[str] = None,
        legacy: bool = False,
        port: int = 2018,
    ) -> Env:
        n = len(started)
        host = next_address()
        device_root = tmp_path / f"device{n}"
        log = tmp_path / f"device{n}.log"
        vd = uota.VirtualDevice(
            device_root,
            host=host,
            port=port,
            password=password,
            signing_key=signing_key,
            legacy=legacy,
            log=log,
        )
        vd.start()
        project = make_project(tmp_path / f"project{n}", host, port, password, signing_key, legacy)
        env = Env(vd, project, device_root, log, password, signing_key)
        started.append(env)
        return env

    yield make
    for env in started:
        env.vd.stop()
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        for env in started:
            print(f"--- device log {env.log} ---\n{env.device_log()[-4000:]}")


@pytest.fixture
def env(make_env: Callable[..., Env]) -> Env:
    """A started virtual device without password or signing key, and its project."""
    return make_env()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep
