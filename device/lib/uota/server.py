# The OTA server: one coroutine per connection (docs/protocol.md).
#
# A connection starts in line mode (micro-ota compatible commands); the hello
# line "uota 1" switches it to frame mode. A watchdog drops any connection
# that makes no progress for sessionTimeout seconds, so an idle or slow client
# never holds up another one.
import asyncio
import json
import os

from uota import boot_state, config, crypto, floor, fs, hal, log, paths, release, session, settings, wire
from uota import manifest as mf
from uota.errors import PushError, non_negative_int, os_error

try:
    import deflate
except ImportError:
    deflate = None

_DIR = 0x4000
LINE_BUFFER = 600  # line mode: lines are at most 512 bytes

# Requests that change the device. A device with a password or a signing key
# serves them only in an authenticated session, and only sealed to it: each
# carries "seq" (one more than the last) and ends with ',"seal":"<hex>"}', an
# HMAC under the session key of the request with that tail cut off
# (docs/security.md, src/protocol/session.rs).
STATE_OPS = ("rm", "reset", "wipe", "passwd", "floor", "begin", "file", "commit", "abort", "rekey")
_MAC_TAIL = 75  # len(',"seal":"') + 64 + len('"}')
# An unauthenticated connection to a device with secrets must authenticate
# within this many ms, so floods of idle handshakes cannot fill the slots.
AUTH_DEADLINE_MS = 5000
# A push session whose owner never authenticated (a device without secrets)
# is taken over by a new begin once it has made no progress for this long,
# so a client that opens a push and trickles cannot hold the only slot.
PUSH_STALL_MS = 2000


def _line_error(e):
    """A line-mode error reply: "error: <code>: <detail>"."""
    return "error: %s: %s" % (e.code, e.msg) if e.msg else "error: " + e.code


class Server:
    def __init__(self, cfg):
        self.cfg = cfg
        self.conns = []
        self.max_frame = cfg.max_frame
        self.bufsize = cfg.max_frame if cfg.max_frame > 1024 else 1024
        self.timeout_ms = cfg.session_timeout * 1000
        self.caps = ["deflate"] if deflate is not None else []
        self.listeners = []  # asyncio servers of the transports
        self.stopping = False

    def start(self):
        for w in self.warnings():
            log.warn("INSECURE: " + w)
        asyncio.create_task(self._watchdog())

    async def _watchdog(self):
        while True:
            await asyncio.sleep_ms(500)
            now = hal.ticks_ms()
            guarded = self.cfg.verifier or self.cfg.signing_key
            for c in self.conns:
                if c.task is None:
                    continue
                late = guarded and not c.authed and hal.ticks_diff(now, c.opened) > AUTH_DEADLINE_MS
                if late and not self._holds_push(c):
                    log.debug("dropping a connection that did not authenticate in time")
                elif hal.ticks_diff(now, c.last) > self.timeout_ms:
                    log.debug("dropping an idle connection")
                else:
                    continue
                c.cancel()

    def _holds_push(self, c):
        return session.held_by(c) is not None

    # --- connections --------------------------------------------------------

    async def handle(self, reader, writer):
        """asyncio.start_server callback (reader and writer are one Stream)."""
        await self.serve(reader)

    async def serve(self, stream):
        """Serve one connection on any stream with async readinto/write/drain."""
        sock = getattr(stream, "s", None)
        if self.stopping:
            try:
                await stream.wait_closed()
            except Exception:
                pass
            return
        if len(self.conns) >= self.cfg.max_conns:
            self._evict()
        if sock is not None:
            try:
                sock.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY
            except Exception:
                pass
        conn = wire.Conn(stream, LINE_BUFFER, self.max_frame)
        conn.task = asyncio.current_task()
        self.conns.append(conn)
        try:
            await self._lines(conn)
        except wire.Closed:
            pass
        except asyncio.CancelledError:
            log.debug("connection timed out")
        except wire.FrameError as e:
            try:
                await conn.send_line("error: " + e.msg)
            except Exception:
                pass
        except OSError as e:
            log.debug("connection error: %s" % (e,))
        except Exception as e:
            log.error("connection failed", e)
        finally:
            conn.task = None
            self.conns.remove(conn)
            session.detach(conn)  # a resumable push stays on flash
            await conn.close()

    def _evict(self):
        """At the connection limit, make room for a new connection. Never an
        authenticated one while others are not, never the push owner: among
        the rest, the one that has made the most unauthenticated requests
        (a flooder's pings), then the least recently active."""
        victim = None
        best = None
        now = hal.ticks_ms()
        for c in self.conns:
            if c.task is None or self._holds_push(c):
                continue
            rank = (0 if c.authed else 1, c.requests, hal.ticks_diff(now, c.last))
            if best is None or rank > best:
                victim, best = c, rank
        if victim is not None:
            log.debug("connection limit: dropping one")
            victim.cancel()

    # --- line mode ----------------------------------------------------------

    async def _lines(self, conn):
        cfg = self.cfg
        while True:
            raw = await conn.read_line()
            try:
                text = raw.decode()
            except UnicodeError:
                await conn.send_line("unknown")
                continue
            parts = text.split(" ", 1)
            cmd = parts[0]
            arg = parts[1].strip() if len(parts) > 1 else ""
            if cmd == "uota":
                await self._hello(conn)
                conn.grow(self.bufsize)
                await self._frames(conn)
                return
            if text == "ping":
                await conn.send_line("pong")
                continue
            if cfg.verifier and not conn.authed:
                # micro-ota sends its plaintext password as the first line.
                if cfg.legacy and cfg.password_matches(bytes(raw)):
                    conn.authed = True
                    await conn.send_line("ok")
                    continue
                await asyncio.sleep_ms(500)
                await conn.send_line("denied")
                return
            if not await self._line_command(conn, cmd, arg):
                return

    async def _line_command(self, conn, cmd, arg):
        """Run one micro-ota line command; False closes the connection."""
        if cmd == "version":
            await conn.send_line(release.version_json())
        elif cmd == "ls":
            try:
                entries = self.list_dir(arg or "/")
            except PushError as e:
                await conn.send_line(_line_error(e))
                return True
            for name, kind, size in entries:
                await conn.send_line(name + "/" if kind == "d" else name)
            await conn.send_line("")
        elif cmd == "get":
            try:
                f, size = self.open_check(arg)
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
                self.remove(arg)
            except PushError as e:
                await conn.send_line(_line_error(e))
                return True
            await conn.send_line("ok")
        elif cmd == "reset":
            self.stop_serving(conn)
            await conn.send_line("ok")
            await self.reset(conn)
        elif cmd in ("stream_ota", "start_ota"):
            if not self.cfg.legacy:
                await conn.send_line("error: legacy disabled")
                return True
            from uota import legacy

            conn.grow(self.bufsize)
            if cmd == "stream_ota":
                return await legacy.stream_ota(self, conn, arg)
            return await legacy.start_ota(self, conn)
        else:
            await conn.send_line("unknown")
        return True

    async def _hello(self, conn):
        conn.nonce = crypto.random_hex(16)
        info = {
            "proto": 1,
            "max_frame": self.max_frame,
            "auth": bool(self.cfg.verifier),
            "auth_with": self.cfg.auth_methods(),
            "kdf": self.cfg.kdf,
            "nonce": conn.nonce,
            "caps": self.caps,
            "runtime": settings.RUNTIME_VERSION,
            "legacy": self.cfg.legacy,
            "id": hal.unique_id(),
            "release": floor.highest(),
        }
        await conn.send_line("uota 1 " + json.dumps(info))

    # --- frame mode ---------------------------------------------------------

    async def _frames(self, conn):
        while True:
            t, n = await conn.read_header()
            if t != wire.REQ:
                if t in (wire.RES, wire.DATA):
                    msg = "expected a request frame"
                else:
                    msg = "unknown frame type %d" % t
                await conn.send_err("bad_frame", msg)
                await conn.linger()
                return
            if n > self.max_frame:
                await conn.send_err("too_large", "frame of %d bytes; max_frame is %d" % (n, self.max_frame))
                await conn.linger()
                return
            payload = await conn.read_payload(n)
            conn.progress()
            try:
                req = json.loads(payload)
            except (ValueError, UnicodeError):
                req = None
            if not isinstance(req, dict) or not isinstance(req.get("op"), str):
                await conn.send_err("bad_request", "a request is a JSON object with an op")
                continue
            op = req["op"]
            handler = getattr(self, "op_" + op, None) if op.isalpha() and len(op) <= 32 else None
            if handler is None:
                await conn.send_err("unknown_op", op)
                continue
            if not conn.authed:
                conn.requests += 1
            if self.cfg.verifier and not conn.authed and op not in ("auth", "ping"):
                await conn.send_err("auth_required", "authenticate first")
                continue
            if op in STATE_OPS and (self.cfg.verifier or self.cfg.signing_key):
                if not conn.authed:
                    # A key-only device: reads are open, changes need the key.
                    if op == "begin":
                        await conn.send_err("sig_required", "this device takes releases only from a host authenticated with its signing key")
                    else:
                        await conn.send_err("auth_required", "this device has a signing key: authenticate with it first")
                    await conn.linger(200)
                    return
                if not self._bound(conn, payload, req):
                    log.warn("refused a request not bound to the session: %s" % op)
                    await conn.send_err("unbound", "%s is not sealed to this session (seq and seal)" % op)
                    await conn.linger(200)
                    return
            try:
                keep = await handler(conn, req)
            except PushError as e:
                await conn.send_err(e.code, e.msg)
                keep = True
            except OSError as e:
                # A filesystem error; if the link itself failed, sending
                # the reply raises again and ends the connection.
                pe = os_error(e)
                await conn.send_err(pe.code, pe.msg)
                keep = True
            if keep is False:
                return

    # --- simple requests ----------------------------------------------------

    async def op_ping(self, conn, req):
        await conn.send_ok()

    def _bound(self, conn, payload, req):
        """Whether a state-changing request is sealed to this session with
        the next sequence number (see STATE_OPS)."""
        key = conn.skey
        n = len(payload)
        if key is None or n < _MAC_TAIL + 2:
            return False
        tail = bytes(payload[n - _MAC_TAIL :])
        if tail[:9] != b',"seal":"' or tail[-2:] != b'"}':
            return False
        mac = crypto.HmacSha256(key)
        mac.update(bytes(payload[: n - _MAC_TAIL]))
        mac.update(b"}")
        if not crypto.equal(mac.hexdigest(), tail[9:73]):
            return False
        seq = req.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq != conn.seq + 1:
            return False
        conn.seq = seq
        return True

    async def op_auth(self, conn, req):
        cfg = self.cfg
        if not (cfg.verifier or cfg.signing_key):
            conn.authed = True  # nothing to prove; requests stay unbound
            await conn.send_ok()
            return True
        method = req.get("with", "password")
        if method == "key":
            secret = cfg.signing_key.encode() if cfg.signing_key else b""
            context = b"uota-auth-key:v2:"
        else:
            secret = cfg.verifier_bytes()
            context = b"uota-auth:v2:"
        dev_id = hal.unique_id().encode()
        got = req.get("mac")
        if secret and conn.nonce and isinstance(got, str):
            mac = crypto.HmacSha256(secret)
            mac.update(context)
            mac.update(conn.nonce.encode())
            mac.update(b":")
            mac.update(dev_id)
            if crypto.equal(mac.hexdigest(), got.lower()):
                conn.authed = True
                skey = crypto.HmacSha256(secret)
                skey.update(b"uota-session:v2:")
                skey.update(conn.nonce.encode())
                skey.update(b":")
                skey.update(dev_id)
                conn.skey = skey.digest()
                conn.seq = 0
                await conn.send_ok()
                return True
        await asyncio.sleep_ms(500)
        if method == "key":
            await conn.send_err("auth_failed", "wrong signing key" if secret else "this device has no signing key")
        else:
            await conn.send_err("auth_failed", "wrong password" if secret else "this device has no password")
        await conn.linger(200)
        return False

    async def op_info(self, conn, req):
        version = release.read_version()
        await conn.send_ok(
            version=version,
            files=mf.count(),
            platform=hal.platform(),
            mpy=hal.mpy_version(),
            mem_free=hal.mem_free(),
            fs_free=hal.fs_free(),
            runtime=settings.RUNTIME_VERSION,
            uptime_ms=hal.uptime_ms(),
            boot=boot_state.boot_info(),
            release=boot_state.release_info(version),
            id=hal.unique_id(),
            highest_release=floor.highest(),
            legacy=self.cfg.legacy,
            password=bool(self.cfg.verifier),
            signing_key=bool(self.cfg.signing_key),
            warnings=self.warnings(),
        )

    def warnings(self):
        """What an owner must hear about this device's protection."""
        out = []
        if not self.cfg.verifier and not self.cfg.signing_key:
            out.append("no password and no signing key: anyone on the network can replace the app")
        elif not self.cfg.verifier:
            out.append("no password: anyone on the network can read files (changes need the signing key)")
        if self.cfg.legacy:
            out.append("legacy mode: micro-ota's plaintext password line and unbound sessions are accepted")
        return out

    def list_dir(self, path):
        path = paths.check(path, allow_root=True)
        full = "/" + path
        if not fs.is_dir(full):
            if fs.exists(full):
                raise PushError("bad_request", "not a folder: " + path)
            raise PushError("not_found", path)
        out = []
        for e in os.ilistdir(full):
            name = e[0]
            child = full.rstrip("/") + "/" + name
            kind = e[1]
            if not kind:
                kind = _DIR if fs.is_dir(child) else 0x8000
            if kind & _DIR:
                out.append([name, "d", 0])
            else:
                size = e[3] if len(e) > 3 and e[3] >= 0 else fs.stat_size(child)
                out.append([name, "f", size or 0])
        out.sort()
        return out

    async def op_ls(self, conn, req):
        await conn.send_ok(entries=self.list_dir(req.get("path", "/")))

    def open_check(self, path):
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

    async def op_manifest(self, conn, req):
        """The active release's manifest: RES with its version and entry
        count, then its lines, streamed (never the whole file in RAM)."""
        await conn.send_ok(version=release.read_version(), count=mf.count())
        await conn.send_lines(mf.lines())

    async def op_summary(self, conn, req):
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

    async def op_staged(self, conn, req):
        from uota import push

        return await push.staged(self, conn, req)

    async def op_get(self, conn, req):
        f, size = self.open_check(req.get("path"))
        try:
            await conn.send_ok(size=size)
        except BaseException:
            f.close()
            raise
        await conn.send_file(f)

    def remove(self, path):
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

    async def op_rm(self, conn, req):
        self.remove(req.get("path"))
        await conn.send_ok()

    def stop_serving(self, keep=None):
        """A reset is coming: stop listening and drop every connection but
        keep, so that no client talks to this boot after the point of no
        return (a host waiting for the new release must reach the next boot)."""
        if self.stopping:
            return
        self.stopping = True
        for lst in self.listeners:
            try:
                lst.close()
            except Exception:
                pass
        for c in self.conns:
            if c is not keep:
                c.cancel()

    async def reset(self, conn):
        """Close conn (its last reply already sent) and reset the board."""
        self.stop_serving(conn)
        await conn.close()
        if not hal.UNIX:
            await asyncio.sleep_ms(300)  # let the network stack send the reply
        log.info("reset")
        hal.reset()

    async def op_reset(self, conn, req):
        self.stop_serving(conn)
        await conn.send_ok()
        await self.reset(conn)

    async def op_wipe(self, conn, req):
        from uota import journal

        session.ensure_free(conn)
        session.abandon(conn)
        journal.wipe()
        await conn.send_ok()

    async def op_passwd(self, conn, req):
        v = req.get("verifier")
        if not isinstance(v, str) or not config.valid_verifier(v):
            raise PushError("bad_request", "verifier must be pbkdf2-sha256$<iter>$<salt>$<hash>, sha256 hex or empty")
        self.cfg.set_verifier(v)
        await conn.send_ok()

    async def op_floor(self, conn, req):
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

    async def op_rekey(self, conn, req):
        """Replace the signing key with one sent encrypted under the current
        key and bound to this connection's nonce (docs/security.md)."""
        from uota import trust

        key = self.cfg.signing_key
        if not key:
            raise PushError("no_key", "this device has no signing key; provision one over USB")
        try:
            new = trust.open_rekey(key, conn.nonce, req.get("key"), req.get("mac"))
        except PushError as e:
            if e.code == "sig_mismatch":
                await asyncio.sleep_ms(500)
            raise
        self.cfg.set_signing_key(new)
        log.info("signing key rotated")
        await conn.send_ok(proof=trust.rekey_proof(new, conn.nonce))

    async def op_bye(self, conn, req):
        """End this connection (a serial session returns to the REPL)."""
        await conn.send_ok()
        return False

    async def op_abort(self, conn, req):
        session.ensure_free(conn)
        if session.active is not None:
            session.abandon(conn)
        else:
            session.discard()
        await conn.send_ok()

    # --- a push (uota/push.py, loaded on first use) -------------------------

    def _take_over_stalled_push(self, conn):
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

    async def op_begin(self, conn, req):
        from uota import push

        self._take_over_stalled_push(conn)
        return await push.begin(self, conn, req)

    async def op_file(self, conn, req):
        from uota import push

        return await push.file(self, conn, req)

    async def op_commit(self, conn, req):
        from uota import push

        return await push.commit(self, conn, req)
