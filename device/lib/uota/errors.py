# The errors a request ends with, and the checks of the values requests
# carry. Imports nothing of the runtime.

_HEX = "0123456789abcdef"


class PushError(Exception):
    """A request failed: code is the protocol's error code, msg the detail."""

    def __init__(self, code, msg=""):
        super().__init__(msg)
        self.code = code
        self.msg = msg


class PathError(PushError):
    """A device path is refused (bad_path, protected); paths.py raises it."""


def os_error(e):
    """The PushError for a failed filesystem operation."""
    if isinstance(e, OSError) and e.args and e.args[0] == 28:  # ENOSPC
        return PushError("no_space", "flash is full")
    return PushError("io", "%s" % (e,))


def push_error(e):
    """The PushError for a request's failure: e itself, or an OSError mapped."""
    return e if isinstance(e, PushError) else os_error(e)


def is_hex(s, n=None):
    """True for a string of lowercase hex digits (exactly n of them, if given)."""
    if not isinstance(s, str) or (n is not None and len(s) != n):
        return False
    for c in s:
        if c not in _HEX:
            return False
    return True


def hex64(s):
    """s lowercased when it is 64 hex digits (a sha256 or an HMAC), else None."""
    if not isinstance(s, str) or len(s) != 64:
        return None
    s = s.lower()
    return s if is_hex(s) else None


def non_negative_int(v):
    """A non-negative int from JSON, or None."""
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        return None
    return v
