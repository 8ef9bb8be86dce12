# The push requests of frame mode: begin (+ manifest stream), file (+ data
# stream), commit (docs/protocol.md section 4). Imported by the server on the
# first push, so a device that is only queried never compiles or holds it.
import binascii
import hashlib

from uota import hal, log, fs, release, crypto, wire, trust
from uota import manifest as mf
from uota.release import PushError
from uota.server import hex64, non_negative_int

try:
    import deflate
except ImportError:
    deflate = None



async def _next_data(srv, conn):
    """Length of the next DATA frame of a stream; PushError(bad_frame /
    too_large) if the next frame is anything else."""
    t, n = await conn.read_header()
    if t != wire.DATA:
        raise PushError("bad_frame", "expected a DATA frame")
    if n > srv.max_frame:
        raise PushError("too_large", "frame of %d bytes; max_frame is %d" % (n, srv.max_frame))
    return n


async def _fail(srv, conn, err):
    """Error ending a push: drop the staging area, reply, close."""
    release.abandon(conn)
    await conn.send_err(err.code, err.msg)
    await srv._linger(conn)
    return False


async def begin(srv, conn, req):
    """begin + the manifest stream. Each line is checked as it arrives,
    folded into the signature HMAC and written to the staging area; the
    reply comes after the stream."""
    cfg = srv.cfg
    err = None
    push = None
    key = cfg.signing_key
    version = req.get("version")
    mode = req.get("mode", "full")
    count = non_negative_int(req.get("count"))
    sig = req.get("sig")
    runtime = req.get("runtime") is True
    mac = None
    claims = None
    mdigest = None  # sha256 of the manifest stream, when the session is sealed
    try:
        if conn.skey is not None:
            # A sealed begin binds its manifest stream too: the DATA frames
            # carry no seal, so the digest in the sealed request stands in.
            want = hex64(req.get("mdigest"))
            if want is None:
                raise PushError("unbound", "a sealed begin needs mdigest (sha256 of the manifest stream)")
            mdigest = hashlib.sha256()
        if not isinstance(version, str) or not version or len(version) > 64:
            raise PushError("bad_request", "version must be a short string")
        for c in version:
            if ord(c) < 32:
                raise PushError("bad_request", "version has a control character")
        if mode not in ("full", "fast"):
            raise PushError("bad_request", "mode must be full or fast")
        if count is None:
            raise PushError("bad_request", "count must be a non-negative integer")
        if count > cfg.max_files:
            raise PushError("too_large", "release has %d files; this device accepts at most %d" % (count, cfg.max_files))
        if sig is not None and sig != "":
            sig = hex64(sig)
            if sig is None:
                raise PushError("bad_request", "sig must be 64 hex digits")
        else:
            sig = None
        if key and sig is None:
            raise PushError("sig_required", "this device only accepts signed releases")
        claims = trust.Claims(req, version, mode, runtime, count, conn.nonce)
        if key and "release" not in req:
            raise PushError("sig_required", "a signed release needs a release number")
        claims.check()
        srv._check_no_other_session(conn)
        push = release.start(conn, version, mode, runtime, resumable=True, app_paths=cfg.app_paths)
        push.release = claims.release
        push.rollback = claims.rollback
        if key:
            mac = crypto.HmacSha256(key)
            mac.update(claims.header())
    except PushError as e:
        err = e
    except OSError as e:
        err = release.os_error(e)
    # The manifest stream: lines, possibly split across frames, found in
    # the receive buffer without copying more than one line at a time.
    partial = b""
    while True:
        try:
            n = await _next_data(srv, conn)
        except PushError as e:
            return await _fail(srv, conn, err or e)
        if n == 0:
            break
        left = n
        while left:
            await conn.ready()
            k = conn.end - conn.start
            if k > left:
                k = left
            if err is not None:
                conn.start += k
                left -= k
                continue
            i = conn.buf.find(b"\n", conn.start, conn.start + k)
            if i < 0:
                partial += bytes(conn.mv[conn.start : conn.start + k])
                conn.start += k
                left -= k
                if len(partial) > 400:
                    err = PushError("bad_request", "manifest line too long")
                continue
            line = partial + bytes(conn.mv[conn.start : i])
            partial = b""
            left -= i + 1 - conn.start
            conn.start = i + 1
            if mdigest is not None:
                mdigest.update(line)
                mdigest.update(b"\n")
            try:
                _manifest_line(push, line, count, mac)
            except PushError as e:
                err = e
            except OSError as e:
                err = release.os_error(e)
    try:
        if err is None:
            if partial:
                raise PushError("bad_request", "manifest does not end with a newline")
            if push.count != count:
                raise PushError("bad_request", "manifest has %d entries, begin said %d" % (push.count, count))
            push.close_manifest()
            if mdigest is not None and not crypto.equal(binascii.hexlify(mdigest.digest()).decode(), want):
                raise PushError("unbound", "the manifest stream differs from the one this session sealed")
            if mac is not None and not crypto.equal(mac.hexdigest(), sig):
                raise PushError("sig_mismatch", "signature does not match (it must cover this session's nonce)")
            push.settle()
            free = hal.fs_free()
            need = push.space_needed()
            if free is not None and need > free:
                raise PushError("no_space", "release needs %d bytes, %d free" % (need, free))
    except PushError as e:
        err = e
    except OSError as e:
        err = release.os_error(e)
    if err is not None:
        if push is None:  # never ours: keep another owner's session
            await conn.send_err(err.code, err.msg)
            await srv._linger(conn)
            return False
        return await _fail(srv, conn, err)
    push.ready = True
    conn.last = hal.ticks_ms()
    if push.resumed:
        log.info("resuming the push of %s" % push.version)
        await conn.send_ok(resumed=True)
    else:
        await conn.send_ok()
    return True


def _manifest_line(push, line, count, mac):
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
    path = push.check_entry_path(path)
    if push.count >= count:
        raise PushError("bad_request", "more manifest entries than begin said")
    push.add(sha, size, path)
    if mac is not None:
        mac.update(trust.entry_line(path, sha, size))


async def file(srv, conn, req):
    """file + its data stream, written to the stage's partial file chunk by
    chunk straight from the receive buffer, and renamed to the staged path
    once it verifies. No reply when it verifies. With "offset" the stream
    continues the kept partial file, whose bytes are hashed again from
    flash first."""
    push = release.session
    err = None
    f = None
    path = req.get("path")
    size = non_negative_int(req.get("size"))
    sha = hex64(req.get("sha256"))
    enc = req.get("enc")
    offset = req.get("offset", 0)
    h = hashlib.sha256()
    got = 0
    try:
        if push is None or push.owner is not conn or not push.ready:
            raise PushError("no_session", "no push session on this connection")
        if not isinstance(path, str):
            raise PushError("bad_path", "%s" % (path,))
        path = push.check_entry_path(path)
        if size is None or sha is None:
            raise PushError("bad_request", "file needs size and sha256")
        offset = non_negative_int(offset)
        if offset is None or offset > size:
            raise PushError("bad_request", "offset must be an integer from 0 to size")
        if enc is not None and (enc != "deflate" or deflate is None):
            raise PushError("bad_request", "unsupported enc %s" % (enc,))
        if not push.find(sha, size, path):
            raise PushError("not_in_manifest", path)
        f = push.open_part(sha, offset)
        if offset:
            push.hash_part(sha, h, _scratch(srv))
            got = offset
    except PushError as e:
        err = e
    except OSError as e:
        err = release.os_error(e)
    unflushed = 0
    try:
        while True:
            n = await _next_data(srv, conn)
            if n == 0:
                break
            if err is not None:
                await conn.skip(n)
                continue
            before = got
            if enc is None:
                left = n
                while left:
                    p = await conn.piece(left)
                    left -= len(p)
                    if err is not None:
                        continue
                    got += len(p)
                    if got > size:
                        err = PushError("size_mismatch", path)
                        continue
                    h.update(p)
                    try:
                        f.write(p)
                    except OSError as e:
                        err = release.os_error(e)
            else:
                await conn.need(n)
                comp = conn.mv[conn.start : conn.start + n]
                conn.start += n
                try:
                    got = _inflate(srv, comp, f, h, got, size)
                except PushError as e:
                    err = e
                    if err.code == "size_mismatch":
                        err.msg = path
                except OSError as e:
                    err = release.os_error(e)
            # Flush now and then: after a power cut the part on flash then
            # holds what was received up to the last flush, which a resumed
            # push continues from.
            unflushed += got - before
            if err is None and unflushed >= release.FLUSH_EVERY:
                unflushed = 0
                try:
                    f.flush()
                except OSError as e:
                    err = release.os_error(e)
    except PushError as e:
        err = e
    finally:
        if f is not None:
            f.close()
    if err is None and got != size:
        err = PushError("size_mismatch", path)
    if err is None:
        if binascii.hexlify(h.digest()).decode() != sha:
            err = PushError("sha256_mismatch", path)
    if err is None:
        try:
            push.finish_part(sha, path)
        except OSError as e:
            err = release.os_error(e)
    if err is not None:
        if push is None or push.owner is not conn:
            await conn.send_err(err.code, err.msg)
            await srv._linger(conn)
            return False
        return await _fail(srv, conn, err)
    return True


def _scratch(srv):
    if srv._zbuf is None:
        srv._zbuf = bytearray(2048)
    return srv._zbuf


async def staged(srv, conn, req):
    """staged: what the session's staging area holds, as a DATA stream of
    "<bytes> <sha256> <path>" lines (two passes: the count comes first)."""
    push = release.session
    if push is None or push.owner is not conn or not push.ready:
        raise PushError("no_session", "no push session on this connection")
    n = 0
    for _ in push.staged():
        n += 1
    await conn.send_ok(count=n)
    await srv._send_lines(conn, push.staged())
    return True


def _inflate(srv, comp, f, h, got, size):
    """Inflate one DATA frame (a complete zlib stream) into f."""
    out = _scratch(srv)
    mv = memoryview(out)
    d = deflate.DeflateIO(_View(comp), deflate.ZLIB)
    while True:
        try:
            k = d.readinto(out)
        except (EOFError, ValueError, OSError):
            raise PushError("bad_request", "bad deflate data")
        if not k:
            return got
        got += k
        if got > size:
            raise PushError("size_mismatch", "")
        h.update(mv[:k])
        f.write(mv[:k])


async def commit(srv, conn, req):
    """commit: install the staged release all or nothing, reply, reset."""
    push = release.session
    if push is None or push.owner is not conn or not push.ready:
        raise PushError("no_session", "no push session on this connection")
    do_reset = req.get("reset", True) is not False
    try:
        push.commit()
    except PushError as e:
        await conn.send_err(e.code, e.msg)
        return True  # the session stays: missing files may still come
    except OSError as e:
        err = release.os_error(e)
        if fs.exists(release.MARKER):
            # Committed; the rest is finished at the next boot.
            log.error("commit interrupted; finishing at boot", e)
            srv.stop_serving(conn)
            await conn.send_err(err.code, err.msg)
            await srv._reset(conn)
        return await _fail(srv, conn, err)
    release.finish(conn)
    conn.last = hal.ticks_ms()
    log.info("release %s installed" % push.version)
    if do_reset:
        srv.stop_serving(conn)
    await conn.send_ok(version=push.version)
    if do_reset:
        await srv._reset(conn)
    return True


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
