# The release-number floor, /ota_floor.json: the highest release number this
# device has accepted ({"release": n}). Signed releases below it are refused
# unless they are signed as rollbacks (trust.py); `floor` sets it (server.py).
import json

from uota import fs
from uota.layout import FLOOR

MAX_RELEASE = 1 << 53  # larger release numbers are refused (JSON readers lose them)


def highest():
    """The floor (0: none). A floor above MAX_RELEASE (written by an older
    runtime) reads as MAX_RELEASE."""
    text = fs.read_atomic(FLOOR)
    try:
        n = json.loads(text).get("release") if text else 0
    except (ValueError, AttributeError):
        n = 0
    if isinstance(n, float) and n > 0:
        return MAX_RELEASE
    if not isinstance(n, int) or n <= 0:
        return 0
    return n if n < MAX_RELEASE else MAX_RELEASE


def set_to(n):
    """Write n as the floor, lower or higher (atomically)."""
    fs.atomic_write(FLOOR, json.dumps({"release": n}).encode())


def raise_to(n):
    """Write n as the floor when it is higher (the floor only ever rises
    by a commit)."""
    if n > highest():
        set_to(n)
