# A tiny app that shows an update arrived: it records its version and how
# many times it has started in /data/app_state.json (uota never touches
# /data), then prints a heartbeat every few seconds.
#
# Change VERSION (and "version" in config/ota.json), push, and the new value
# appears in /data/app_state.json after the device restarts.

import json
import os
import time

try:
    import asyncio
except ImportError:  # older MicroPython firmware
    import uasyncio as asyncio

VERSION = "1.0.0"
DATA_DIR = "/data"
STATE_FILE = DATA_DIR + "/app_state.json"
HEARTBEAT_SECONDS = 5


def _make_dir(path):
    try:
        os.mkdir(path)
    except OSError:
        pass  # it exists already


def _read_state():
    try:
        with open(STATE_FILE) as f:
            state = json.load(f)
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _write_state(state):
    # Write a temporary file, then rename it over the old one, so a power
    # cut leaves either the old state or the new one, never half a file.
    tmp = STATE_FILE + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f)
    try:
        os.rename(tmp, STATE_FILE)
    except OSError:
        # Some file systems refuse to rename over an existing file.
        try:
            os.remove(STATE_FILE)
        except OSError:
            pass
        os.rename(tmp, STATE_FILE)


def record_start():
    """Count this start and save the app's version; returns the new state."""
    _make_dir(DATA_DIR)
    boots = _read_state().get("boots", 0)
    if not isinstance(boots, int):
        boots = 0
    state = {"version": VERSION, "boots": boots + 1}
    _write_state(state)
    return state


async def main():
    state = record_start()
    print("[app] version", VERSION, "start", state["boots"])
    started = time.ticks_ms()
    beats = 0
    while True:
        await asyncio.sleep(HEARTBEAT_SECONDS)
        beats += 1
        uptime = time.ticks_diff(time.ticks_ms(), started) // 1000
        print("[app] heartbeat", beats, "version", VERSION, "up", uptime, "s")
