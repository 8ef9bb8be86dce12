# The release receiver: stages one release in /ota_stage/ and commits it
# (docs/protocol.md section 4). Every way a release reaches the device (a
# uota push, micro-ota's sessions; HTTP pull and BLE later) only frames
# bytes and hands them here:
#
#   r = Receiver(owner, version, mode, ...)       session.start(r)
#   r.add_line(line) / r.add(sha, size, path)     the manifest, sorted; each
#                                                 entry feeds r.signature too
#   part = r.stage_file(path, size, sha256, offset, enc)
#   part.write(bytes) ...; part.finish()          hashed, size-checked,
#                                                 flushed, inflated here
#   r.commit()                                    all or nothing (journal.py)
#
# Imported on the first push, so a device that is only queried never
# compiles or holds it.
import binascii
import hashlib
import json
import os

from uota import boot_state, floor, fs, hal, paths, release, session
from uota import manifest as mf
from uota.errors import PushError, hex64
from uota.layout import (
    CONFIG_NAME, MANIFEST, MANIFEST_IN, MARKER, NEXT_MANIFEST, PART_PREFIX, PREV_MANIFEST, PREV_VERSION,
    ROLLBACK, SESSION, STAGE, STAGED_MANIFEST, part_path, stage_path,
)

try:
    import deflate
except ImportError:
    deflate = None

FLUSH_EVERY = 65536  # bytes of a received file between flushes (resumable sessions)
SCRATCH_SIZE = 2048  # the buffer for inflating and for re-hashing a kept part


class Receiver:
    """One staged release. Entries are added in manifest order; files are
    staged one at a time; commit() installs it all or nothing.

    resumable (uota's begin): the manifest is received into
    .uota_manifest.in; settle() then resumes the session kept on flash when
    this begin is identical to it, or starts a new one. listed: every file
    must be in the manifest (False for micro-ota's stream_ota, whose
    manifest is built from the files as they arrive)."""

    def __init__(self, owner, version, mode, runtime=False, resumable=False, app_paths=None, listed=True):
        self.owner = owner
        self.version = version
        self.mode = mode
        self.runtime = runtime
        # What this release may write and delete (docs/protocol.md section 5).
        self.rules = paths.ReleaseRules(runtime, app_paths)
        self.resumable = resumable
        self.listed = listed
        self.resumed = False
        self.release = 0  # release number (trust.py); 0 = none
        self.rollback = False
        self.expected = None  # entries the manifest must have (None: any number)
        self.signature = None  # a trust.Signature fed every entry, or None
        self.count = 0
        self.last_key = None
        self.ready = False  # manifest complete and verified
        self.part = None  # sha256 of the partly received file in the stage
        self._out = None
        self._reader = None
        self._made = None  # the last staging folder created
        self._msha = None
        self._scratch = None
        self.manifest = MANIFEST_IN if resumable else STAGED_MANIFEST

    # manifest

    def open(self):
        if fs.exists(MARKER):
            from uota import journal

            boot_state.committed = True
            journal.roll_forward()
        if self.resumable and session.kept() is not None:
            # Kept until the whole manifest shows whether this resumes it.
            fs.remove_quiet(MANIFEST_IN)
        else:
            fs.rmtree(STAGE, hal.feed)
            os.mkdir(STAGE)
        if self.resumable:
            self._msha = hashlib.sha256()
        self._out = open(self.manifest, "w")

    def check_path(self, path):
        """Validate a path for this release; returns it, or raises PathError
        (bad_path, or protected for a path this release may not write)."""
        return self.rules.check(path)

    def add_line(self, line):
        """One manifest line as received (bytes, without its newline):
        parsed, its path checked, then added."""
        if line.endswith(b"\r"):
            line = line[:-1]
        try:
            text = line.decode()
        except UnicodeError:
            raise PushError("bad_path", "manifest path is not UTF-8")
        try:
            sha, size, path = mf.parse_line(text)
        except ValueError as e:
            raise PushError("bad_request", "%s" % (e,))
        self.add(sha, size, self.check_path(path))

    def add(self, sha, size, path):
        """Append one entry; entries must come sorted by path + ":", each once."""
        hal.fault("begin")
        if self.expected is not None and self.count >= self.expected:
            raise PushError("bad_request", "more manifest entries than begin said")
        k = mf.key(path)
        if self.last_key is not None and not (self.last_key < k):
            raise PushError("bad_request", "manifest not sorted or path repeated: %s" % path)
        self.last_key = k
        line = mf.format_line(sha, size, path)
        self._out.write(line)
        if self._msha is not None:
            self._msha.update(line)
        if self.signature is not None:
            self.signature.add(sha, size, path)
        self.count += 1

    def close_manifest(self):
        if self._out is not None:
            self._out.close()
            self._out = None

    def identity(self):
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
        if session.kept() == ident:
            fs.remove_quiet(MANIFEST_IN)
            self.resumed = True
            self.part = _find_part()
        else:
            incoming = MANIFEST_IN[len(STAGE) + 1 :]
            while True:
                batch = fs.names(STAGE, lambda n: n == incoming)
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
        with mf.Merge(MANIFEST, self.manifest) as m:
            for old, new in m:
                if new is not None and (old is None or not mf.same(old, new)):
                    if fs.stat_size(stage_path(new[2])) != new[1]:
                        need += new[1]
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

    def stage_file(self, path, size, sha, offset=0, enc=None):
        """Start staging one file of the release: a Part to write() its bytes
        into and finish(). offset > 0 continues the kept partial file of a
        resumed session (its bytes are hashed again from flash); enc
        "deflate": each write() is one complete zlib stream."""
        path = self.check_path(path)
        if enc is not None and (enc != "deflate" or deflate is None):
            raise PushError("bad_request", "unsupported enc %s" % (enc,))
        if self.listed and not self.find(sha, size, path):
            raise PushError("not_in_manifest", path)
        if hex64(sha) != sha:
            # No file has it (and it names the part file): refused unread.
            raise PushError("sha256_mismatch", path)
        return Part(self, path, size, sha, offset, enc is not None)

    def scratch(self):
        """A buffer of SCRATCH_SIZE bytes, allocated once per session."""
        if self._scratch is None:
            self._scratch = bytearray(SCRATCH_SIZE)
        return self._scratch

    def _open_part(self, sha, offset):
        """Open the file being received: afresh at offset 0, or to append to
        the kept part, which must be exactly offset bytes long."""
        if offset == 0:
            self.drop_part()
            f = open(part_path(sha), "wb")
            self.part = sha
            return f
        if self.part != sha or fs.stat_size(part_path(sha)) != offset:
            have = fs.stat_size(part_path(sha)) if self.part == sha else 0
            raise PushError("bad_request", "offset %d: %d bytes of this file are staged" % (offset, have or 0))
        return open(part_path(sha), "ab")

    def _place_part(self, sha, path):
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
        part = self.part
        with mf.Reader(STAGED_MANIFEST) as r:
            for sha, size, p in r:
                n = fs.stat_size(stage_path(p))
                if n is not None:
                    yield "%d %s %s\n" % (n, sha, p)
                elif part is not None and sha == part:
                    part = None
                    yield "%d %s %s\n" % (fs.stat_size(part_path(sha)) or 0, sha, p)

    # commit

    def missing(self):
        """The first manifest path neither staged nor installed identically,
        or None when the release is complete."""
        with mf.Merge(MANIFEST, STAGED_MANIFEST) as m:
            for old, new in m:
                if new is None:
                    continue
                if fs.stat_size(stage_path(new[2])) == new[1]:
                    continue
                if old is not None and mf.same(old, new) and fs.stat_size("/" + new[2]) == new[1]:
                    continue
                return new[2]
        return None

    def _write_next(self):
        """The active manifest after this release: for full, the new entries
        plus the old ones a full push may not delete; for fast, the union."""
        with mf.Merge(MANIFEST, STAGED_MANIFEST) as m, open(NEXT_MANIFEST, "w") as out:
            for old, new in m:
                e = new
                if e is None:
                    if self.mode == "full" and self.rules.may_delete(old[2]):
                        continue
                    e = old
                out.write(mf.format_line(e[0], e[1], e[2]))

    def commit(self, at_boot=False):
        """Install the staged release. Raises PushError(incomplete) before the
        commit point; after it, the release is installed or will be at boot.
        at_boot: stop at the commit point and leave the rest to the next
        boot's recovery (the device resets now anyway, and a boot has the
        RAM that a push session holds)."""
        self.close()
        if fs.exists(ROLLBACK):
            raise PushError("io", "a rollback is unfinished; reset the device")
        gone = self.missing()
        if gone is not None:
            raise PushError("incomplete", "not staged: %s" % gone)
        self.drop_part()
        self._write_next()
        if boot_state.running_healthy():
            from uota import lifecycle

            lifecycle.confirm_before_commit()
        st = boot_state.load()
        # Committing on top of a pending release keeps the confirmed release
        # before it as the previous one.
        keep = st["state"] == "pending" and fs.exists(PREV_MANIFEST) and fs.exists(PREV_VERSION)
        if keep:
            prev = st["previous"] or release.version_of(fs.read_atomic(PREV_VERSION))
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
            "settings": self.runtime and mf.find(STAGED_MANIFEST, CONFIG_NAME) is not None,
            "keep": keep,
            "prev": prev,
            "prev_runtime": prev_runtime,
        }
        hal.fault("commit")
        tmp = MARKER + ".tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(meta))
        if self.release and not self.rollback:
            # Only once the commit cannot be refused any more, just before
            # the commit point: a cut in between leaves the old release with
            # the floor raised, and the same release number is accepted again.
            floor.raise_to(self.release)
        boot_state.committed = True
        os.rename(tmp, MARKER)  # the commit point
        hal.fault("roll_forward")
        if at_boot:
            return
        from uota import journal

        journal.roll_forward()

    def close(self):
        self.close_manifest()
        if self._reader is not None:
            self._reader.close()
            self._reader = None


class Part:
    """One file being staged, received into .uota_part.<sha256>: write() its
    bytes (with inflate, each write() is one complete zlib stream), then
    finish(), which checks its size and sha256 and moves it to its staged
    path. Bytes beyond its size are refused, never written. In a resumable
    session it is flushed every FLUSH_EVERY bytes, so that after a power cut
    the part on flash holds what came before the last flush, which a resumed
    push continues from. OSError passes through (errors.os_error maps it)."""

    def __init__(self, receiver, path, size, sha, offset, inflate):
        self.receiver = receiver
        self.path = path
        self.size = size
        self.sha = sha
        self.inflate = inflate
        self.h = hashlib.sha256()
        self.got = offset
        self.unflushed = 0
        self.flush_every = FLUSH_EVERY if receiver.resumable else 0
        self.f = receiver._open_part(sha, offset)
        if offset:
            try:
                self._hash_kept()
            except BaseException:
                self.close()
                raise

    def _hash_kept(self):
        """Fold the kept part of a resumed file into the hash, reading it
        back from flash."""
        buf = self.receiver.scratch()
        mv = memoryview(buf)
        with open(part_path(self.sha), "rb") as f:
            while True:
                k = f.readinto(buf)
                if not k:
                    break
                self.h.update(mv[:k])
                hal.feed()

    def write(self, data):
        hal.fault("file")
        before = self.got
        if self.inflate:
            self._inflate(data)
        else:
            if self.got + len(data) > self.size:
                raise PushError("size_mismatch", self.path)
            self.got += len(data)
            self.h.update(data)
            self.f.write(data)
        if self.flush_every:
            self.unflushed += self.got - before
            if self.unflushed >= self.flush_every:
                self.unflushed = 0
                self.f.flush()

    def _inflate(self, comp):
        out = self.receiver.scratch()
        mv = memoryview(out)
        d = deflate.DeflateIO(_View(comp), deflate.ZLIB)
        while True:
            try:
                k = d.readinto(out)
            except (EOFError, ValueError, OSError):
                raise PushError("bad_request", "bad deflate data")
            if not k:
                return
            self.got += k
            if self.got > self.size:
                raise PushError("size_mismatch", self.path)
            self.h.update(mv[:k])
            self.f.write(mv[:k])

    def close(self):
        """Close the file (finish() does); a part closed without finish()
        stays behind as the partial file."""
        f = self.f
        if f is not None:
            self.f = None
            f.close()

    def finish(self):
        """The file is complete: PushError(size_mismatch / sha256_mismatch)
        unless it verifies; then it is the staged file of its path."""
        self.close()
        if self.got != self.size:
            raise PushError("size_mismatch", self.path)
        if binascii.hexlify(self.h.digest()).decode() != self.sha:
            raise PushError("sha256_mismatch", self.path)
        self.receiver._place_part(self.sha, self.path)


try:
    import io as _io

    _Base = _io.IOBase
except (ImportError, AttributeError):
    _Base = object


class _View(_Base):
    """A read-only stream over a memoryview (input of DeflateIO)."""

    def __init__(self, mv):
        self.mv = mv
        self.pos = 0

    def readinto(self, buf):
        n = len(self.mv) - self.pos
        if n > len(buf):
            n = len(buf)
        buf[0:n] = self.mv[self.pos : self.pos + n]
        self.pos += n
        return n


def _find_part():
    """sha256 of the partly received file kept in the stage, or None."""
    found = fs.names(STAGE, lambda n: not n.startswith(PART_PREFIX), 1)
    if found:
        return found[0][len(PART_PREFIX) :]
    return None
