# Boot guard: counts boots that have not (yet) been confirmed healthy.
#
# boot() runs first thing in boot.py, before the rest of the runtime is even
# imported, so a runtime that fails to import still counts. mark_good() runs
# once the OTA server is listening. The state lives in /ota_boot_state.json,
# written through a temporary file and a rename:
#   {"crashes": <unconfirmed boots in a row>, "clean": <last boot confirmed>,
#    "boots": <boots since the state was created>}
# ("crashes" and "clean" keep micro-ota's meaning.) This version only tracks
# and reports the state (the `boot` field of `info`); rollback comes later.
import json
import os

STATE_PATH = "/ota_boot_state.json"

_state = None


def _load():
    try:
        with open(STATE_PATH) as f:
            st = json.load(f)
        if isinstance(st, dict):
            return {
                "crashes": int(st.get("crashes", 0)),
                "clean": st.get("clean") is True,
                "boots": int(st.get("boots", 0)),
            }
    except (OSError, ValueError, TypeError):
        pass
    return {"crashes": 0, "clean": False, "boots": 0}


def _save(st):
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


def boot():
    """Count this boot as unconfirmed until mark_good()."""
    global _state
    st = _load()
    st["crashes"] += 1
    st["clean"] = False
    st["boots"] += 1
    _save(st)
    _state = st
    if st["crashes"] > 3:
        print("[uota] W %d boots in a row without a healthy start" % st["crashes"])
    return st


def mark_good():
    """This boot is healthy: reset the counter."""
    global _state
    st = _load()
    st["crashes"] = 0
    st["clean"] = True
    _save(st)
    _state = st
    try:
        from uota import hal

        hal.mark_firmware_valid()
    except ImportError:
        pass
    return st


def state():
    return dict(_state) if _state is not None else _load()
