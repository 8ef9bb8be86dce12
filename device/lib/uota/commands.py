# The requests an idle device does not need loaded: reading and removing
# files, the release's manifest and summary, the device's info, and the
# owner's settings (password, signing key, release floor), in frame mode
# (op_<name>(srv, conn, req)) and micro-ota's line mode (line_command).
# server.py loads this module for such a request; it is unloaded again
# when the device is idle (Server.idle()).
import asyncio
import json
import os

from uota import boot_state, config, floor, fs, hal, log, paths, release, session, settings, wire
from uota import manifest as mf
from uota.errors import PushError, non_negative_int

_DIR = 0x4000


def _line_error(e):
    """A line-mode error reply: "error: <code>: <detail>"."""
    return "error: %s: %s" % (e.code, e.msg) if e.msg else "error: " + e.code


async def line_command(srv, conn, cmd, arg):
    """Run one micro-ota line command; False closes the connection."""
    if cmd.startswith("{"):  # micro-ota's RemoteIO: a JSON line
        await _micro_ota_call(srv, conn, cmd + " " + arg if arg else cmd)
    elif cmd == "version":
        await conn.send_line(release.version_json())
    elif cmd == "ls":
        try:
            full = _folder(arg or "/")
        except PushError as e:
            await conn.send_line(_line_error(e))
            return True
        for name, kind, size in _entries(full):
            await conn.send_line(name + "/" if kind == "d" else name)
        await conn.send_line("")
    elif cmd == "get":
        try:
            f, size = open_check(arg)
        except PushError as e:
            await conn.send_line(_line_error(e))
            return True
        try:
            await conn.send_line(str(size))
        except BaseException:
            f.close()
            raise
        await conn.send_file(f, raw=True)
    elif cmd == "rm":
        try:
            remove(arg)
        except PushError as e:
            await conn.send_line(_line_error(e))
            return True
        await conn.send_line("ok")
    elif cmd == "reset":
        srv.stop_serving(conn)
        await conn.send_line("ok")
        await srv.reset(conn)
    elif cmd in ("stream_ota", "start_ota"):
        if not srv.cfg.legacy:
            await conn.send_line("error: legacy disabled")
            return True
        from uota import legacy

        conn.grow(srv.bufsize)
        if cmd == "stream_ota":
            return await legacy.stream_ota(srv, conn, arg)
        return await legacy.start_ota(srv, conn)
    else:
        await conn.send_line("unknown")
    return True


async def op_info(srv, conn, req):
    version = release.read_version()
    await conn.send_ok(
        version=version,
        files=mf.count(),
        platform=hal.platform(),
        mpy=hal.mpy_version(),
        mem_free=hal.mem_free(),
        mem_idle=srv.idle_free,
        fs_free=hal.fs_free(),
        runtime=settings.RUNTIME_VERSION,
        uptime_ms=hal.uptime_ms(),
        boot=boot_state.boot_info(),
        release=boot_state.release_info(version),
        id=hal.unique_id(),
        highest_release=floor.highest(),
        legacy=srv.cfg.legacy,
        password=bool(srv.cfg.verifier),
        signing_key=bool(srv.cfg.signing_key),
        warnings=srv.warnings(),
    )


def _folder(path):
    """The device folder to list (its full path), or PushError."""
    path = paths.check(path, allow_root=True)
    full = "/" + path
    if not fs.is_dir(full):
        if fs.exists(full):
            raise PushError("bad_request", "not a folder: " + path)
        raise PushError("not_found", path)
    return full


def _entries(full):
    """(name, "d" or "f", size) of each entry of a folder, as read."""
    for e in os.ilistdir(full):
        name = e[0]
        child = full.rstrip("/") + "/" + name
        kind = e[1]
        if not kind:
            kind = _DIR if fs.is_dir(child) else 0x8000
        if kind & _DIR:
            yield name, "d", 0
        else:
            size = e[3] if len(e) > 3 and e[3] >= 0 else fs.stat_size(child)
            yield name, "f", size or 0


async def op_ls(srv, conn, req):
    full = _folder(req.get("path", "/"))
    if req.get("lines") is True:
        # A stream of "<d|f> <size> <name>" lines, in the order the
        # filesystem gives (the host sorts): RAM does not grow with the
        # folder's size.
        await conn.send_ok(lines=True)
        await conn.send_lines("%s %d %s\n" % (kind, size, name) for name, kind, size in _entries(full))
        return
    out = [list(e) for e in _entries(full)]
    out.sort()
    await conn.send_ok(entries=out)


def open_check(path):
    """(open file, size) of a readable file, or PushError."""
    path = paths.check(path, allow_root=True)
    if paths.is_secret(path):
        raise PushError("protected", path)
    size = fs.stat_size("/" + path)
    if size is None or path == "":
        raise PushError("not_found", path)
    try:
        return open("/" + path, "rb"), size
    except OSError:
        raise PushError("not_found", path)


async def op_manifest(srv, conn, req):
    """The active release's manifest: RES with its version and entry
    count, then its lines, streamed (never the whole file in RAM)."""
    await conn.send_ok(version=release.read_version(), count=mf.count())
    await conn.send_lines(mf.lines())


async def op_summary(srv, conn, req):
    """The active release in one small reply: its version, entry count
    and the SHA-256 of its manifest lines as `manifest` would send them
    (so that a host can tell "up to date" without fetching them)."""
    import hashlib
    import binascii

    h = hashlib.sha256()
    n = 0
    for line in mf.lines():
        h.update(line.encode())
        n += 1
    await conn.send_ok(
        version=release.read_version(),
        count=n,
        sha256=binascii.hexlify(h.digest()).decode(),
    )


async def op_get(srv, conn, req):
    f, size = open_check(req.get("path"))
    try:
        await conn.send_ok(size=size)
    except BaseException:
        f.close()
        raise
    await conn.send_file(f)


def remove(path):
    path = paths.check(path, allow_root=True)
    if paths.holds_protected(path) or paths.is_secret(path):
        raise PushError("protected", path)
    full = "/" + path
    if fs.is_dir(full):
        try:
            os.rmdir(full)
        except OSError:
            raise PushError("bad_request", "folder not empty: " + path)
    elif fs.exists(full):
        os.remove(full)
    else:
        raise PushError("not_found", path)
    mf.remove_entries(path)


async def op_rm(srv, conn, req):
    remove(req.get("path"))
    await conn.send_ok()


async def op_wipe(srv, conn, req):
    from uota import journal

    session.ensure_free(conn)
    session.abandon(conn)
    journal.wipe()
    await conn.send_ok()


async def op_passwd(srv, conn, req):
    v = req.get("verifier")
    if not isinstance(v, str) or not config.valid_verifier(v):
        raise PushError("bad_request", "verifier must be pbkdf2-sha256$<iter>$<salt>$<hash>, sha256 hex or empty")
    srv.cfg.set_verifier(v)
    await conn.send_ok()


async def op_floor(srv, conn, req):
    """Set the release-number floor, lower or higher: the owner's way out
    of a floor set too high (only in an authenticated, sealed session on
    a device with secrets; see STATE_OPS)."""
    n = non_negative_int(req.get("release"))
    if n is None or n > floor.MAX_RELEASE:
        raise PushError("bad_request", "release must be an integer from 0 to 2^53")
    session.ensure_free(conn)
    floor.set_to(n)
    log.info("release floor set to %d" % n)
    await conn.send_ok(release=n)


async def op_rekey(srv, conn, req):
    """Replace the signing key with one sent encrypted under the current
    key and bound to this connection's nonce (docs/security.md)."""
    from uota import trust

    key = srv.cfg.signing_key
    if not key:
        raise PushError("no_key", "this device has no signing key; provision one over USB")
    try:
        new = trust.open_rekey(key, conn.nonce, req.get("key"), req.get("mac"))
    except PushError as e:
        if e.code == "sig_mismatch":
            await asyncio.sleep_ms(500)
        raise
    srv.cfg.set_signing_key(new)
    log.info("signing key rotated")
    await conn.send_ok(proof=trust.rekey_proof(new, conn.nonce))


async def op_abort(srv, conn, req):
    session.ensure_free(conn)
    if session.active is not None:
        session.abandon(conn)
    else:
        session.discard()
    await conn.send_ok()


# --- RemoteIO (remoteio.py, docs/remoteio.md) ----------------------------------


async def op_call(srv, conn, req):
    from uota import remoteio

    cid, name, args = req.get("id"), req.get("name"), req.get("args", {})
    if not isinstance(cid, str) or not 0 < len(cid) <= 64 or not isinstance(name, str) or not isinstance(args, dict):
        await conn.send_err("bad_request", "a call has an id (a string of at most 64 characters), a name and args (an object)")
        return
    ok, value, dup = await remoteio.call(cid, name, args)
    boots = boot_state.current()["boots"]
    if ok:
        try:
            await conn.send_ok(r=value, boot=boots, dup=dup)
        except (TypeError, ValueError):
            await conn.send_res({"ok": False, "err": "bad_result", "msg": "%s returned something JSON cannot hold" % name, "boot": boots, "dup": dup})
    else:
        code, msg, kind = value
        await conn.send_res({"ok": False, "err": code, "msg": msg, "type": kind, "boot": boots, "dup": dup})


LISTEN_SNDBUF = 4096  # bytes of a listener's output the kernel may hold


async def op_listen(srv, conn, req):
    """Stream the output ring from sequence number `from` as DATA frames
    ({"s": first, "d": [texts]}; {"gap": n, "s": seq} for entries the ring
    dropped before this listener read them; {"ka": 1, "s": next} every
    keepalive_ms while there is nothing to send) until the link drops."""
    from uota import output

    seq = req.get("from", 0)
    boots = boot_state.current()["boots"]
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0 or req.get("boot", boots) != boots:
        seq = 0  # a position in another boot's output: from this boot's start
    ka = req.get("keepalive_ms", 2500)
    ka = min(max(ka, 100), 60000) if isinstance(ka, int) and not isinstance(ka, bool) else 2500
    await conn.send_ok(boot=boots, next=output.next_seq(), capture=output._limit)
    # A small send buffer, so that a slow listener's backlog stays in the
    # ring (and is reported as a gap when the ring drops it) rather than in
    # the kernel for minutes (boards' stacks keep only a few KB anyway).
    sock = getattr(conn.s, "s", None)
    if hal.UNIX and sock is not None:
        try:
            sock.setsockopt(1, 7, LISTEN_SNDBUF)  # SOL_SOCKET, SO_SNDBUF (Linux)
        except (OSError, AttributeError):
            pass
    await _pump(conn, seq, max(conn.max_frame // 2 - 64, 64), ka, True)


async def _pump(conn, seq, budget, ka, frames):
    """Send the output ring from seq on until the link drops. frames: uota's
    DATA frames (entries, gaps, keepalives every ka ms); else micro-ota's
    JSON lines ({"t": "print", "d": text} per entry, {"t": "gap", "n": n}
    for dropped entries, nothing while idle)."""
    from uota import output

    last = hal.ticks_ms()
    busy = False
    while True:
        missed, start, texts = output.since(seq, budget)
        if missed:
            if frames:
                await conn.send_frame(wire.DATA, json.dumps({"gap": missed, "s": start}).encode())
            else:
                await conn.send_line(json.dumps({"t": "gap", "n": missed}))
        if texts and frames:
            payload = json.dumps({"s": start, "d": texts}).encode()
            if len(payload) > conn.max_frame:  # escapes made it grow: one at a time
                payload = json.dumps({"s": start, "d": [texts[0][:budget // 6]]}).encode()
                texts = texts[:1]
            await conn.send_frame(wire.DATA, payload)
            seq = start + len(texts)
        elif texts:
            for t in texts:
                await conn.send_line(json.dumps({"t": "print", "d": t}))
            seq = start + len(texts)
        elif missed or hal.ticks_diff(hal.ticks_ms(), last) >= ka:
            seq = start
            if frames:
                await conn.send_frame(wire.DATA, json.dumps({"ka": 1, "s": seq}).encode())
        else:
            # Just after output, look again soon: a fast printer fills the
            # ring in a few ms.
            await asyncio.sleep_ms(2 if busy else 20)
            busy = False
            continue
        busy = bool(texts)
        last = hal.ticks_ms()
        conn.progress()


async def _micro_ota_call(srv, conn, text):
    """A call in micro-ota's RemoteIO format ({"t": "call", "id", "name",
    "args"}), answered {"t": "resp", "id", "r"} or {"t": "err", "id", "e"}.
    Its ids are a host's counters, not unique: such calls are not deduplicated.
    Lines that are not calls are ignored, as micro-ota does. A device with a
    signing key serves them only in legacy mode or after the password line.
    {"t": "listen"} streams the output as micro-ota's print lines (_pump)."""
    from uota import remoteio

    try:
        msg = json.loads(text)
    except ValueError:
        return
    kind = msg.get("t") if isinstance(msg, dict) else None
    if kind not in ("call", "listen"):
        return
    allowed = not srv.cfg.signing_key or srv.cfg.legacy or conn.authed
    if kind == "listen":
        # A uota host listening to a micro-ota device sends this first (a
        # micro-ota device ignores it and streams its prints anyway).
        if allowed:
            await _pump(conn, 0, 400, 2500, False)
        else:
            await conn.send_line(json.dumps({"t": "err", "id": None, "e": "auth_required: this device streams to micro-ota's RemoteIO only in legacy mode"}))
        return
    cid, name, args = msg.get("id"), msg.get("name"), msg.get("args") or {}
    if not allowed:
        reply = {"t": "err", "id": cid, "e": "auth_required: this device takes calls from micro-ota's RemoteIO only in legacy mode"}
    elif not isinstance(name, str) or not isinstance(args, dict):
        reply = {"t": "err", "id": cid, "e": "a call has a name and args (an object)"}
    else:
        ok, value, _ = await remoteio.call(None, name, args)
        if ok:
            reply = {"t": "resp", "id": cid, "r": value}
        elif value[0] == "unknown_handler":
            reply = {"t": "err", "id": cid, "e": "unknown handler: " + name}
        else:
            reply = {"t": "err", "id": cid, "e": value[1]}
    await conn.send_line(json.dumps(reply))
