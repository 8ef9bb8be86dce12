# The boot and release state, /ota_boot_state.json, and its transitions.
#
# Written through a temporary file and a rename (about twice per boot, once
# per commit, confirmation, failure and rollback; never per file):
#   {"crashes": <boots in a row that never got the server up>,
#    "clean": <the last boot got the server up>, "boots": <boots so far>,
#    "state": "confirmed" | "pending",     the active release
#    "attempts": <boots the pending release has used>,
#    "previous": <version kept as the previous release, or null>,
#    "runtime": <a commit since the previous release replaced runtime files>,
#    "fail": <why the current boot of a pending release failed, or null>,
#    "last_rollback": {"from", "to", "reason"} | null}
# ("crashes" and "clean" keep micro-ota's meaning.)
#
# The release transitions: pending() (a commit's roll-forward), confirmed()
# (confirm, wipe), failed() (an app failure of a pending release),
# rolled_back() (a rollback's last step). boot_guard.py counts boots.
import json

from uota import fs
from uota.layout import BOOT_STATE

_state = None  # as last read or written by this boot
# A commit happened during this boot: the release running now is not the
# active one any more, so nothing may confirm it or count its failures.
committed = False
# Set by the runtime once this boot's OTA server is up, unless only the app
# may confirm a release (config confirmAfter 0): see running_healthy().
serving = False


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
    for p in (BOOT_STATE, BOOT_STATE + ".tmp"):  # .tmp: FAT's rename window
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
    fs.atomic_write(BOOT_STATE, json.dumps(st).encode())
    _state = st


def current():
    """The state as last read or written by this boot (no flash access)."""
    return _state if _state is not None else load()


def is_pending():
    """Is the release running now pending (and still the active one)?"""
    return not committed and current()["state"] == "pending"


def running_healthy():
    """Is the release running now pending, still the active one, and healthy
    so far in this boot: booted, marked good with the server up (serving),
    no failure recorded? A commit on top of it confirms it first
    (lifecycle.confirm_before_commit)."""
    if committed or not serving:
        return False
    st = current()
    return st["state"] == "pending" and st["fail"] is None


# --- release transitions ------------------------------------------------------


def pending(previous, runtime):
    """A commit installed a new release: it is pending, with no attempts used;
    previous is the version of the release kept for a rollback, runtime
    whether commits since it replaced runtime files."""
    st = load()
    st["state"] = "pending"
    st["attempts"] = 0
    st["previous"] = previous
    st["runtime"] = runtime
    st["fail"] = None
    save(st)


def confirmed(last_rollback=False):
    """The active release is confirmed (nothing to roll back to any more).
    With last_rollback (a dict or None), records the rollback that made it
    active."""
    st = load()
    st["state"] = "confirmed"
    st["attempts"] = 0
    st["previous"] = None
    st["runtime"] = False
    st["fail"] = None
    if last_rollback is not False:
        st["last_rollback"] = last_rollback
    save(st)


def rolled_back(frm, to, reason):
    """A rollback from version frm to version to (None: nothing was kept)
    finished; the restored release is confirmed."""
    confirmed({"from": frm, "to": to, "reason": reason})


def failed(reason):
    """This boot of the pending release failed (the reason a rollback will
    report). False, writing nothing, when no pending release is running."""
    if committed:
        return False
    st = load()
    if st["state"] != "pending":
        return False
    st["fail"] = reason
    save(st)
    return True


# --- for info -------------------------------------------------------------------


def boot_info():
    """info's `boot`."""
    st = current()
    return {"crashes": st["crashes"], "clean": st["clean"], "boots": st["boots"]}


def release_info(version):
    """info's `release`."""
    st = current()
    waiting = st["state"] == "pending"
    return {
        "active": version,
        "previous": st["previous"] if waiting else None,
        "state": st["state"],
        "attempts": st["attempts"] if waiting else 0,
        "last_rollback": st["last_rollback"],
    }
