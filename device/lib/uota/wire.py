# One connection: its byte stream with a fixed receive buffer shared by line
# mode and frame mode, the writers for lines, frames and DATA streams, and
# what the server knows about the peer (docs/protocol.md 1-2).
#
# Reads never allocate per byte: data lands in one preallocated buffer with
# readinto, and stream payloads are handed out as memoryview slices of it.
import asyncio
import gc
import json

from uota import hal

REQ = 1
RES = 2
DATA = 3

MAX_LINE = 512
# A connection shows progress (resetting its idle timer) only by completing a
# line or request, or by delivering this many bytes: a peer that trickles a
# byte now and then (slowloris) still times out.
PROGRESS_BYTES = 256


class Closed(Exception):
    """The peer closed the connection."""


class FrameError(Exception):
    def __init__(self, code, msg):
        super().__init__(msg)
        self.code = code
        self.msg = msg


class Conn:
    def __init__(self, stream, bufsize, max_frame):
        self.s = stream
        self.buf = bytearray(bufsize)
        self.mv = memoryview(self.buf)
        self.start = 0
        self.end = 0
        self.max_frame = max_frame  # the largest frame either side sends
        self.opened = hal.ticks_ms()
        self.last = self.opened  # last progress, for the idle watchdog
        self.unmarked = 0  # bytes received since the last progress mark
        self.task = None  # the asyncio task serving it
        self.requests = 0  # served before authenticating (eviction order)
        self.authed = False
        self.nonce = ""
        self.skey = None  # session key after auth (binds state-changing requests)
        self.seq = 0  # sequence number of the last bound request
        self._readinto = getattr(stream, "readinto", None)

    # --- reading ----------------------------------------------------------------

    def avail(self):
        return self.end - self.start

    def grow(self, size):
        """Switch to a bigger receive buffer (line mode starts with a small
        one; frame mode and pushes need max_frame)."""
        if size <= len(self.buf):
            return
        try:
            buf = bytearray(size)
        except MemoryError:
            gc.collect()
            buf = bytearray(size)
        n = self.end - self.start
        buf[0:n] = self.mv[self.start : self.end]
        self.buf = buf
        self.mv = memoryview(buf)
        self.start, self.end = 0, n

    async def _fill(self):
        """Receive more bytes at the end of the buffer (compacting it first
        when the tail is full)."""
        if self.start == self.end:
            self.start = self.end = 0
        elif self.end == len(self.buf):
            n = self.end - self.start
            self.buf[0:n] = self.mv[self.start : self.end]
            self.start, self.end = 0, n
        if self._readinto is not None:
            k = await self._readinto(self.mv[self.end :])
        else:  # streams without readinto
            data = await self.s.read(len(self.buf) - self.end)
            k = len(data) if data else 0
            if k:
                self.buf[self.end : self.end + k] = data
        if not k:
            raise Closed()
        self.end += k
        self.unmarked += k
        if self.unmarked >= PROGRESS_BYTES:
            self.progress()

    def progress(self):
        """Mark progress now (the idle watchdog counts from here)."""
        self.unmarked = 0
        self.last = hal.ticks_ms()

    async def need(self, n):
        """Make n bytes available contiguously at buf[start:start+n]."""
        if len(self.buf) - self.start < n:
            k = self.end - self.start
            self.buf[0:k] = self.mv[self.start : self.end]
            self.start, self.end = 0, k
        while self.end - self.start < n:
            await self._fill()

    async def take(self, n):
        """The next n bytes (n <= buffer size) as a new bytes object."""
        await self.need(n)
        b = bytes(self.mv[self.start : self.start + n])
        self.start += n
        return b

    async def ready(self):
        """Wait until at least one byte is buffered at buf[start:end]."""
        if self.start == self.end:
            await self._fill()

    async def piece(self, n):
        """A memoryview of the next 1..n bytes; valid until the next read."""
        if self.start == self.end:
            await self._fill()
        k = self.end - self.start
        if k > n:
            k = n
        v = self.mv[self.start : self.start + k]
        self.start += k
        return v

    async def skip(self, n):
        while n:
            n -= len(await self.piece(n))

    async def read_line(self, maxlen=MAX_LINE):
        """One line as bytes, without \\n and a trailing \\r."""
        scanned = self.start
        while True:
            i = self.buf.find(b"\n", scanned, self.end)
            if i >= 0:
                line = bytes(self.mv[self.start : i])
                self.start = i + 1
                if line.endswith(b"\r"):
                    line = line[:-1]
                self.progress()
                return line
            if self.end - self.start > maxlen:
                raise FrameError("bad_request", "line longer than %d bytes" % maxlen)
            scanned = self.end
            before = self.start
            await self._fill()
            scanned -= before - self.start  # the buffer may have moved

    async def read_header(self):
        """(type, length) of the next frame."""
        await self.need(5)
        b = self.buf
        i = self.start
        t = b[i]
        n = (b[i + 1] << 24) | (b[i + 2] << 16) | (b[i + 3] << 8) | b[i + 4]
        self.start = i + 5
        return t, n

    async def read_payload(self, n):
        if n <= len(self.buf):
            return await self.take(n)
        out = bytearray(n)
        got = 0
        while got < n:
            p = await self.piece(n - got)
            out[got : got + len(p)] = p
            got += len(p)
        return out

    # --- writing ------------------------------------------------------------

    async def send(self, data):
        self.s.write(data)
        await self.s.drain()
        self.last = hal.ticks_ms()

    async def send_line(self, text):
        if isinstance(text, str):
            text = text.encode()
        await self.send(text + b"\n")

    async def send_frame(self, kind, payload=b""):
        n = len(payload)
        hdr = bytes((kind, (n >> 24) & 0xFF, (n >> 16) & 0xFF, (n >> 8) & 0xFF, n & 0xFF))
        if n and n <= 512:
            await self.send(hdr + bytes(payload))
            return
        self.s.write(hdr)
        if n:
            self.s.write(payload)
        await self.s.drain()
        self.last = hal.ticks_ms()

    async def send_res(self, obj):
        await self.send_frame(RES, json.dumps(obj).encode())

    async def send_ok(self, **fields):
        fields["ok"] = True
        await self.send_res(fields)

    async def send_err(self, code, msg=""):
        await self.send_res({"ok": False, "err": code, "msg": msg})

    def _chunk(self):
        return self.max_frame if self.max_frame < 4096 else 4096

    async def send_file(self, f, raw=False):
        """Stream an open file (closed here): raw bytes, or DATA frames and
        the empty DATA frame that ends the stream. Never the whole file in RAM."""
        buf = bytearray(self._chunk())
        mv = memoryview(buf)
        try:
            while True:
                k = f.readinto(buf)
                if not k:
                    break
                if raw:
                    await self.send(mv[:k])
                else:
                    await self.send_frame(DATA, mv[:k])
        finally:
            f.close()
        if not raw:
            await self.send_frame(DATA)

    async def send_lines(self, lines):
        """Send text lines as a DATA stream, packed into frames of up to 4 KB
        (or max_frame), then the empty DATA frame."""
        limit = self._chunk()
        buf = bytearray()
        for line in lines:
            b = line.encode()
            if buf and len(buf) + len(b) > limit:
                await self.send_frame(DATA, buf)
                buf = bytearray()
            buf.extend(b)
        if buf:
            await self.send_frame(DATA, buf)
        await self.send_frame(DATA)

    async def linger(self, ms=1000):
        """Before closing after an error: swallow what the peer still sends for
        a moment, so that it reads the error instead of a reset."""
        deadline = hal.ticks_add(hal.ticks_ms(), ms)
        try:
            while True:
                left = hal.ticks_diff(deadline, hal.ticks_ms())
                if left <= 0:
                    return
                await asyncio.wait_for_ms(self.piece(4096), left)
        except Exception:
            return

    def cancel(self):
        """Stop serving this connection: cancel its task (once)."""
        t = self.task
        if t is not None:
            self.task = None
            t.cancel()

    async def close(self):
        try:
            await self.s.wait_closed()
        except Exception:
            pass
