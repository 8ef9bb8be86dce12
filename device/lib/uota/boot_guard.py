# Boot guard and release state: /ota_boot_state.json.
#
# boot() runs first thing in boot.py, before the rest of the runtime is even
# imported, so a runtime that fails to import still counts. It finishes what
# a power cut interrupted (a commit, a rollback, a confirm), counts the boot,
# and gives a pending release one of its boot attempts, or restores the
# previous release when they are used up. mark_good() runs once the OTA
# server is listening.
#
# The state file is written through a temporary file and a rename (about
# twice per boot, once per confirm and once per failure):
#   {"crashes": <boots in a row that never got the server up>,
#    "clean": <the last boot got the server up>, "boots": <boots so far>,
#    "state": "confirmed" | "pending",     the active release
#    "attempts": <boots the pending release has used>,
#    "previous": <version kept in /ota_prev/, or null>,
#    "runtime": <a pending commit replaced runtime files>,
#    "fail": <why the current boot of a pending release failed, or null>,
#    "last_rollback": {"from", "to", "reason"} | null}
# ("crashes" and "clean" keep micro-ota's meaning.)
import json
import os

STATE_PATH = "/ota_boot_state.json"

_state = None
recovered = False  # boot() finished what a power cut interrupted


def _fresh():
    return {
        "crashes": 0,
        "clean": False,
        "boots": 0,
        "state": "confirmed",
        "attempts": 0,
        "previous": None,
        "runtime": False,
        "fail": None,
        "last_rollback": None,
    }


def load():
    """The state on flash (defaults for a missing or damaged file)."""
    st = _fresh()
    raw = None
    for p in (STATE_PATH, STATE_PATH + ".tmp"):  # .tmp: FAT's rename window
        try:
            with open(p) as f:
                raw = json.load(f)
            break
        except (OSError, ValueError):
            pass
    if isinstance(raw, dict):
        try:
            st["crashes"] = int(raw.get("crashes", 0))
            st["clean"] = raw.get("clean") is True
            st["boots"] = int(raw.get("boots", 0))
            st["state"] = "pending" if raw.get("state") == "pending" else "confirmed"
            st["attempts"] = int(raw.get("attempts", 0))
            prev = raw.get("previous")
            st["previous"] = prev if isinstance(prev, str) else None
            st["runtime"] = raw.get("runtime") is True
            fail = raw.get("fail")
            st["fail"] = fail if isinstance(fail, str) else None
            lr = raw.get("last_rollback")
            st["last_rollback"] = lr if isinstance(lr, dict) else None
        except (TypeError, ValueError):
            pass
    return st


def save(st):
    global _state
    tmp = STATE_PATH + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(st))
    try:
        os.rename(tmp, STATE_PATH)
    except OSError:  # FAT will not rename over an existing file
        try:
            os.remove(STATE_PATH)
        except OSError:
            pass
        os.rename(tmp, STATE_PATH)
    _state = st


def update(**changes):
    """Read, change and write the state in one go; returns it."""
    st = load()
    for k in changes:
        st[k] = changes[k]
    save(st)
    return st


def _boot_attempts():
    try:
        from uota import config

        n = int(config.read_json(config.CONFIG_PATH).get("bootAttempts", 2))
        return n if n > 0 else 1
    except Exception:
        return 2


def boot():
    """Recover, then count this boot (as unconfirmed until mark_good())."""
    global recovered
    try:
        os.remove("/.uota_fsck")  # see boot.py: littlefs finishes a cut rename
    except OSError:
        pass
    try:
        from uota import release

        release.recover()
        recovered = True
    except Exception as e:
        print("[uota] E recovery:", repr(e))
    st = load()
    if serial_session():
        # A maintenance boot for a serial OTA session: the app does not run,
        # so it is not one of a pending release's attempts, and the boot the
        # host interrupted to get here gets its attempt back (the board
        # resets into a normal, counted boot after the session).
        if st["state"] == "pending" and st["attempts"] > 0 and st["fail"] is None:
            st["attempts"] -= 1
            save(st)
        return st
    if st["state"] == "pending" and recovered:
        limit = _boot_attempts()
        if st["attempts"] >= limit:
            reason = st["fail"]
            if reason is None:
                if _hw_watchdog():
                    reason = "watchdog"
                else:
                    reason = "reset" if st["clean"] else "boot_failed"
            try:
                from uota import lifecycle

                if lifecycle.rollback(reason):
                    # The runtime itself was restored: start it afresh.
                    from uota import hal

                    hal.reset()
            except Exception as e:
                print("[uota] E rollback:", repr(e))
            st = load()
        else:
            st["attempts"] += 1
            st["fail"] = None
    st["crashes"] += 1
    st["clean"] = False
    st["boots"] += 1
    save(st)
    if st["crashes"] > 3:
        print("[uota] W %d boots in a row without a healthy start" % st["crashes"])
    return st


def serial_session():
    try:
        os.stat("/ota_serial_session")  # paths.SERIAL_SESSION
        return True
    except OSError:
        return False


def _hw_watchdog():
    try:
        from uota import hal

        return hal.reset_cause() == "watchdog"
    except Exception:
        return False


def mark_good():
    """The OTA server is up: reset the crash counter. Cancels an ESP-IDF app
    rollback unless a uota release is pending (then confirm() does)."""
    st = load()
    st["crashes"] = 0
    st["clean"] = True
    save(st)
    if st["state"] != "pending":
        try:
            from uota import hal

            hal.mark_firmware_valid()
        except ImportError:
            pass
    return st


def current():
    """The state as last read or written by this boot (no flash access)."""
    return _state if _state is not None else load()


def state():
    """The state as of this boot (for info's `boot`)."""
    st = _state if _state is not None else load()
    return {"crashes": st["crashes"], "clean": st["clean"], "boots": st["boots"]}


def release_info(version):
    """info's `release`."""
    st = _state if _state is not None else load()
    pending = st["state"] == "pending"
    return {
        "active": version,
        "previous": st["previous"] if pending else None,
        "state": st["state"],
        "attempts": st["attempts"] if pending else 0,
        "last_rollback": st["last_rollback"],
    }
