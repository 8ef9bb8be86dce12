# The OTA server: one coroutine per connection (docs/protocol.md).
#
# A connection starts in line mode (micro-ota compatible commands); the hello
# line "uota 1" switches it to frame mode. A watchdog drops any connection
# that makes no progress for sessionTimeout seconds, so an idle or slow client
# never holds up another one.
#
# This module stays loaded while the device is idle: it accepts connections,
# says hello, authenticates and dispatches. Every other request's code is
# loaded when a request needs it (commands.py, push.py, legacy.py) and
# unloaded once no connection is left (Server.idle()).
import asyncio
import json
import sys

from uota import crypto, floor, hal, log, settings, wire
from uota.errors import PushError, os_error

try:
    import deflate
except ImportError:
    deflate = None

LINE_BUFFER = 600  # line mode: lines are at most 512 bytes
MIN_FRAME = 1024  # the smallest frame size a low heap falls back to

# Requests that change the device. A device with a password or a signing key
# serves them only in an authenticated session, and only sealed to it: each
# carries "seq" (one more than the last) and ends with ',"seal":"<hex>"}', an
# HMAC under the session key of the request with that tail cut off
# (docs/security.md, src/protocol/session.rs).
STATE_OPS = ("rm", "reset", "wipe", "passwd", "floor", "begin", "file", "commit", "abort", "rekey", "call", "listen")
_MAC_TAIL = 75  # len(',"seal":"') + 64 + len('"}')
# An unauthenticated connection to a device with secrets must authenticate
# within this many ms, so floods of idle handshakes cannot fill the slots.
AUTH_DEADLINE_MS = 5000


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
        # The modules to keep loaded when idle (the runtime's, set by it);
        # None keeps everything loaded.
        self.resident = None
        self.idle_free = None  # free heap after the last idle(), in bytes

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
        s = _session()
        return s is not None and s.held_by(c) is not None

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
            s = _session()
            if s is not None:
                s.detach(conn)  # a resumable push stays on flash
            await conn.close()
            self.idle()

    def idle(self):
        """When no connection is left: unload what served them (see the top)."""
        if self.conns or self.stopping or self.resident is None:
            return
        s = _session()
        if s is not None and s.active is not None:
            return
        n = hal.unload(self.resident)
        self.idle_free = hal.mem_free()
        log.debug("idle: %d modules unloaded, %s bytes free" % (n, self.idle_free))

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
                self._frame_buffer(conn)
                await self._hello(conn)
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
            from uota import commands

            if not await commands.line_command(self, conn, cmd, arg):
                return

    def _frame_buffer(self, conn):
        """Give conn its frame-mode buffer: max_frame bytes, or less when the
        heap cannot spare them now (the hello tells the host the size)."""
        size = self.bufsize
        while True:
            try:
                conn.grow(size)
                break
            except MemoryError:
                if size <= MIN_FRAME:
                    raise
                size //= 2
        if len(conn.buf) < conn.max_frame:
            conn.max_frame = len(conn.buf)
            log.warn("low on RAM: frames of at most %d bytes" % conn.max_frame)

    async def _hello(self, conn):
        conn.nonce = crypto.random_hex(16)
        info = {
            "proto": 1,
            "max_frame": conn.max_frame,
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
        # What `uota list` shows without a password: the active release and
        # whether it is still pending (loaded here, unloaded when idle).
        from uota import boot_state, release

        info["version"] = release.read_version()
        info["state"] = boot_state.current()["state"]
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
            if n > conn.max_frame:
                await conn.send_err("too_large", "frame of %d bytes; max_frame is %d" % (n, conn.max_frame))
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
            try:
                handler = _handler(op) if op.isalpha() and len(op) <= 32 else None
            except MemoryError as e:
                await self._no_memory(conn, op, e)
                return
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
                keep = await handler(self, conn, req)
            except PushError as e:
                await conn.send_err(e.code, e.msg)
                keep = True
            except OSError as e:
                # A filesystem error; if the link itself failed, sending
                # the reply raises again and ends the connection.
                pe = os_error(e)
                await conn.send_err(pe.code, pe.msg)
                keep = True
            except MemoryError as e:
                await self._no_memory(conn, op, e)
                return
            if keep is False:
                return

    async def _no_memory(self, conn, op, e):
        """Out of heap serving op, perhaps loading its code: drop this
        connection's push (the active release is untouched) and reply; the
        caller then ends the connection, so that idle() frees what it held."""
        s = _session()
        if s is not None:
            s.abandon(conn)
        log.error("out of memory serving " + op, e)
        await conn.send_err("no_memory", "the device ran out of RAM for %s; nothing was changed" % op)
        await conn.linger(200)

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

    async def op_bye(self, conn, req):
        """End this connection (a serial session returns to the REPL)."""
        await conn.send_ok()
        return False


def _session():
    """The push session module when a push has loaded it (no push runs
    without it), else None."""
    return sys.modules.get("uota.session")


# Requests served by a module loaded on demand: push.py has a push's
# requests; commands.py the rest.
_PUSH_OPS = ("begin", "file", "commit", "staged")


def _handler(op):
    """The function serving op (called as f(server, conn, req)), or None."""
    f = getattr(Server, "op_" + op, None)
    if f is not None:
        return f
    if op in _PUSH_OPS:
        if op == "begin":
            hal.forget("uota.commands")  # a push needs the RAM more
        from uota import push as mod
    else:
        from uota import commands as mod
    return getattr(mod, "op_" + op, None)
