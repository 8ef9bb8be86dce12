# OTA over the serial console. The host stops the app, and from the raw REPL
# arms a serial session (arm(): the flag file /ota_serial_session) and
# soft-resets the board. The next boot finds the flag before anything else
# starts (no app, no threads, no WiFi), prints "uota-serial:ready" and serves
# ONE connection of the usual OTA protocol (hello line, then frames;
# docs/protocol.md) on the console's stdin/stdout, until the host says `bye`,
# the session times out, or a commit resets the board; then the board resets
# into a normal boot. The boot guard does not count the serial boot. The
# console is made 8-bit clean first: Ctrl-C stops interrupting (kbd_intr)
# and, on the unix port, the terminal goes raw.
#
# Flow control (docs/protocol.md, "Flow control"): a UART drops what arrives
# while its receive buffer is full and the board is busy writing flash. When
# the host armed the session with a credit C, the console sends one grant
# byte (0x06) for every C bytes it took in, and the host never has more than
# its window in flight. Grants go out only where a line or a frame may
# start (_Grants), so they never split one.
import sys
import select
import asyncio

from uota import config, fs, hal, log, server
from uota.layout import SERIAL_SESSION

GRANT = b"\x06"
# The most a host may ask for per grant (as the file agent over the REPL).
MAX_CREDIT = 16384


class _Grants:
    """Where the console's output is, so that grants go out between lines
    (line mode) or frames (after the hello reply, a line starting with
    "uota "): type byte, 4-byte big-endian length, payload."""

    def __init__(self, credit):
        self.credit = credit
        self.taken = 0  # bytes taken in since the last grant
        self.owed = 0  # grants earned but not sent yet
        self.frames = False
        self.line = 0  # line mode: bytes of the current line seen (<= 5)
        self.hello = True  # the current line may still be the hello reply
        self.hdr = 0  # frame mode: header bytes of the current frame seen
        self.size = 0
        self.left = 0  # payload bytes still to come

    def took(self, n):
        self.taken += n
        while self.taken >= self.credit:
            self.taken -= self.credit
            self.owed += 1

    def boundary(self):
        if self.frames:
            return self.hdr == 0 and self.left == 0
        return self.line == 0

    def wrote(self, mv):
        i = 0
        n = len(mv)
        while i < n:
            if self.left:
                k = n - i
                if k > self.left:
                    k = self.left
                self.left -= k
                i += k
            elif self.frames:
                if self.hdr:
                    self.size = (self.size << 8) | mv[i]
                self.hdr += 1
                i += 1
                if self.hdr == 5:
                    self.hdr = 0
                    self.left = self.size
                    self.size = 0
            else:
                j = bytes(mv[i:]).find(b"\n")
                end = n if j < 0 else i + j
                if self.hello and self.line < 5:
                    k = 5 - self.line
                    if k > end - i:
                        k = end - i
                    if bytes(mv[i : i + k]) != b"uota "[self.line : self.line + k]:
                        self.hello = False
                self.line += min(end - i, 5)
                i = end
                if j >= 0:
                    i += 1
                    self.frames = self.hello and self.line >= 5
                    self.line = 0
                    self.hello = True


class _Console:
    """The console as a stream with async readinto/write/drain."""

    def __init__(self, credit=0):
        self.inp = sys.stdin.buffer
        self.out = sys.stdout.buffer
        self.poll = select.poll()
        self.poll.register(self.inp, select.POLLIN)
        # To sleep until input comes (asyncio's poller wakes the task), as
        # aiorepl waits for the console.
        self.waiter = asyncio.StreamReader(self.inp)
        self.grants = _Grants(credit) if credit else None

    def _ready(self):
        for _, ev in self.poll.poll(0):
            if ev & select.POLLIN:
                return True
        return False

    async def readinto(self, buf):
        mv = memoryview(buf)
        n = 0
        if not self._ready():
            # The first byte once it comes; no polling in between.
            n = await self.waiter.readinto(mv[:1]) or 0
            if not n:
                return 0
        if hal.UNIX:
            # The tty returns what is there without waiting (VMIN = 0, see
            # _console_raw), which ends the stream's read loop early.
            n += self.inp.readinto(mv[n:]) or 0
        else:
            # Board consoles block until the whole buffer is full, so take
            # the bytes that are waiting one by one.
            while n < len(buf) and self._ready():
                got = self.inp.readinto(mv[n : n + 1])
                if not got:
                    break
                n += got
        g = self.grants
        if g is not None and n:
            g.took(n)
            self._grant()
        return n

    def _grant(self):
        g = self.grants
        if g.owed and g.boundary():
            self._put(GRANT * g.owed)
            g.owed = 0

    def _put(self, mv):
        while len(mv):
            k = self.out.write(mv)
            if k is None:
                k = len(mv)
            mv = mv[k:]

    def write(self, data):
        mv = memoryview(data)
        self._put(mv)
        g = self.grants
        if g is not None:
            g.wrote(mv)
            self._grant()

    async def drain(self):
        pass

    async def wait_closed(self):
        pass


def _console_raw():
    """Make the console 8-bit clean; returns what _console_restore needs."""
    import micropython

    micropython.kbd_intr(-1)
    saved = None
    if hal.UNIX:
        try:
            import termios

            saved = termios.tcgetattr(0)
            termios.setraw(0)
            # VMIN = VTIME = 0: a read returns what is waiting at once (a
            # stream's readinto otherwise blocks until its buffer is full).
            attrs = termios.tcgetattr(0)
            attrs[6][5] = 0  # VTIME
            attrs[6][6] = 0  # VMIN
            termios.tcsetattr(0, termios.TCSANOW, attrs)
        except (ImportError, OSError, AttributeError):
            saved = None
    return saved


def _console_restore(saved):
    import micropython

    if saved is not None:
        import termios

        try:
            termios.tcsetattr(0, termios.TCSANOW, saved)
        except OSError:
            pass
    micropython.kbd_intr(3)


def arm(credit=0):
    """Make the next boot a serial session (called from the raw REPL); with
    a credit, the session paces the host with grants of that many bytes."""
    credit = int(credit)
    if credit:
        credit = max(64, min(credit, MAX_CREDIT))
    with open(SERIAL_SESSION, "w") as f:
        f.write("credit %d" % credit if credit else "1")
    if credit:
        return "uota-serial:armed credit=%d" % credit
    return "uota-serial:armed"


def _armed_credit():
    """The credit the session was armed with (0: none)."""
    try:
        with open(SERIAL_SESSION) as f:
            words = f.read().split()
        if len(words) == 2 and words[0] == "credit":
            return int(words[1])
    except (OSError, ValueError):
        pass
    return 0


def serve_at_boot():
    """The armed boot: serve the session, then reset into a normal boot.
    Never returns."""
    credit = _armed_credit()
    fs.remove_quiet(SERIAL_SESSION)  # first: a crash in the session must not loop
    try:
        serve(ready=b"uota-serial:ready\n", credit=credit)
    except Exception as e:
        log.error("serial session failed", e)
    hal.soft_reset()


def serve(ready=None, credit=0):
    """Serve one OTA session on the console, then return. `ready` is written
    once the console is raw (making it raw may drop input that came before);
    with a credit, the host's input is paced by grants."""
    cfg = config.load()
    srv = server.Server(cfg)
    asyncio.new_event_loop()  # nothing left over from an interrupted loop
    saved = _console_raw()
    log.quiet(True)  # log lines would land in the middle of the frames
    try:
        console = _Console()
        if ready:
            console.write(ready)
        if credit:
            console.grants = _Grants(credit)
        asyncio.run(_session(srv, console))
    finally:
        log.quiet(False)
        _console_restore(saved)


async def _session(srv, console):
    srv.start()
    await srv.serve(console)
    if hal.reset_requested():
        hal.reset()
