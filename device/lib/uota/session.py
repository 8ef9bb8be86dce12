# The push session: at most one release is being received at a time, owned
# by one connection (any object). The receiver (receiver.py) stages it; this
# module only knows who holds the slot and what a resumable session left on
# flash.
from uota import fs, hal, log
from uota.errors import PushError, os_error
from uota.layout import MANIFEST_IN, MARKER, SESSION, STAGE, STAGED_MANIFEST

active = None  # the Receiver of the push in progress


def held_by(owner):
    """owner's receiver, or None."""
    s = active
    return s if s is not None and s.owner is owner else None


def ensure_free(owner):
    """PushError(busy) when another owner holds the push session."""
    if active is not None and active.owner is not owner:
        raise PushError("busy", "another push is in progress")


def kept():
    """The identity of the resumable session on flash, or None."""
    ident = fs.read_json(SESSION)
    if ident is None or not fs.exists(STAGED_MANIFEST):
        return None
    for k in ("version", "mode", "runtime", "count", "manifest"):
        if k not in ident:
            return None
    return ident


def discard():
    """Remove an unmarked staging area (an abandoned or failed push)."""
    if not fs.exists(MARKER):
        fs.rmtree(STAGE, hal.feed)


def start(receiver):
    """Open receiver's session for its owner, replacing the owner's own
    earlier one. Raises PushError(busy) if another owner holds one."""
    global active
    ensure_free(receiver.owner)
    detach(receiver.owner)
    try:
        receiver.open()
    except OSError as e:
        receiver.close()
        discard()
        raise os_error(e)
    active = receiver
    return receiver


def _vacate(owner):
    """Free owner's slot; returns its receiver (closed), or None."""
    global active
    s = held_by(owner)
    if s is not None:
        active = None
        s.close()
    return s


def detach(owner):
    """owner's connection is gone: a resumable session stays on flash (the
    next identical begin resumes it); any other is dropped."""
    s = _vacate(owner)
    if s is None:
        return
    try:
        if s.resumable and s.ready:
            return
        if s.resumable and kept() is not None:
            fs.remove_quiet(MANIFEST_IN)  # keep the earlier session
            return
        discard()
    except OSError as e:
        log.error("could not clean the staging area", e)


def abandon(owner):
    """Drop owner's push session and its staging area (no-op if none)."""
    if _vacate(owner) is not None:
        try:
            discard()
        except OSError as e:
            log.error("could not remove staging", e)


def finish(owner):
    """Forget owner's session after a successful commit."""
    _vacate(owner)
