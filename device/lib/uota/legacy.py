# micro-ota's push sessions, loaded only when /config/ota.json has
# "legacy": true (docs/protocol.md section 6).
#
# Only the framing is here: both are received by the same release receiver
# as a uota push (receiver.py). Every path is checked before a byte is
# written, files go to the staging area only, the signature (when the device
# has a signingKey) is verified before anything is committed, and the commit
# is the same all-or-nothing journal. Legacy releases are committed like a
# "fast" push (files added or replaced, nothing deleted), because micro-ota
# hosts push partial file sets too. Paths a uota push may not write
# (paths.ReleaseRules without the runtime flag: boot.py, lib/uota/, data/,
# state and secret files, anything under them, names that shadow the
# runtime's modules, anything outside the app area) are received and
# skipped, so a micro-ota project that carries its own boot.py cannot
# replace the runtime.
#
# Bounds, checked before anything is staged: at most maxFiles files, and no
# more bytes than the flash has free (the announced stream_ota length, the
# sizes of a start_ota manifest, each stream_ota file before it is written).
import binascii
import json

from uota import crypto, fs, hal, log, paths, session
from uota import manifest as mf
from uota.errors import PathError, PushError
from uota.layout import ARRIVED
from uota.receiver import Receiver


class _Stop(Exception):
    """Ends a legacy session with a reply line."""

    def __init__(self, *lines):
        super().__init__(lines[-1])
        self.lines = lines


def _u(b):
    n = 0
    for x in b:
        n = (n << 8) | x
    return n


def _check(push, path):
    """The checked path, or None when it is to be skipped (protected)."""
    try:
        path = paths.check(path)
    except PathError:
        raise _Stop("error: bad path %s" % path)
    why = push.rules.refusal(path)
    if why is not None:
        log.warn("legacy push: skipping %s (%s)" % (path, why))
        return None
    return path


def _guard(srv, conn):
    """Refuse a session the connection may not open: on a device with a
    password, only after micro-ota's password line (the server asks for it
    first; this holds whatever the caller)."""
    if srv.cfg.verifier and not conn.authed:
        raise _Stop("error: auth_required")


def _free():
    """Free flash in bytes, or None when the board cannot tell."""
    try:
        return hal.fs_free()
    except OSError:
        return None


def _too_many(srv, count):
    if count > srv.cfg.max_files:
        raise _Stop("error: too_large release has %d files; this device accepts at most %d" % (count, srv.cfg.max_files))


def _no_space(need, free):
    raise _Stop("error: no_space release needs %d bytes, %d free" % (need, free))


async def _stage(conn, part, size, mismatch, mac=None):
    """Receive a file's bytes into part (a receiver Part) and finish it;
    mismatch is the _Stop for a wrong sha256."""
    try:
        await _receive(conn, part, size, mac)
    finally:
        part.close()
    try:
        part.finish()
    except PushError as e:
        if e.code == "sha256_mismatch":
            raise mismatch
        raise


async def _receive(conn, part, size, mac=None):
    """Hand size raw bytes from the connection to part (None: discard)."""
    left = size
    while left:
        p = await conn.piece(left)
        left -= len(p)
        if mac is not None:
            mac.update(p)
        if part is not None:
            part.write(p)


def _mismatch(path):
    """The reply lines of a file whose sha256 does not match."""
    return _Stop("sha256_mismatch %s" % path, "error: SHA256 mismatch: %s" % path)


def _stage_entries(push, entries):
    """Write the collected (sha, size, path) entries as the staged manifest."""
    entries.sort(key=lambda e: e[2] + ":")
    for sha, size, path in entries:
        push.add(sha, size, path)
    push.close_manifest()
    push.ready = True


def _stage_arrived(push, ordered, kept):
    """The staged manifest from ARRIVED (stream_ota's entries, kept on flash
    as they arrive, so that RAM does not grow with the number of files):
    streamed when the entries came in
    manifest order (as uota hosts send them), else sorted in RAM, when the
    kept entries (at most maxFiles) fit in half the free heap. A repeated
    path fails in push.add."""
    if not ordered:
        import gc

        gc.collect()
        need = (fs.stat_size(ARRIVED) or 0) + 128 * kept
        if need > gc.mem_free() // 2:
            raise _Stop("error: too_large %d files not in manifest order need more RAM than is free" % kept)
    r = mf.Reader(ARRIVED)
    try:
        if ordered:
            while True:
                e = r.next()
                if e is None:
                    break
                push.add(e[0], e[1], e[2])
            push.close_manifest()
            push.ready = True
            return
        entries = []
        while True:
            e = r.next()
            if e is None:
                break
            entries.append(e)
    finally:
        r.close()
    _stage_entries(push, entries)


def _manifest_cost(srv, doc):
    """Refuse a start_ota manifest before parsing it when it may hold more
    than maxFiles files or need more RAM than is free. Every value json
    builds costs one of , : [ { (a file's entry takes about 6 of them), and
    about 48 bytes each at most; its strings are bounded by the text."""
    t = doc.count(b",") + doc.count(b":") + doc.count(b"[") + doc.count(b"{")
    if t > 6 * srv.cfg.max_files + 16:
        raise _Stop("error: too_large manifest lists more than %d files" % srv.cfg.max_files)
    import gc

    gc.collect()
    free = gc.mem_free()
    if free >= 0 and t * 48 + 2 * len(doc) > free:
        raise _Stop("error: too_large manifest needs more RAM than is free (%d bytes)" % free)


async def _commit_and_reset(srv, conn, push):
    try:
        push.commit()
    except PushError as e:
        raise _Stop("error: %s %s" % (e.code, e.msg))
    session.finish(conn)
    log.info("legacy release %s installed" % push.version)
    srv.stop_serving(conn)
    await conn.send_line("ok")
    await srv.reset(conn)


async def _say(conn, stop):
    """Send the reply lines of a _Stop; the session ends (False)."""
    for line in stop.lines:
        await conn.send_line(line)
    return False


async def _end(conn, stop):
    session.abandon(conn)
    return await _say(conn, stop)


async def stream_ota(srv, conn, arg=""):
    """stream_ota <n>: the OTAS container, then an HMAC-SHA256 trailer.
    arg: the announced container length (refused beyond the free flash)."""
    try:
        _guard(srv, conn)
        free = _free()
        try:
            n = int(arg)
        except (TypeError, ValueError):
            n = None
        if n is not None and free is not None and n > free:
            _no_space(n, free)
    except _Stop as s:
        return await _say(conn, s)
    try:
        push = session.start(Receiver(conn, "unknown", "fast", app_paths=srv.cfg.app_paths, listed=False))
    except PushError as e:
        await conn.send_line("error: " + (e.msg or e.code))
        return False
    await conn.send_line("ready")
    key = srv.cfg.signing_key
    mac = crypto.HmacSha256(key) if key else None

    async def field(n):
        b = await conn.read_payload(n)
        if mac is not None:
            mac.update(b)
        return b

    try:
        if await conn.take(4) != b"OTAS":
            raise _Stop("error: bad magic")
        version = (await field(_u(await field(2)))).decode()
        count = _u(await field(2))
        _too_many(srv, count)
        arrived = open(ARRIVED, "w")
        try:
            ordered, kept = await _stream_files(push, conn, field, count, arrived, free, mac)
        finally:
            arrived.close()
        trailer = await conn.take(32)
        if mac is not None and not crypto.equal(mac.digest(), trailer):
            raise _Stop("sig_mismatch")
        push.version = version
        _stage_arrived(push, ordered, kept)
        await _commit_and_reset(srv, conn, push)
    except _Stop as s:
        return await _end(conn, s)
    except UnicodeError:
        return await _end(conn, _Stop("error: path or version is not UTF-8"))
    except PushError as e:
        return await _end(conn, _Stop("error: %s %s" % (e.code, e.msg)))
    except OSError as e:
        return await _end(conn, _Stop("error: %s" % (e,)))
    return False


async def _stream_files(push, conn, field, count, out, free, mac):
    """The files of an OTAS container: each kept one is staged (size bound
    by the free flash before a byte is written, hash checked) and its
    manifest line appended to out; skipped ones are read and dropped.
    Returns whether the kept ones came in manifest order, and how many."""
    last = None
    ordered = True
    staged = 0
    kept = 0
    for _ in range(count):
        raw_path = (await field(_u(await field(2)))).decode()
        size = _u(await field(4))
        digest = await field(32)
        path = _check(push, raw_path)
        if path is None:
            await _receive(conn, None, size, mac)
            continue
        staged += size
        if free is not None and staged > free:
            _no_space(staged, free)
        sha = binascii.hexlify(digest).decode()
        await _stage(conn, push.stage_file(path, size, sha), size, _Stop("sha256_mismatch %s" % path), mac)
        k = mf.key(path)
        if last is not None and not (last < k):
            ordered = False
        last = k
        kept += 1
        out.write(mf.format_line(sha, size, path))
    return ordered, kept


def _signing_payload(version, files):
    """micro-ota's signing payload: version, newline, sorted "path:sha256"
    joined by newlines."""
    items = sorted("%s:%s" % (p, files[p].get("sha256", "")) for p in files)
    return version + "\n" + "\n".join(items)


async def start_ota(srv, conn):
    """start_ota: manifest <n> + JSON, file <path>;<size>;<sha256> + bytes,
    end_ota (commit) or abort."""
    try:
        _guard(srv, conn)
    except _Stop as s:
        return await _say(conn, s)
    await conn.send_line("ready")
    push = None
    try:
        while True:
            raw = await conn.read_line(1024)
            text = raw.decode()
            parts = text.split(" ", 1)
            cmd = parts[0]
            arg = parts[1] if len(parts) > 1 else ""
            if cmd == "manifest":
                push = await _manifest(srv, conn, arg)
                await conn.send_line("ok")
            elif cmd == "file":
                if push is None:
                    raise _Stop("error: manifest first")
                await _file(conn, push, arg)
                await conn.send_line("ok")
            elif cmd == "end_ota":
                if push is None:
                    raise _Stop("error: manifest first")
                await _commit_and_reset(srv, conn, push)
                return False
            elif cmd == "abort":
                session.abandon(conn)
                await conn.send_line("aborted")
                return True
            else:
                await conn.send_line("unknown")
    except _Stop as s:
        return await _end(conn, s)
    except (UnicodeError, ValueError, KeyError, TypeError, AttributeError):
        return await _end(conn, _Stop("error: malformed request"))
    except PushError as e:
        return await _end(conn, _Stop("error: %s %s" % (e.code, e.msg)))
    except OSError as e:
        return await _end(conn, _Stop("error: %s" % (e,)))


async def _manifest(srv, conn, arg):
    n = int(arg.strip())
    if n < 0 or n > 65536:
        raise _Stop("error: manifest too large")
    doc = await conn.read_payload(n)
    _manifest_cost(srv, doc)
    doc = json.loads(doc)
    version = doc.get("version") or "unknown"
    files = doc.get("files") or {}
    if not isinstance(version, str) or not isinstance(files, dict):
        raise _Stop("error: malformed manifest")
    _too_many(srv, len(files))
    key = srv.cfg.signing_key
    if key:
        sig = doc.get("sig")
        mac = crypto.HmacSha256(key)
        mac.update(_signing_payload(version, files).encode())
        if not isinstance(sig, str) or not crypto.equal(mac.hexdigest(), sig.lower()):
            raise _Stop("sig_mismatch")
    push = session.start(Receiver(conn, version, "fast", app_paths=srv.cfg.app_paths))
    entries = []
    need = 0
    for p in files:
        meta = files[p]
        path = _check(push, p)
        if path is None:
            continue
        sha = meta.get("sha256", "")
        size = meta.get("size")
        if not isinstance(sha, str) or len(sha) != 64 or isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise _Stop("error: malformed manifest entry %s" % p)
        entries.append((sha.lower(), size, path))
        need += size
    free = _free()
    if free is not None and need > free:
        _no_space(need, free)
    _stage_entries(push, entries)
    return push


async def _file(conn, push, arg):
    bits = arg.rsplit(";", 2)
    if len(bits) != 3:
        raise _Stop("error: file needs <path>;<size>;<sha256>")
    raw_path, size, sha = bits[0], int(bits[1]), bits[2].strip().lower()
    if size < 0:
        raise _Stop("error: bad size")
    path = _check(push, raw_path)
    if path is None:
        await conn.skip(size)
        return
    try:
        part = push.stage_file(path, size, sha)
    except PushError as e:
        if e.code == "not_in_manifest":
            await conn.skip(size)
            raise _Stop("error: not in manifest %s" % path)
        if e.code == "sha256_mismatch":  # listed with a sha256 no file has
            await conn.skip(size)
            raise _mismatch(path)
        raise
    await _stage(conn, part, size, _mismatch(path))
