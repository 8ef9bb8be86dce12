# The push requests of frame mode: begin (+ manifest stream), file (+ data
# stream), staged, commit (docs/protocol.md section 4). Only the framing is
# here: the release receiver (receiver.py) stages what the frames carry.
# Imported by the server on the first push, so a device that is only queried
# never compiles or holds it.
import binascii
import hashlib

from uota import crypto, fs, hal, log, session, trust, wire
from uota.errors import PushError, hex64, non_negative_int, os_error, push_error
from uota.layout import MARKER
from uota.receiver import Receiver


async def _next_data(srv, conn):
    """Length of the next DATA frame of a stream; PushError(bad_frame /
    too_large) if the next frame is anything else."""
    t, n = await conn.read_header()
    if t != wire.DATA:
        raise PushError("bad_frame", "expected a DATA frame")
    if n > conn.max_frame:
        raise PushError("too_large", "frame of %d bytes; max_frame is %d" % (n, conn.max_frame))
    return n


async def _refuse(conn, err):
    """Error ending a request that holds no push session: reply, close."""
    await conn.send_err(err.code, err.msg)
    await conn.linger()
    return False


async def _fail(conn, err):
    """Error ending a push: drop the staging area, reply, close."""
    session.abandon(conn)
    return await _refuse(conn, err)


def _own_session(conn):
    """conn's receiver, ready for files; PushError(no_session) otherwise."""
    push = session.held_by(conn)
    if push is None or not push.ready:
        raise PushError("no_session", "no push session on this connection")
    return push


# Free heap (bytes) below which a commit leaves its roll-forward to the boot.
LOW_RAM = 32768

# A push session whose owner never authenticated (a device without secrets)
# is taken over by a new begin once it has made no progress for this long,
# so a client that opens a push and trickles cannot hold the only slot.
PUSH_STALL_MS = 2000


def _take_over_stalled(conn):
    """Free the push slot from an unauthenticated owner that has stalled
    (its staging stays on flash, resumable, as after a dropped link)."""
    s = session.active
    if s is None or s.owner is conn:
        return
    owner = s.owner
    if getattr(owner, "skey", None) is not None:
        return
    if hal.ticks_diff(hal.ticks_ms(), owner.last) < PUSH_STALL_MS:
        return
    log.info("taking the push slot from a stalled unauthenticated session")
    session.detach(owner)
    owner.cancel()


async def op_begin(srv, conn, req):
    _take_over_stalled(conn)
    return await begin(srv, conn, req)


async def begin(srv, conn, req):
    """begin + the manifest stream. Each line is checked as it arrives,
    folded into the signature and written to the staging area; the reply
    comes after the stream."""
    cfg = srv.cfg
    err = None
    push = None
    key = cfg.signing_key
    version = req.get("version")
    mode = req.get("mode", "full")
    count = non_negative_int(req.get("count"))
    sig = req.get("sig")
    runtime = req.get("runtime") is True
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
        push = session.start(Receiver(conn, version, mode, runtime, resumable=True, app_paths=cfg.app_paths))
        push.release = claims.release
        push.rollback = claims.rollback
        push.expected = count
        if key:
            push.signature = trust.Signature(key, claims)
    except (PushError, OSError) as e:
        err = push_error(e)
    # The manifest stream: lines, possibly split across frames, found in
    # the receive buffer without copying more than one line at a time.
    partial = b""
    while True:
        try:
            n = await _next_data(srv, conn)
        except PushError as e:
            return await _fail(conn, err or e)
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
                push.add_line(line)
            except (PushError, OSError) as e:
                err = push_error(e)
    try:
        if err is None:
            if partial:
                raise PushError("bad_request", "manifest does not end with a newline")
            if push.count != count:
                raise PushError("bad_request", "manifest has %d entries, begin said %d" % (push.count, count))
            push.close_manifest()
            if mdigest is not None and not crypto.equal(binascii.hexlify(mdigest.digest()).decode(), want):
                raise PushError("unbound", "the manifest stream differs from the one this session sealed")
            if push.signature is not None:
                push.signature.verify(sig)
            push.settle()
            free = hal.fs_free()
            need = push.space_needed()
            if free is not None and need > free:
                raise PushError("no_space", "release needs %d bytes, %d free" % (need, free))
    except (PushError, OSError) as e:
        err = push_error(e)
    if err is not None:
        if push is None:  # never ours: keep another owner's session
            return await _refuse(conn, err)
        return await _fail(conn, err)
    push.ready = True
    conn.last = hal.ticks_ms()
    if push.resumed:
        log.info("resuming the push of %s" % push.version)
        await conn.send_ok(resumed=True)
    else:
        await conn.send_ok()
    return True


async def file(srv, conn, req):
    """file + its data stream, handed to the receiver chunk by chunk
    straight from the receive buffer (a raw stream in pieces, a deflate
    stream a frame at a time). No reply when the file verifies. With
    "offset" the stream continues the kept partial file."""
    push = session.held_by(conn)
    err = None
    part = None
    path = req.get("path")
    size = non_negative_int(req.get("size"))
    sha = hex64(req.get("sha256"))
    enc = req.get("enc")
    offset = req.get("offset", 0)
    try:
        push = _own_session(conn)
        if not isinstance(path, str):
            raise PushError("bad_path", "%s" % (path,))
        path = push.check_path(path)
        if size is None or sha is None:
            raise PushError("bad_request", "file needs size and sha256")
        offset = non_negative_int(offset)
        if offset is None or offset > size:
            raise PushError("bad_request", "offset must be an integer from 0 to size")
        part = push.stage_file(path, size, sha, offset, enc)
    except (PushError, OSError) as e:
        err = push_error(e)
    try:
        while True:
            n = await _next_data(srv, conn)
            if n == 0:
                break
            if err is not None:
                await conn.skip(n)
                continue
            if enc is None:
                left = n
                while left:
                    p = await conn.piece(left)
                    left -= len(p)
                    if err is not None:
                        continue
                    try:
                        part.write(p)
                    except (PushError, OSError) as e:
                        err = push_error(e)
            else:
                await conn.need(n)
                comp = conn.mv[conn.start : conn.start + n]
                conn.start += n
                try:
                    part.write(comp)
                except (PushError, OSError) as e:
                    err = push_error(e)
    except PushError as e:
        err = e
    finally:
        if part is not None:
            part.close()
    if err is None:
        try:
            part.finish()
        except (PushError, OSError) as e:
            err = push_error(e)
    if err is not None:
        if push is None:  # never ours: keep another owner's session
            return await _refuse(conn, err)
        return await _fail(conn, err)
    return True


async def staged(srv, conn, req):
    """staged: what the session's staging area holds, as a DATA stream of
    "<bytes> <sha256> <path>" lines (two passes: the count comes first)."""
    push = _own_session(conn)
    n = 0
    for _ in push.staged():
        n += 1
    await conn.send_ok(count=n)
    await conn.send_lines(push.staged())
    return True


async def commit(srv, conn, req):
    """commit: install the staged release all or nothing, reply, reset."""
    push = _own_session(conn)
    do_reset = req.get("reset", True) is not False
    # Short of heap, a commit that resets stops at the commit point and the
    # next boot rolls the release forward (nothing else is loaded then).
    free = hal.mem_free()
    at_boot = do_reset and free is not None and free < LOW_RAM
    try:
        push.commit(at_boot=at_boot)
    except PushError as e:
        await conn.send_err(e.code, e.msg)
        return True  # the session stays: missing files may still come
    except (OSError, MemoryError) as e:
        err = os_error(e) if isinstance(e, OSError) else PushError("no_memory", "out of RAM while committing")
        if fs.exists(MARKER):
            # Committed; the rest is finished at the next boot.
            log.error("commit interrupted; finishing at boot", e)
            srv.stop_serving(conn)
            await conn.send_err(err.code, err.msg)
            await srv.reset(conn)
        return await _fail(conn, err)
    session.finish(conn)
    conn.last = hal.ticks_ms()
    log.info("release %s installed" % push.version)
    if do_reset:
        srv.stop_serving(conn)
    await conn.send_ok(version=push.version)
    if do_reset:
        await srv.reset(conn)
    return True


# The requests server.py hands to this module.
op_file = file
op_commit = commit
op_staged = staged
