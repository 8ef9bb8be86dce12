"""RemoteIO from Python against real virtual devices: ``Device.call`` and
``Device.listen``, sync and async, errors and authentication."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

import uota
from conftest import REPO, Env, needs_micropython

pytestmark = needs_micropython

#: An app with handlers that prints ``tick N`` every 100 ms (shared with tests/remoteio.rs).
APP = (REPO / "tests" / "device" / "remoteio_app.py").read_text()


def push_app(env: Env, version: str = "1.0.0") -> uota.Device:
    """Push the app; returns a connection to the device running it."""
    (env.project / "main.py").write_text(APP)
    dev = env.connect()
    report = dev.push(env.project, mode="full", version=version)
    assert report.version == version
    return dev


def ticks(events: Any, count: int, prefix: str = "tick ") -> list[dict[str, Any]]:
    """The first ``count`` ``tick`` lines of ``events`` (other output skipped)."""
    lines = (ev for ev in events if ev["event"] == "line" and ev["text"].startswith(prefix))
    return list(itertools.islice(lines, count))


def assert_consecutive(lines: list[dict[str, Any]]) -> None:
    numbers = [int(ev["text"].split()[1]) for ev in lines]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), lines
    seqs = [ev["seq"] for ev in lines]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), lines
    assert all(ev["text"].endswith("\n") for ev in lines), lines


ERRORS = [
    ("nope", {}, "unknown_handler", "nope"),
    ("boom", {}, "call_failed", "ValueError: boom"),
    ("hang", {}, "call_timeout", "500 ms"),
    ("add", {"c": 1}, "call_failed", "TypeError"),
    ("unjsonable", {}, "bad_result", "JSON"),
]


def test_calls_return_results_and_raise_device_errors(env: Env) -> None:
    with push_app(env) as dev:
        assert dev.call("ping") == "pong"
        assert dev.call("version") == "1.0.0"
        assert isinstance(dev.call("uptime_ms"), int)
        assert dev.call("free_mem") > 0
        info = dev.call("info")
        assert isinstance(info, dict) and "add" in info["handlers"], info
        assert dev.call("add", a=2, b=40) == 42
        assert dev.call("add", a=[1], b=[2, {"x": None}]) == [1, 2, {"x": None}]
        # `name` is positional-only: a handler may take a `name` argument.
        assert dev.call("append", n=3) == 3
        for name, kwargs, code, says in ERRORS:
            with pytest.raises(uota.DeviceError) as info_:
                dev.call(name, **kwargs)
            e = info_.value
            assert (e.op, e.code) == ("call", code), (name, e)
            assert says in e.message, (name, e.message)
        # Arguments without a JSON form are refused before anything is sent.
        with pytest.raises(TypeError, match="argument 'a'"):
            dev.call("add", a=object())
        with pytest.raises(TypeError, match="argument 'a'"):
            dev.call("add", a=float("nan"))
        # The connection still serves calls and the rest of the protocol.
        assert dev.call("add", a=1, b=1) == 2
        assert dev.version() == "1.0.0"
        assert dev.get("/data/calls.txt") == b"3\n"
    with pytest.raises(uota.TransportError):
        dev.call("ping")


def test_calls_async(env: Env) -> None:
    push_app(env).close()

    async def main() -> list[Any]:
        async with await uota.Device.connect_async(env.host, env.port) as dev:
            results = [await dev.call_async("ping"), await dev.call_async("add", a=2, b=40)]
            results += await asyncio.gather(*(dev.call_async("add", a=i, b=1) for i in range(5)))
            with pytest.raises(uota.DeviceError) as e:
                await dev.call_async("boom")
            assert (e.value.code, e.value.message) == ("call_failed", "ValueError: boom")
            with pytest.raises(TypeError):
                dev.call_async("add", a={1: 2})
            return results

    assert asyncio.run(main()) == ["pong", 42, 1, 2, 3, 4, 5]


def test_listen_yields_the_output_and_stops_when_the_loop_breaks(env: Env) -> None:
    with push_app(env) as dev:
        for _ in range(2):  # a second listener resumes nothing: it starts again
            lines = ticks(dev.listen(outage=4.0), 5)
            assert_consecutive(lines)
        # A listener used as a context manager, closed explicitly.
        with dev.listen() as out:
            assert_consecutive(ticks(out, 3))
        with pytest.raises(StopIteration):
            next(out)
        out.close()  # idempotent
        # Calls go on on the Device's connection while a listener runs.
        out = dev.listen()
        first = ticks(out, 2)
        assert dev.call("add", a=2, b=40) == 42
        assert_consecutive(first + ticks(out, 2))
        del out
        # The device still serves a push after the listeners went away.
        (env.project / "main.py").write_text(APP.replace("tick", "tock"))
        assert dev.push(env.project, mode="full", version="1.0.1").version == "1.0.1"
        assert dev.call("version") == "1.0.1"
        with dev.listen() as out:
            assert_consecutive(ticks(out, 3, prefix="tock "))
        with pytest.raises(uota.InvalidArgument, match="outage"):
            dev.listen(outage=0)


def test_listen_async(env: Env) -> None:
    push_app(env).close()

    async def main() -> list[dict[str, Any]]:
        async with await uota.Device.connect_async(env.host, env.port) as dev:
            got: list[Any] = []
            async for ev in dev.listen_async(outage=4.0):
                if ev["event"] == "line" and ev["text"].startswith("tick "):
                    got.append(ev)
                    if len(got) == 5:
                        break
            async with dev.listen_async() as out:
                async for ev in out:
                    if ev["event"] == "line" and ev["text"].startswith("tick "):
                        assert await dev.call_async("add", a=1, b=2) == 3
                        break
            with pytest.raises(StopAsyncIteration):
                await out.__anext__()
            assert await dev.version_async() == "1.0.0"
            return got

    assert_consecutive(asyncio.run(main()))


def test_a_password_guards_calls_and_listeners(make_env: Any) -> None:
    env = make_env(password="rio-secret")
    push_app(env).close()
    with env.connect() as dev:
        assert dev.call("add", a=2, b=40) == 42
        assert_consecutive(ticks(dev.listen(), 3))
    with pytest.raises(uota.AuthError):
        with uota.Device(env.host, env.port) as anonymous:
            anonymous.call("ping")
    with pytest.raises(uota.AuthError):
        with uota.Device(env.host, env.port) as anonymous:
            next(iter(anonymous.listen()))
    with pytest.raises(uota.AuthError):
        with uota.Device(env.host, env.port, password="wrong") as wrong:
            wrong.call("ping")


def test_listen_survives_a_restart(env: Env) -> None:
    push_app(env).close()
    with env.connect() as dev, dev.listen(outage=2.0) as out:
        before = ticks(out, 2)
        with env.connect() as other:
            other.reset()
        seen: list[Any] = []
        for ev in out:
            seen.append(ev)
            if ev["event"] == "restarted":
                break
        assert [ev["event"] for ev in seen if ev["event"] != "line"][:1] == ["link_down"], seen
        assert isinstance(seen[-1]["boot"], int)
        # The app starts counting again; the listener goes on.
        after = ticks(out, 3)
        assert_consecutive(after)
        assert_consecutive(before)


def test_a_call_reconnects_after_the_link_dropped(env: Env) -> None:
    push_app(env).close()
    with env.connect() as dev:
        boots = dev.info()["boot"]["boots"]
        with env.connect() as other:
            other.reset()
        # The Device's connection died with the restart: the call opens a
        # new one (with backoff while the device boots) and keeps it.
        assert dev.call("add", a=2, b=40) == 42
        assert dev.version() == "1.0.0"
        assert dev.info()["boot"]["boots"] == boots + 1
