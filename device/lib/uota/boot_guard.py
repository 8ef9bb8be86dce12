# The boot guard: boot() runs first thing in boot.py, before the rest of the
# runtime is even imported, so a runtime that fails to import still counts.
# It finishes what a power cut interrupted (recovery.py), counts the boot,
# and gives a pending release one of its boot attempts, or restores the
# previous release when they are used up (lifecycle.py). mark_good() runs
# once the OTA server is listening. The state itself is boot_state.py's.
import os

from uota import boot_state, fs
from uota.layout import CONFIG, FSCK, SERIAL_SESSION

recovered = False  # boot() finished what a power cut interrupted


def _boot_attempts():
    try:
        n = int(fs.read_json(CONFIG).get("bootAttempts", 2))
        return n if n > 0 else 1
    except Exception:
        return 2


def boot():
    """Recover, then count this boot (as unconfirmed until mark_good())."""
    global recovered
    try:
        os.remove(FSCK)  # see boot.py: littlefs finishes a cut rename
    except OSError:
        pass
    try:
        from uota import recovery

        recovery.recover()
        recovered = True
    except Exception as e:
        print("[uota] E recovery:", repr(e))
    st = boot_state.load()
    if serial_session():
        # A maintenance boot for a serial OTA session: the app does not run,
        # so it is not one of a pending release's attempts, and the boot the
        # host interrupted to get here gets its attempt back (the board
        # resets into a normal, counted boot after the session).
        if st["state"] == "pending" and st["attempts"] > 0 and st["fail"] is None:
            st["attempts"] -= 1
            boot_state.save(st)
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
            st = boot_state.load()
        else:
            st["attempts"] += 1
            st["fail"] = None
    st["crashes"] += 1
    st["clean"] = False
    st["boots"] += 1
    boot_state.save(st)
    if st["crashes"] > 3:
        print("[uota] W %d boots in a row without a healthy start" % st["crashes"])
    return st


def serial_session():
    """Is this boot armed for a serial OTA session?"""
    try:
        os.stat(SERIAL_SESSION)
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
    st = boot_state.load()
    st["crashes"] = 0
    st["clean"] = True
    boot_state.save(st)
    if st["state"] != "pending":
        try:
            from uota import hal

            hal.mark_firmware_valid()
        except ImportError:
            pass
    return st
