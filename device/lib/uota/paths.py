# Device path rules (docs/protocol.md section 5) and the protected set.
#
# A device path is relative, "/"-separated, without NUL or other control
# characters, with no empty, "." or ".." component, at most 255 bytes.

STAGE = "ota_stage"
PREV = "ota_prev"  # the previous release, kept until the new one is confirmed
SECRETS = "config/.ota.secrets.json"
CONFIG = "config/ota.json"
MANIFEST = "ota_manifest.txt"
VERSION = "ota_version.json"
BOOT_STATE = "ota_boot_state.json"
FLOOR = "ota_floor.json"  # the highest release number accepted (trust.py)
SERIAL_SESSION = "ota_serial_session"  # the next boot is a serial session
STATE_FILES = (MANIFEST, VERSION, BOOT_STATE, FLOOR, SERIAL_SESSION)

# Top-level folders that updates never delete from and wipe keeps.
KEEP_DIRS = ("config", "data", "lib")


class PathError(Exception):
    def __init__(self, code, msg):
        super().__init__(msg)
        self.code = code
        self.msg = msg


def check(path, allow_root=False):
    """Validate a device path and return it relative ("" is the root).

    allow_root: a leading "/" is accepted and means the device root (ls, get,
    rm); pushes pass False and must send relative paths. A bad path raises
    PathError("bad_path") whose message is the path as given.
    """
    if not isinstance(path, str):
        raise PathError("bad_path", "%s" % (path,))
    given = path
    if allow_root:
        if path == "/" or path == "":
            return ""
        if path[0] == "/":
            path = path[1:]
    if not path or len(path.encode()) > 255:
        raise PathError("bad_path", given)
    for c in path:
        if ord(c) < 32 or c == "\x7f" or c == "\\":
            raise PathError("bad_path", given)
        if c == ":" and not allow_root:
            # ':' would make the signing payload's order ambiguous (and FAT refuses it).
            raise PathError("bad_path", given)
    for part in path.split("/"):
        if part == "" or part == "." or part == "..":
            raise PathError("bad_path", given)
    return path


def _top(path):
    return path.split("/", 1)[0]


def is_state(path):
    """The runtime's state files and their temporary siblings."""
    if "/" in path:
        return False
    for name in STATE_FILES:
        if path == name or path.startswith(name + "."):
            return True
    return False


def is_runtime(path):
    return path == "boot.py" or path == "lib/uota" or path.startswith("lib/uota/")


def protected(path, runtime=False):
    """True if a push, rm or update may not write or delete path.

    runtime: the push was begun with "runtime": true, which opens boot.py and
    lib/uota/ (never data/, staging, state files or the secrets file).
    """
    path = path.lower()  # FAT is case-insensitive: DATA/x is data/x there
    top = _top(path)
    if top == "data" or top == STAGE or top.startswith(PREV):
        return True
    if is_state(path) or path == SECRETS:
        return True
    if not runtime and is_runtime(path):
        return True
    return False


def stage_reserved(path):
    """Names the staging area keeps for itself (the commit marker and the
    manifests): a pushed path may not start with them."""
    top = _top(path).lower()  # FAT folds case: ".READY" is ".ready" there
    return top.startswith(".ready") or top.startswith(".uota")


def deletable(path, runtime=False):
    """May a full push delete this file of the previous release when the new
    release does not have it? Never config/, data/, state or secret files, and
    the runtime only when the push carries the runtime."""
    if protected(path, runtime):
        return False
    return _top(path).lower() != "config"


def holds_protected(path):
    """True for the root and the folders that contain protected paths: they
    may not be removed as a whole."""
    return path.lower() in ("", "lib", "config") or protected(path)


def keep_folder(path):
    """Folders that are never removed, replaced or set aside as a whole (a
    pushed file may not stand in their place): the root, lib, lib/uota,
    config, data and the runtime's own areas."""
    low = path.lower()
    if low in ("", "lib", "lib/uota", "config"):
        return True
    top = _top(low)
    return top == "data" or top == STAGE or top.startswith(PREV)


def is_secret(path):
    """Files whose content must never leave the device. config/ota.json counts
    while it still carries otaPassword or signingKey (a migrated micro-ota
    device), and so do its copies in the staging and previous-release areas."""
    low = path.lower()
    for area in (STAGE, PREV):
        if low.startswith(area + "/"):
            low = low[len(area) + 1 :]
            break
    if low == SECRETS:
        return True
    if low == CONFIG:
        from uota import config

        return config.config_has_secrets("/" + path)
    return False
