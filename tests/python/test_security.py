"""Passwords and signed releases: the exceptions, and that a refused release changes nothing."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Callable

import pytest

import uota
from conftest import Env, needs_micropython, sha256_hex, wait_until

pytestmark = needs_micropython


def test_wrong_or_missing_password_is_auth_error(make_env: Callable[..., Env]) -> None:
    env = make_env(password="s3cret")
    with pytest.raises(uota.AuthError):
        uota.Device(env.host, env.port, password="wrong")
    with pytest.raises(uota.AuthError):
        uota.Device(env.host, env.port)

    async def wrong() -> None:
        await uota.Device.connect_async(env.host, env.port, password="wrong")

    with pytest.raises(uota.AuthError):
        asyncio.run(wrong())
    with uota.Device(env.host, env.port, password="s3cret") as dev:
        assert dev.ping() >= 0


def test_push_with_password_from_project(make_env: Callable[..., Env]) -> None:
    env = make_env(password="pw1")
    since = time.monotonic()
    with env.connect() as dev:
        report = dev.push(env.project)
    assert report.version == "1.0.0"
    with env.reconnect(since) as dev:
        assert dev.version() == "1.0.0"
        # The secrets never reach the device's config.
        config = json.loads(dev.get("config/ota.json"))
        assert "otaPassword" not in config and "signingKey" not in config


def test_passwd_changes_and_clears_the_password(make_env: Callable[..., Env]) -> None:
    env = make_env(password="old")
    with env.connect() as dev:
        dev.passwd("new")
    with pytest.raises(uota.AuthError):
        uota.Device(env.host, env.port, password="old")
    with uota.Device(env.host, env.port, password="new") as dev:
        dev.passwd(None)
    with uota.Device(env.host, env.port) as dev:
        assert dev.ping() >= 0


def test_signed_push_and_wrong_key(make_env: Callable[..., Env]) -> None:
    env = make_env(signing_key="right-key")
    # The project's secrets hold the right key: the push is signed and accepted.
    since = time.monotonic()
    with env.connect() as dev:
        assert dev.push(env.project).version == "1.0.0"
    with env.reconnect(since) as dev:
        assert dev.version() == "1.0.0"
        counter_before = dev.get("app/counter.py")
        wait_until(lambda: env.app_state(dev))

    # A new release signed with the wrong key is refused before any byte is kept.
    env.set_version("2.0.0")
    with env.connect() as dev:
        with pytest.raises(uota.SignatureMismatch) as info:
            dev.push(env.project, signing_key="wrong-key")
        assert isinstance(info.value, uota.UotaError)
    # Unsigned is refused too.
    with env.connect() as dev:
        with pytest.raises(uota.SignatureMismatch):
            dev.push(env.project, signing_key="")

    # The device still serves the old release and answers.
    with env.reconnect() as dev:
        assert dev.ping() >= 0
        assert dev.version() == "1.0.0"
        assert dev.get("app/counter.py") == counter_before
        assert sha256_hex(counter_before) != sha256_hex((env.project / "app/counter.py").read_bytes())
        assert env.app_state(dev)["version"] == "1.0.0"

    # A manifest signed beforehand (micro-ota's payload) is not enough for a
    # uota device: its signature must cover this session's nonce, so the
    # key signs at push time.
    m = uota.Manifest.for_project(env.project)
    m.sign("right-key")
    with env.connect() as dev:
        with pytest.raises(uota.SignatureMismatch):
            dev.push_manifest(env.project, m)
    since = time.monotonic()
    with env.connect() as dev:
        assert dev.push_manifest(env.project, m, signing_key="right-key").version == "2.0.0"
    with env.reconnect(since) as dev:
        assert dev.version() == "2.0.0"


def test_derive_device_key_is_hmac_of_the_device_id() -> None:
    import hashlib
    import hmac

    want = hmac.new(b"fleet", b"uota-device-key:v1:dev-1", hashlib.sha256).hexdigest()
    assert uota.derive_device_key("fleet", "dev-1") == want
    assert uota.derive_device_key("fleet", "dev-2") != want


def test_a_lower_release_number_is_refused_as_release_refused(make_env: Callable[..., Env]) -> None:
    env = make_env(signing_key="k")
    since = time.monotonic()
    with env.connect() as dev:
        report = dev.push(env.project, release=7)
    assert report.release == 7
    with env.reconnect(since) as dev:
        assert dev.version() == "1.0.0"
    env.set_version("0.9.0")
    with env.connect() as dev:
        with pytest.raises(uota.ReleaseRefused) as info:
            dev.push(env.project, release=6)
    assert info.value.reason == "downgrade"
    with env.connect() as dev:
        assert dev.version() == "1.0.0"
    # Signed as a rollback, the lower number installs.
    since = time.monotonic()
    with env.connect() as dev:
        assert dev.push(env.project, release=6, rollback=True).release == 6
    with env.reconnect(since) as dev:
        assert dev.version() == "0.9.0"
