# Staging, resumable push sessions, the commit journal and its roll-forward
# (docs/protocol.md sections 4 and 7; docs/device-runtime.md explains why
# every step is safe against a power cut).
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
# Roll-forward of a commit (boot runs it again from the top while .ready
# exists; every step can run twice):
#   1. remove .uota_session
#   2. full pushes: the active release's files the new one lacks are moved
#      to the previous release (or deleted when they are not its own)
#   3. staged files are renamed into place (main.py last), the files they
#      replace first moved to the previous release the same way
#   4. /ota_manifest.txt and /ota_version.json become /ota_prev_manifest and
#      /ota_prev_version (unless an older confirmed release is kept), the new
#      version is written, .uota_next is renamed to /ota_manifest.txt
#   5. the boot state says "pending"; .ready is removed; the rest of the
#      staging area is removed
import json
import os

from uota import fs, log, paths, hal
from uota import manifest as mf

STAGE = "/ota_stage"
MARKER = STAGE + "/.ready"
STAGED_MANIFEST = STAGE + "/.uota_manifest"
MANIFEST_IN = STAGE + "/.uota_manifest.in"
NEXT_MANIFEST = STAGE + "/.uota_next"
SESSION = STAGE + "/.uota_session"
PART = STAGE + "/.uota_part."
VERSION_PATH = "/ota_version.json"

# The previous release: every name at the top of the tree that starts with
# "ota_prev". A file in a folder is kept as /ota_prev/<path>; a top-level
# file or folder as /ota_prev.<name>, so that it leaves the root by a rename
# inside the root folder. (littlefs: a power cut inside a rename across
# folders leaves the source folder reading wrong — the entry after the moved
# one is missing too — until the next write; boot.py writes first thing, but
# boot.py itself must never go missing from the root.)
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


# --- the commit journal ---------------------------------------------------------


def _need_save(path, in_cur, in_prev):
    """Must the live file at path be kept for a rollback? Not when a copy is
    kept already (the live one is then a pending release's), nor when it is
    a pending release's own addition (in its manifest, not in the previous
    release's)."""
    if fs.exists(prev_path(path)):
        return False
    return not (in_cur and not in_prev)


def _set_aside(path, save):
    """Move the live file or folder at path to the previous-release area, or
    delete it when it is not the previous release's."""
    live = "/" + path
    if paths.holds_protected(path):
        raise OSError(1, "refusing to replace " + live)
    if save:
        dst = prev_path(path)
        if "/" in path:
            fs.makedirs(fs.parent(dst))
        os.rename(live, dst)
    else:
        fs.rmtree(live)


def roll_forward():
    """Carry out the committed release recorded in the staging area."""
    meta = _read_json(MARKER) or {}  # always complete: it appeared by a rename
    mode = meta.get("mode", "fast")
    runtime = meta.get("runtime") is True
    keep = meta.get("keep") is True
    fs.remove_quiet(SESSION)
    if fs.exists(NEXT_MANIFEST):
        pman = PREV_MANIFEST if keep else mf.ACTIVE
        if mode == "full":
            _drop_removed(runtime, keep, pman)
        _install_staged(keep, pman)
        if not keep:
            if not fs.exists(PREV_MANIFEST):
                if not fs.move(mf.ACTIVE, PREV_MANIFEST):
                    fs.atomic_write(PREV_MANIFEST, b"")
            if not fs.exists(PREV_VERSION):
                if not fs.move(VERSION_PATH, PREV_VERSION):
                    fs.atomic_write(PREV_VERSION, json.dumps({"version": meta.get("prev", "unknown")}).encode())
        fs.atomic_write(VERSION_PATH, json.dumps({"version": meta.get("version", "unknown")}).encode())
        fs.rename_replace(NEXT_MANIFEST, mf.ACTIVE)
    from uota import boot_guard

    st = boot_guard.load()
    st["state"] = "pending"
    st["attempts"] = 0
    st["previous"] = meta.get("prev")
    st["runtime"] = meta.get("prev_runtime") is True
    st["fail"] = None
    boot_guard.save(st)
    os.remove(MARKER)
    fs.rmtree(STAGE, hal.feed)


def _drop_removed(runtime, keep, pman):
    """full: the active release's files that the new one lacks leave the tree."""
    m = mf.Merge(mf.ACTIVE, NEXT_MANIFEST)
    pc = mf.Cursor(pman) if keep else None
    try:
        while True:
            pair = m.next()
            if pair is None:
                break
            old, new = pair
            if new is not None or not paths.deletable(old[2], runtime):
                continue
            p = old[2]
            live = "/" + p
            if fs.stat_size(live) is None:
                continue  # gone already (this step ran before)
            in_prev = pc.find(p) is not None if keep else True
            _set_aside(p, _need_save(p, True, in_prev))
            fs.prune_dirs(live, paths.KEEP_DIRS)
            hal.feed()
    finally:
        m.close()
        if pc is not None:
            pc.close()


def _clear_way(folder, keep, pman):
    """Make folder (absolute) a folder: a file standing where one of its
    parts must be is set aside like a replaced file."""
    if fs.is_dir(folder):
        return
    cur = ""
    for part in folder.strip("/").split("/"):
        cur += "/" + part
        size = fs.stat_size(cur)
        if size is None:
            if not fs.exists(cur):
                os.mkdir(cur)
            continue
        rel = cur[1:]
        in_cur = mf.find(mf.ACTIVE, rel) is not None
        in_prev = mf.find(pman, rel) is not None if keep else in_cur
        _set_aside(rel, _need_save(rel, in_cur, in_prev))
        os.mkdir(cur)


def _install_staged(keep, pman):
    """Rename the staged files into place (main.py last, so that a board
    never starts a new main.py beside old modules)."""
    r = mf.Reader(STAGED_MANIFEST)
    cc = mf.Cursor(mf.ACTIVE)
    pc = mf.Cursor(pman) if keep else None
    made = None
    last = None
    try:
        while True:
            e = r.next()
            if e is None:
                break
            p = e[2]
            in_cur = cc.find(p) is not None
            in_prev = pc.find(p) is not None if keep else in_cur
            if p == "main.py":
                last = (in_cur, in_prev)
                continue
            if _install(p, in_cur, in_prev, keep, pman, made):
                made = fs.parent("/" + p)
    finally:
        r.close()
        cc.close()
        if pc is not None:
            pc.close()
    if last is not None:
        _install("main.py", last[0], last[1], keep, pman, None)


def _install(p, in_cur, in_prev, keep, pman, made):
    """Move one staged file into place, setting aside the file it replaces.
    False when there is nothing to move (moved already, or never sent)."""
    src = stage_path(p)
    if fs.stat_size(src) is None:
        return False
    dst = "/" + p
    d = fs.parent(dst)
    if d != made:
        _clear_way(d, keep, pman)
    if fs.exists(dst):
        save = _need_save(p, in_cur, in_prev)
        if save or fs.is_dir(dst):
            _set_aside(p, save)
    fs.rename_replace(src, dst)
    hal.feed()
    return True


# --- a push session -----------------------------------------------------------


class Push:
    """One staged release. Entries are added in manifest order; files are
    staged one at a time; commit() installs it all or nothing.

    resumable (uota's begin): the manifest is received into
    .uota_manifest.in; settle() then resumes the session kept on flash when
    this begin is identical to it, or starts a new one."""

    def __init__(self, owner, version, mode, runtime=False, resumable=False):
        self.owner = owner
        self.version = version
        self.mode = mode
        self.runtime = runtime
        self.resumable = resumable
        self.resumed = False
        self.count = 0
        self.last_key = None
        self.ready = False  # manifest complete and verified
        self.part = None  # sha256 of the partly received file in the stage
        self._out = None
        self._reader = None
        self._made = None  # the last staging folder created
        self._msha = None
        self.manifest = MANIFEST_IN if resumable else STAGED_MANIFEST

    # manifest

    def open(self):
        global committed
        if fs.exists(MARKER):
            committed = True
            roll_forward()
        if self.resumable and kept_session() is not None:
            # Kept until the whole manifest shows whether this resumes it.
            fs.remove_quiet(MANIFEST_IN)
        else:
            fs.rmtree(STAGE, hal.feed)
            os.mkdir(STAGE)
        if self.resumable:
            import hashlib

            self._msha = hashlib.sha256()
        self._out = open(self.manifest, "w")

    def check_entry_path(self, path):
        """Validate a path for this push; returns it, or raises PushError."""
        try:
            path = paths.check(path)
        except paths.PathError as e:
            raise PushError(e.code, e.msg)
        if paths.protected(path, self.runtime) or paths.stage_reserved(path) or paths.holds_protected(path):
            raise PushError("protected", path)
        return path

    def add(self, sha, size, path):
        """Append one entry; entries must come sorted by path + ":", each once."""
        k = mf.key(path)
        if self.last_key is not None and not (self.last_key < k):
            raise PushError("bad_request", "manifest not sorted or path repeated: %s" % path)
        self.last_key = k
        line = mf.format_line(sha, size, path)
        self._out.write(line)
        if self._msha is not None:
            self._msha.update(line)
        self.count += 1

    def close_manifest(self):
        if self._out is not None:
            self._out.close()
            self._out = None

    def identity(self):
        import binascii

        return {
            "version": self.version,
            "mode": self.mode,
            "runtime": self.runtime,
            "count": self.count,
            "manifest": binascii.hexlify(self._msha.digest()).decode(),
        }

    def settle(self):
        """The manifest is complete and verified: resume the session kept on
        flash if this begin is identical to it, else make this one the
        stage's session (anything else staged is dropped)."""
        if not self.resumable:
            return
        self.close_manifest()
        ident = self.identity()
        if kept_session() == ident:
            fs.remove_quiet(MANIFEST_IN)
            self.resumed = True
            self.part = _find_part()
        else:
            while True:
                batch = fs.names(STAGE, lambda n: n == ".uota_manifest.in")
                if not batch:
                    break
                for name in batch:
                    fs.rmtree(STAGE + "/" + name, hal.feed)
            os.rename(MANIFEST_IN, STAGED_MANIFEST)
            fs.atomic_write(SESSION, json.dumps(ident).encode())
        self.manifest = STAGED_MANIFEST

    def space_needed(self):
        """Bytes still to be written for the entries that differ from the
        installed release (what is staged already counts as written)."""
        need = 0
        m = mf.Merge(mf.ACTIVE, self.manifest)
        try:
            while True:
                pair = m.next()
                if pair is None:
                    break
                old, new = pair
                if new is not None and (old is None or old[0] != new[0] or old[1] != new[1]):
                    have = fs.stat_size(stage_path(new[2]))
                    if have != new[1]:
                        need += new[1]
        finally:
            m.close()
        if self.part is not None:
            need -= fs.stat_size(part_path(self.part)) or 0
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
        """Open the staging file for path (its folders created); legacy
        sessions write there directly."""
        dst = stage_path(path)
        d = fs.parent(dst)
        if d != self._made:
            fs.makedirs(d)
            self._made = d
        return open(dst, "wb")

    def open_part(self, sha, offset):
        """Open the file being received: afresh at offset 0, or to append to
        the kept part, which must be exactly offset bytes long."""
        if offset == 0:
            if self.part is not None:
                fs.remove_quiet(part_path(self.part))
                self.part = None
            f = open(part_path(sha), "wb")
            self.part = sha
            return f
        if self.part != sha or fs.stat_size(part_path(sha)) != offset:
            have = fs.stat_size(part_path(sha)) if self.part == sha else 0
            raise PushError("bad_request", "offset %d: %d bytes of this file are staged" % (offset, have or 0))
        return open(part_path(sha), "ab")

    def hash_part(self, sha, h, buf):
        """Fold the kept part of a resumed file into h, reading it back from
        flash through buf."""
        with open(part_path(sha), "rb") as f:
            mv = memoryview(buf)
            while True:
                k = f.readinto(buf)
                if not k:
                    break
                h.update(mv[:k])
                hal.feed()

    def finish_part(self, sha, path):
        """The received file verified: it becomes the staged file of path."""
        dst = stage_path(path)
        d = fs.parent(dst)
        if d != self._made:
            fs.makedirs(d)
            self._made = d
        fs.rename_replace(part_path(sha), dst)
        self.part = None

    def drop_part(self):
        if self.part is not None:
            fs.remove_quiet(part_path(self.part))
            self.part = None

    def staged(self):
        """Yields the lines of the `staged` reply: "<bytes> <sha256> <path>\\n"
        for each verified file and for the partly received one."""
        r = mf.Reader(STAGED_MANIFEST)
        part = self.part
        try:
            while True:
                e = r.next()
                if e is None:
                    return
                sha, size, p = e
                n = fs.stat_size(stage_path(p))
                if n is not None:
                    yield "%d %s %s\n" % (n, sha, p)
                elif part is not None and sha == part:
                    part = None
                    yield "%d %s %s\n" % (fs.stat_size(part_path(sha)) or 0, sha, p)
        finally:
            r.close()

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
        from uota import boot_guard

        self.close()
        if fs.exists(ROLLBACK):
            raise PushError("io", "a rollback is unfinished; reset the device")
        gone = self.missing()
        if gone is not None:
            raise PushError("incomplete", "not staged: %s" % gone)
        self.drop_part()
        self._write_next()
        st = boot_guard.load()
        # Committing on top of a pending release keeps the confirmed release
        # before it as the previous one.
        keep = st["state"] == "pending" and fs.exists(PREV_MANIFEST) and fs.exists(PREV_VERSION)
        if keep:
            prev = st["previous"] or _version_of(fs.read_atomic(PREV_VERSION))
            prev_runtime = st["runtime"] or self.runtime
        else:
            drop_prev()  # nothing in it is needed any more
            prev = read_version()
            prev_runtime = self.runtime
        meta = {
            "version": self.version,
            "mode": self.mode,
            "runtime": self.runtime,
            "keep": keep,
            "prev": prev,
            "prev_runtime": prev_runtime,
        }
        tmp = MARKER + ".tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(meta))
        global committed
        committed = True
        os.rename(tmp, MARKER)  # the commit point
        roll_forward()

    def close(self):
        self.close_manifest()
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _find_part():
    """sha256 of the partly received file kept in the stage, or None."""
    found = fs.names(STAGE, lambda n: not n.startswith(".uota_part."), 1)
    if found:
        return found[0][len(".uota_part.") :]
    return None


def start(owner, version, mode, runtime=False, resumable=False):
    """Open a push session for owner (any object), replacing owner's own
    earlier one. Raises PushError(busy) if another owner holds one."""
    global session
    if session is not None:
        if session.owner is not owner:
            raise PushError("busy", "another push is in progress")
        detach(owner)
    p = Push(owner, version, mode, runtime, resumable)
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


# --- wipe -------------------------------------------------------------------


def wipe():
    """Remove the app: every top-level entry except boot.py, lib/uota, config,
    data and the state files; every other entry under lib; and drop removed
    files from the active manifest. The previous release goes too (the
    active release is then confirmed as it is)."""
    from uota import boot_guard

    st = boot_guard.load()
    if st["state"] == "pending" or has_prev():
        if fs.exists(ROLLBACK):
            raise PushError("io", "a rollback is unfinished; reset the device")
        boot_guard.update(state="confirmed", attempts=0, previous=None, runtime=False, fail=None)
    for name in [e[0] for e in os.ilistdir("/")]:
        if name in ("boot.py", "config", "data") or paths.is_state(name):
            continue
        if name == paths.STAGE and fs.exists(MARKER):
            continue  # a committed release still being installed
        if name == "lib":
            for sub in [e[0] for e in os.ilistdir("/lib")]:
                if sub != "uota":
                    fs.rmtree("/lib/" + sub, hal.feed)
            continue
        fs.rmtree("/" + name, hal.feed)
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
