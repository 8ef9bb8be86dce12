# Staging, commit journal and roll-forward (docs/protocol.md section 4).
#
# Staging area /ota_stage/:
#   <path>            a staged file, present only once it has verified
#   .uota_manifest    the pushed manifest, sorted, as received
#   .uota_next        the active manifest the release will install
#   .ready            the commit marker (JSON: version, mode, runtime);
#                     it appears by a rename, the single commit point
#
# Commit, once every manifest file is staged (or already installed with the
# same hash):
#   1. write .uota_next, then .ready.tmp, rename it to .ready   (commit point)
#   2. roll forward: full pushes delete the previous release's files that the
#      new one lacks; staged files are renamed into place; /ota_version.json
#      is written (tmp + rename); .uota_next is renamed to /ota_manifest.txt;
#      .ready is removed; the rest of the staging area is removed.
# Every step of 2 can run again after a power cut: boot finds .ready and runs
# it from the top. A staging area without .ready is simply deleted at boot.
import json
import os

from uota import fs, log, paths
from uota import manifest as mf

STAGE = "/ota_stage"
MARKER = STAGE + "/.ready"
STAGED_MANIFEST = STAGE + "/.uota_manifest"
NEXT_MANIFEST = STAGE + "/.uota_next"
VERSION_PATH = "/ota_version.json"

# The push session in progress: one at a time, owned by one connection.
session = None


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


def read_version():
    try:
        with open(VERSION_PATH) as f:
            v = json.load(f)
        return v.get("version", "unknown") if isinstance(v, dict) else "unknown"
    except (OSError, ValueError):
        return "unknown"


def version_json():
    try:
        with open(VERSION_PATH) as f:
            text = f.read().strip()
        json.loads(text)
        return text
    except (OSError, ValueError):
        return '{"version": "unknown"}'


# --- boot-time recovery -----------------------------------------------------


def recover():
    """Finish a commit that was cut short, or drop an unfinished push."""
    if fs.exists(MARKER):
        log.info("finishing an interrupted commit")
        roll_forward()
    elif fs.exists(STAGE):
        fs.rmtree(STAGE)
    for name in paths.STATE_FILES:
        fs.remove_quiet("/" + name + ".tmp")


def discard():
    """Remove an unmarked staging area (an abandoned or failed push)."""
    if not fs.exists(MARKER):
        fs.rmtree(STAGE)


def roll_forward():
    """Carry out the committed release recorded in the staging area."""
    try:
        with open(MARKER) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        # Cannot happen for a marker written by rename; keep going safely.
        meta = {}
    mode = meta.get("mode", "fast")
    runtime = meta.get("runtime") is True
    if fs.exists(NEXT_MANIFEST):
        if mode == "full":
            _delete_dropped(runtime)
        _move_staged()
        fs.atomic_write(VERSION_PATH, json.dumps({"version": meta.get("version", "unknown")}).encode())
        fs.rename_replace(NEXT_MANIFEST, mf.ACTIVE)
    os.remove(MARKER)
    fs.rmtree(STAGE)


def _delete_dropped(runtime):
    m = mf.Merge(mf.ACTIVE, NEXT_MANIFEST)
    try:
        while True:
            pair = m.next()
            if pair is None:
                break
            old, new = pair
            if new is None and paths.deletable(old[2], runtime):
                if fs.remove_quiet("/" + old[2]):
                    fs.prune_dirs("/" + old[2], paths.KEEP_DIRS)
    finally:
        m.close()


def _move_staged():
    r = mf.Reader(STAGED_MANIFEST)
    made = None
    try:
        while True:
            e = r.next()
            if e is None:
                break
            src = stage_path(e[2])
            dst = "/" + e[2]
            d = fs.parent(dst)
            if d != made:
                fs.makedirs(d)
                made = d
            try:
                os.rename(src, dst)
            except OSError as err:
                if fs.stat_size(src) is None:
                    continue  # already moved, or unchanged and never sent
                if err.args and err.args[0] == 2 or fs.stat_size(dst) is None:
                    raise
                # FAT will not rename over an existing file.
                os.remove(dst)
                os.rename(src, dst)
    finally:
        r.close()


# --- a push session -----------------------------------------------------------


class Push:
    """One staged release. Entries are added in manifest order; files are
    staged one at a time; commit() installs it all or nothing."""

    def __init__(self, owner, version, mode, runtime=False):
        self.owner = owner
        self.version = version
        self.mode = mode
        self.runtime = runtime
        self.count = 0
        self.last_key = None
        self.ready = False  # manifest complete and verified
        self._out = None
        self._reader = None
        self._made = None  # the last staging folder created

    # manifest

    def open(self):
        if fs.exists(MARKER):
            roll_forward()
        fs.rmtree(STAGE)
        os.mkdir(STAGE)
        self._out = open(STAGED_MANIFEST, "w")

    def check_entry_path(self, path):
        """Validate a path for this push; returns it, or raises PushError."""
        try:
            path = paths.check(path)
        except paths.PathError as e:
            raise PushError(e.code, e.msg)
        if paths.protected(path, self.runtime) or paths.stage_reserved(path):
            raise PushError("protected", path)
        return path

    def add(self, sha, size, path):
        """Append one entry; entries must come sorted by path + ":", each once."""
        k = mf.key(path)
        if self.last_key is not None and not (self.last_key < k):
            raise PushError("bad_request", "manifest not sorted or path repeated: %s" % path)
        self.last_key = k
        self._out.write(mf.format_line(sha, size, path))
        self.count += 1

    def close_manifest(self):
        if self._out is not None:
            self._out.close()
            self._out = None

    def space_needed(self):
        """Bytes of the entries that differ from the installed release."""
        need = 0
        m = mf.Merge(mf.ACTIVE, STAGED_MANIFEST)
        try:
            while True:
                pair = m.next()
                if pair is None:
                    break
                old, new = pair
                if new is not None and (old is None or old[0] != new[0] or old[1] != new[1]):
                    need += new[1]
        finally:
            m.close()
        return need

    # files

    def find(self, sha, size, path):
        """Is this exact entry in the staged manifest? Scans on from where the
        last lookup ended, so files sent in manifest order cost one pass."""
        want = mf.format_line(sha, size, path)
        wrapped = False
        while True:
            if self._reader is None:
                self._reader = open(STAGED_MANIFEST, "r")
            line = self._reader.readline()
            if not line:
                self._reader.close()
                self._reader = None
                if wrapped:
                    return False
                wrapped = True
                continue
            if line == want:
                return True

    def file_target(self, path):
        """Open the staging file for path (its folders created)."""
        dst = stage_path(path)
        d = fs.parent(dst)
        if d != self._made:
            fs.makedirs(d)
            self._made = d
        return open(dst, "wb")

    # commit

    def missing(self):
        """The first manifest path neither staged nor installed identically,
        or None when the release is complete."""
        m = mf.Merge(mf.ACTIVE, STAGED_MANIFEST)
        try:
            while True:
                pair = m.next()
                if pair is None:
                    return None
                old, new = pair
                if new is None:
                    continue
                if fs.stat_size(stage_path(new[2])) == new[1]:
                    continue
                if old is not None and old[0] == new[0] and old[1] == new[1]:
                    if fs.stat_size("/" + new[2]) == new[1]:
                        continue
                return new[2]
        finally:
            m.close()

    def _write_next(self):
        """The active manifest after this release: for full, the new entries
        plus the old ones a full push may not delete; for fast, the union."""
        m = mf.Merge(mf.ACTIVE, STAGED_MANIFEST)
        try:
            with open(NEXT_MANIFEST, "w") as out:
                while True:
                    pair = m.next()
                    if pair is None:
                        break
                    old, new = pair
                    e = new
                    if e is None:
                        if self.mode == "full" and paths.deletable(old[2], self.runtime):
                            continue
                        e = old
                    out.write(mf.format_line(e[0], e[1], e[2]))
        finally:
            m.close()

    def commit(self):
        """Install the staged release. Raises PushError(incomplete) before the
        commit point; after it, the release is installed or will be at boot."""
        self.close()
        gone = self.missing()
        if gone is not None:
            raise PushError("incomplete", "not staged: %s" % gone)
        self._write_next()
        meta = json.dumps({"version": self.version, "mode": self.mode, "runtime": self.runtime})
        tmp = MARKER + ".tmp"
        with open(tmp, "w") as f:
            f.write(meta)
        os.rename(tmp, MARKER)  # the commit point
        roll_forward()

    def close(self):
        self.close_manifest()
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def start(owner, version, mode, runtime=False):
    """Open a new push session for owner (any object), replacing owner's own
    earlier session. Raises PushError(busy) if another owner holds one."""
    global session
    if session is not None:
        if session.owner is not owner:
            raise PushError("busy", "another push is in progress")
        abandon(owner)
    p = Push(owner, version, mode, runtime)
    try:
        p.open()
    except OSError as e:
        p.close()
        discard()
        raise os_error(e)
    session = p
    return p


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


# --- wipe -------------------------------------------------------------------


def wipe():
    """Remove the app: every top-level entry except boot.py, lib/uota, config,
    data and the state files; every other entry under lib; and drop removed
    files from the active manifest."""
    for name in [e[0] for e in os.ilistdir("/")]:
        if name in ("boot.py", "config", "data") or paths.is_state(name):
            continue
        if name == paths.STAGE and fs.exists(MARKER):
            continue  # a committed release still being installed
        if name == "lib":
            for sub in [e[0] for e in os.ilistdir("/lib")]:
                if sub != "uota":
                    fs.rmtree("/lib/" + sub)
            continue
        fs.rmtree("/" + name)
    _drop_missing_entries()


def _drop_missing_entries():
    r = mf.Reader(mf.ACTIVE)
    if r.f is None:
        return
    tmp = mf.ACTIVE + ".tmp"
    with open(tmp, "w") as out:
        while True:
            e = r.next()
            if e is None:
                break
            if fs.stat_size("/" + e[2]) is not None:
                out.write(mf.format_line(e[0], e[1], e[2]))
    fs.rename_replace(tmp, mf.ACTIVE)
