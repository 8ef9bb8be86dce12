# A push's staging (imported on the first push): the Push session object.
import json
import os

from uota import fs, paths, hal, release
from uota import manifest as mf
from uota.release import (
    MANIFEST_IN, MARKER, NEXT_MANIFEST, PREV_MANIFEST, PREV_VERSION, ROLLBACK,
    SESSION, STAGE, STAGED_MANIFEST, PushError, kept_session, part_path,
    stage_path,
)


class Push:
    """One staged release. Entries are added in manifest order; files are
    staged one at a time; commit() installs it all or nothing.

    resumable (uota's begin): the manifest is received into
    .uota_manifest.in; settle() then resumes the session kept on flash when
    this begin is identical to it, or starts a new one."""

    def __init__(self, owner, version, mode, runtime=False, resumable=False, app_paths=None):
        self.owner = owner
        self.version = version
        self.mode = mode
        self.runtime = runtime
        # What this release may write and delete (docs/protocol.md section 5).
        self.rules = paths.ReleaseRules(runtime, app_paths)
        self.resumable = resumable
        self.resumed = False
        self.release = 0  # release number (trust.py); 0 = none
        self.rollback = False
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
        if fs.exists(MARKER):
            release.committed = True
            release.roll_forward()
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
        """Validate a path for this push; returns it, or raises PushError
        (bad_path, or protected for a path this release may not write)."""
        try:
            return self.rules.check(path)
        except paths.PathError as e:
            raise PushError(e.code, e.msg)

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
                        if self.mode == "full" and self.rules.may_delete(old[2]):
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
            prev = st["previous"] or release._version_of(fs.read_atomic(PREV_VERSION))
            prev_runtime = st["runtime"] or self.runtime
        else:
            release.drop_prev()  # nothing in it is needed any more
            prev = release.read_version()
            prev_runtime = self.runtime
        meta = {
            "version": self.version,
            "mode": self.mode,
            "runtime": self.runtime,
            # Its config/ota.json's guarded keys take effect (config.py).
            "settings": self.runtime and mf.find(STAGED_MANIFEST, paths.CONFIG) is not None,
            "keep": keep,
            "prev": prev,
            "prev_runtime": prev_runtime,
        }
        tmp = MARKER + ".tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(meta))
        if self.release and not self.rollback:
            from uota import trust

            # Only once the commit cannot be refused any more, just before
            # the commit point: a cut in between leaves the old release with
            # the floor raised, and the same release number is accepted again.
            trust.raise_floor(self.release)
        release.committed = True
        os.rename(tmp, MARKER)  # the commit point
        release.roll_forward()

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


