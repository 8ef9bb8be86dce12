# Device path rules (docs/protocol.md section 5) and the protected set.
#
# A device path is relative, "/"-separated, without NUL or other control
# characters, with no empty, "." or ".." component, at most 255 bytes.
#
# What a release may write or delete is decided in one place,
# ReleaseRules.refusal(): the release receiver (receiver.py) for pushes and
# micro-ota sessions, and the commit's deletions (receiver.py, journal.py)
# all ask it. The names themselves are layout.py's.
from uota import config
from uota.errors import PathError
from uota.layout import CONFIG_NAME, PREV_NAME, SECRETS_NAME, STAGE_NAME, STATE_FILES

# Top-level folders that updates never delete from and wipe keeps.
KEEP_DIRS = ("config", "data", "lib")

# The app area: what a release may write unless config "appPaths" says
# otherwise. An entry ending in "/" is a folder (everything under it), "*.ext"
# a top-level file with that extension, anything else one exact path; all
# matched case-insensitively. (The host mirrors this list in Rust.)
APP_PATHS = ("main.py", "*.py", "*.mpy", "app/", "lib/", "www/", "static/", "config/ota.json")
# Added to the app area by "runtime": true.
RUNTIME_PATHS = ("boot.py", "lib/uota/")

# The top-level modules the runtime imports (boot.py, main.py, lib/uota/**).
# MicroPython looks for most of them on the filesystem before its built-in
# or frozen copy ("" and /lib precede them on sys.path), so a release may not
# put NAME.py, NAME.mpy or a package NAME/ at the top level or directly under
# lib/ (lib/uota/ itself only with "runtime": true). tests/release_paths.rs fails when
# an import under device/ names a module missing here.
RUNTIME_MODULES = (
    "uota", "_asyncio", "_thread", "asyncio", "binascii", "deflate", "errno",
    "esp32", "gc", "hashlib", "io", "json", "machine", "micropython",
    "network", "os", "random", "re", "select", "socket", "struct", "sys",
    "termios", "time", "vfs", "zlib", "builtins",
)


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
    """True if a push, rm or update may not write or delete path, nor
    anything under it: path or one of its ancestors is the secrets file (or
    a sibling of it), a state file, data/, the staging area, the previous
    release, boot.py or (unless runtime) lib/uota/. Case-insensitive, as FAT
    is: DATA/x is data/x there.

    runtime: the push was begun with "runtime": true, which opens boot.py and
    lib/uota/ (never data/, staging, state files or the secrets file, and
    never a path under boot.py, which would replace the file by a folder).
    """
    low = path.lower()
    top = _top(low)
    if top == "data" or top == STAGE_NAME or top.startswith(PREV_NAME):
        return True
    # The first component is every path's top ancestor: ota_floor.json/x
    # would put a folder where the state file is.
    if is_state(top) or low.startswith(SECRETS_NAME):
        return True
    if top == "boot.py":
        return low != "boot.py" or not runtime
    if not runtime and (low == "lib/uota" or low.startswith("lib/uota/")):
        return True
    return False


def stage_reserved(path):
    """Names the staging area keeps for itself (the commit marker and the
    manifests): a pushed path may not start with them."""
    top = _top(path).lower()  # FAT folds case: ".READY" is ".ready" there
    return top.startswith(".ready") or top.startswith(".uota")


def shadows(path, runtime=False):
    """True if path would be found by an import of a module the runtime
    uses before the module itself: NAME.py, NAME.mpy or NAME/… at the top
    level or directly under lib/, for NAME in RUNTIME_MODULES. The one
    exception is the runtime itself, lib/uota/, with runtime."""
    low = path.lower()
    if runtime and low.startswith("lib/uota/"):
        return False
    parts = low.split("/")
    if parts[0] == "lib" and len(parts) > 1:
        parts = parts[1:]
    name = parts[0]
    if len(parts) == 1:
        if name.endswith(".py"):
            name = name[:-3]
        elif name.endswith(".mpy"):
            name = name[:-4]
        else:
            return False
    return name in RUNTIME_MODULES


def app_entries(entries):
    """The app area as given by config "appPaths" (a list of strings), or
    APP_PATHS when it is missing or malformed; lowercased."""
    if not isinstance(entries, list) or not entries:
        entries = APP_PATHS
    out = []
    for e in entries:
        if not isinstance(e, str) or not e or len(e) > 255:
            return app_entries(None)
        out.append(e.lstrip("/").lower())
    return tuple(out)


def _in_area(low, entries):
    for e in entries:
        if e.endswith("/"):
            if low.startswith(e):
                return True
        elif e.startswith("*.") and "/" not in e:
            if "/" not in low and low.endswith(e[1:]):
                return True
        elif low == e:
            return True
    return False


class ReleaseRules:
    """What one release may write and delete: every place a release writes
    (begin's manifest lines, file, micro-ota sessions) or deletes (a full
    commit) asks refusal() or may_write().

    A path is refused ("protected") when any ancestor of it is protected (see
    protected()), when it would replace a folder that is never replaced
    (keep_folder()), when it is a name the staging area keeps, when it would
    shadow a module the runtime imports (shadows()), or when it lies outside
    the app area (config "appPaths", APP_PATHS by default; with runtime also
    boot.py and lib/uota/). All case-insensitive."""

    def __init__(self, runtime=False, app_paths=None):
        self.runtime = runtime is True
        if app_paths is None:
            app_paths = config.app_paths()
        self.area = app_entries(app_paths)

    def refusal(self, path):
        """None when the release may write path (checked with check()),
        else why not (for the log)."""
        low = path.lower()
        if protected(low, self.runtime):
            return "protected"
        if keep_folder(low) or stage_reserved(low):
            return "reserved"
        if shadows(low, self.runtime):
            return "shadows a runtime module"
        if _in_area(low, self.area):
            return None
        if self.runtime and _in_area(low, RUNTIME_PATHS):
            return None
        return "outside the app area"

    def may_write(self, path):
        return self.refusal(path) is None

    def may_delete(self, path):
        """May a full push delete this file of the previous release when the
        new release does not have it? What it may write, but never under
        config/."""
        return self.may_write(path) and _top(path).lower() != "config"

    def check(self, path):
        """The checked path, or PathError: bad_path, or protected (whose
        message is the path) for one this release may not write."""
        path = check(path)
        if not self.may_write(path):
            raise PathError("protected", path)
        return path


def release_may_write(path, runtime=False, app_paths=None):
    """The one question (see ReleaseRules): may a release write path?"""
    return ReleaseRules(runtime, app_paths).may_write(path)


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
    return top == "data" or top == STAGE_NAME or top.startswith(PREV_NAME)


def is_secret(path):
    """Files whose content must never leave the device: the secrets file and
    every sibling whose name starts with its name (the temporary file of an
    atomic write: config/.ota.secrets.json.tmp), and config/ota.json and its
    siblings while it (or that sibling) still carries otaPassword or
    signingKey (a migrated micro-ota device); likewise their copies in the
    staging and previous-release areas. Case-insensitive (FAT)."""
    low = path.lower()
    for area in (STAGE_NAME, PREV_NAME):
        if low.startswith(area + "/"):
            low = low[len(area) + 1 :]
            break
    if low.startswith(SECRETS_NAME):
        return True
    if low.startswith(CONFIG_NAME):
        return config.config_has_secrets("/" + path) or config.config_has_secrets()
    return False
