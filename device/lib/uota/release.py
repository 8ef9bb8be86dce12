# Releases on flash: the staging area, the previous release, the push
# session, boot-time recovery (docs/protocol.md sections 4 and 7;
# docs/device-runtime.md explains the journal and why it is power-safe).
# This part is always loaded; journal.py (commit roll-forward, wipe) and
# stage.py (a push's staging) are imported when they are needed.
#
# Staging area /ota_stage/:
#   <path>              a staged file; it exists only once it has verified
#   .uota_part.<sha>    the file being received (one at a time); renamed to
#                       <path> when its size and sha256 verify
#   .uota_manifest      the pushed manifest, sorted, as received
#   .uota_manifest.in   the manifest of a begin still being received
#   .uota_session       the identity of a resumable session (JSON: version,
#                       mode, runtime, count, manifest = sha256 of its lines)
#   .uota_next          the active manifest the release will install
#   .ready              the commit marker (JSON); it appears by a rename,
#                       the single commit point
#
# The previous release (see lifecycle.py), every top-level name that starts
# with "ota_prev":
#   /ota_prev/<path>    files (and folders) in folders that later commits
#                       replaced or removed (moved here, never copied)
#   /ota_prev.<name>    the same for top-level files and folders
#   /ota_prev_manifest  the previous release's manifest
#   /ota_prev_version   the previous release's /ota_version.json
#
import json
import os

from uota import fs, log, paths, hal

STAGE = "/ota_stage"
MARKER = STAGE + "/.ready"
STAGED_MANIFEST = STAGE + "/.uota_manifest"
MANIFEST_IN = STAGE + "/.uota_manifest.in"
NEXT_MANIFEST = STAGE + "/.uota_next"
SESSION = STAGE + "/.uota_session"
PART = STAGE + "/.uota_part."
VERSION_PATH = "/ota_version.json"

# Top-level files are kept as /ota_prev.<name>, so that they leave the root
# by a rename inside the root folder. (littlefs: a power cut inside a rename
# across folders leaves the source folder reading wrong — the entry after the
# moved one is missing too — until the next write; boot.py writes first
# thing, but boot.py itself must never go missing from the root.)
PREV = "/ota_prev"
PREV_TOP = "/ota_prev."
PREV_MANIFEST = "/ota_prev_manifest"
PREV_VERSION = "/ota_prev_version"
ROLLBACK = "/ota_prev_rollback"

FLUSH_EVERY = 65536  # bytes of a received file between flushes

# The push session in progress: one at a time, owned by one connection.
session = None
# A commit happened during this boot: the release running now is not the
# pending one, so nothing may confirm it or count its failures.
committed = False


class PushError(Exception):
    def __init__(self, code, msg=""):
        super().__init__(msg)
        self.code = code
        self.msg = msg


def os_error(e):
    """Map an OSError to a protocol error code."""
    if isinstance(e, OSError) and e.args and e.args[0] == 28:  # ENOSPC
        return PushError("no_space", "flash is full")
    return PushError("io", "%s" % (e,))


def stage_path(path):
    return STAGE + "/" + path


def prev_path(path):
    """Where the previous release keeps its copy of path."""
    return PREV + "/" + path if "/" in path else PREV_TOP + path


def _is_prev(name):
    return name.startswith("ota_prev")


def has_prev():
    return bool(fs.names("/", lambda n: not _is_prev(n), 1))


def drop_prev():
    """Delete the previous release (every top-level ota_prev* entry)."""
    while True:
        batch = fs.names("/", lambda n: not _is_prev(n))
        if not batch:
            return
        for name in batch:
            fs.rmtree("/" + name, hal.feed)


def part_path(sha):
    return PART + sha


def _version_of(text):
    try:
        v = json.loads(text)
        return v.get("version", "unknown") if isinstance(v, dict) else "unknown"
    except (TypeError, ValueError):
        return "unknown"


def read_version():
    return _version_of(fs.read_atomic(VERSION_PATH))


def version_json():
    text = fs.read_atomic(VERSION_PATH)
    try:
        text = text.strip()
        json.loads(text)
        return text
    except (AttributeError, ValueError):
        return '{"version": "unknown"}'


def _read_json(path):
    try:
        with open(path) as f:
            v = json.load(f)
        return v if isinstance(v, dict) else None
    except (OSError, ValueError):
        return None


# --- boot-time recovery -----------------------------------------------------


def roll_forward():
    from uota import journal

    journal.roll_forward()


def recover():
    """Finish what a power cut interrupted: a commit (roll forward), a
    rollback (roll forward), a confirm (drop the previous release); drop an
    unfinished push unless it is resumable; repair FAT's rename window."""
    for name in paths.STATE_FILES:
        p = "/" + name
        tmp = p + ".tmp"
        if fs.exists(tmp):
            if fs.exists(p):
                os.remove(tmp)
            else:
                os.rename(tmp, p)  # FAT: the old file was removed, not replaced
    try:
        _recover_secrets()
    except OSError as e:
        log.error("could not clean the secrets file's siblings", e)
    if fs.exists(MARKER):
        log.info("finishing an interrupted commit")
        roll_forward()
    elif fs.exists(STAGE):
        if kept_session() is None:
            fs.rmtree(STAGE, hal.feed)
        else:
            fs.remove_quiet(MANIFEST_IN)
            fs.remove_quiet(SESSION + ".tmp")
    if fs.exists(ROLLBACK):
        from uota import lifecycle

        log.info("finishing an interrupted rollback")
        lifecycle.rollback_forward()
    elif has_prev():
        from uota import boot_guard

        if boot_guard.load()["state"] != "pending":
            drop_prev()  # a confirmation that was cut short


def _recover_secrets():
    """Siblings of the secrets file (every name in /config that starts with
    its name, in any case): the temporary file of an interrupted passwd or
    rekey becomes the secrets file when that is missing (FAT's rename
    window) and the sibling is whole; anything else is removed."""
    d, base = "/" + paths.SECRETS.rsplit("/", 1)[0], paths.SECRETS.rsplit("/", 1)[1]
    main = d + "/" + base
    while True:
        batch = fs.names(d, lambda n: n == base or not n.lower().startswith(base))
        if not batch:
            return
        for name in batch:
            p = d + "/" + name
            if name == base + ".tmp" and not fs.exists(main) and fs.stat_size(p) is not None:
                try:
                    with open(p) as f:
                        whole = isinstance(json.load(f), dict)
                except (OSError, ValueError):
                    whole = False
                if whole:
                    os.rename(p, main)
                    continue
            fs.rmtree(p, hal.feed)


def kept_session():
    """The identity of the resumable session on flash, or None."""
    ident = _read_json(SESSION)
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


def start(owner, version, mode, runtime=False, resumable=False, app_paths=None):
    """Open a push session for owner (any object), replacing owner's own
    earlier one. Raises PushError(busy) if another owner holds one.
    app_paths: config "appPaths" in force (None: read it from the config)."""
    global session
    if session is not None:
        if session.owner is not owner:
            raise PushError("busy", "another push is in progress")
        detach(owner)
    from uota.stage import Push

    p = Push(owner, version, mode, runtime, resumable, app_paths)
    try:
        p.open()
    except OSError as e:
        p.close()
        discard()
        raise os_error(e)
    session = p
    return p


def detach(owner):
    """owner's connection is gone: a resumable session stays on flash (the
    next identical begin resumes it); any other is dropped."""
    global session
    s = session
    if s is None or s.owner is not owner:
        return
    session = None
    s.close()
    try:
        if s.resumable and s.ready:
            return
        if s.resumable and kept_session() is not None:
            fs.remove_quiet(MANIFEST_IN)  # keep the earlier session
            return
        discard()
    except OSError as e:
        log.error("could not clean the staging area", e)


def abandon(owner):
    """Drop owner's push session and its staging area (no-op if none)."""
    global session
    if session is not None and session.owner is owner:
        s = session
        session = None
        s.close()
        try:
            discard()
        except OSError as e:
            log.error("could not remove staging", e)


def finish(owner):
    """Forget owner's session after a successful commit."""
    global session
    if session is not None and session.owner is owner:
        session.close()
        session = None




def wipe():
    from uota import journal

    journal.wipe()
