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
import sys
import select
import asyncio

from uota import config, fs, hal, log, server
from uota.layout import SERIAL_SESSION


class _Console:
    """The console as a stream with async readinto/write/drain."""

    def __init__(self):
        self.inp = sys.stdin.buffer
        self.out = sys.stdout.buffer
        self.poll = select.poll()
        self.poll.register(self.inp, select.POLLIN)

    def _ready(self):
        for _, ev in self.poll.poll(0):
            if ev & select.POLLIN:
                return True
        return False

    async def readinto(self, buf):
        while not self._ready():
            await asyncio.sleep_ms(1)
        if hal.UNIX:
            # The tty returns what is there without waiting (VMIN = 0, see
            # _console_raw), which ends the stream's read loop early.
            return self.inp.readinto(buf) or 0
        # Board consoles block until the whole buffer is full, so take the
        # bytes that are waiting one by one.
        mv = memoryview(buf)
        n = 0
        while n < len(buf) and self._ready():
            got = self.inp.readinto(mv[n : n + 1])
            if not got:
                break
            n += got
        return n

    def write(self, data):
        mv = memoryview(data)
        while len(mv):
            k = self.out.write(mv)
            if k is None:
                k = len(mv)
            mv = mv[k:]

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


def arm():
    """Make the next boot a serial session (called from the raw REPL)."""
    with open(SERIAL_SESSION, "w") as f:
        f.write("1")
    return "uota-serial:armed"


def serve_at_boot():
    """The armed boot: serve the session, then reset into a normal boot.
    Never returns."""
    fs.remove_quiet(SERIAL_SESSION)  # first: a crash in the session must not loop
    try:
        serve(ready=b"uota-serial:ready\n")
    except Exception as e:
        log.error("serial session failed", e)
    hal.soft_reset()


def serve(ready=None):
    """Serve one OTA session on the console, then return. `ready` is written
    once the console is raw (making it raw may drop input that came before)."""
    cfg = config.load()
    srv = server.Server(cfg)
    asyncio.new_event_loop()  # nothing left over from an interrupted loop
    saved = _console_raw()
    log.quiet(True)  # log lines would land in the middle of the frames
    try:
        console = _Console()
        if ready:
            console.write(ready)
        asyncio.run(_session(srv, console))
    finally:
        log.quiet(False)
        _console_restore(saved)


async def _session(srv, console):
    srv.start()
    await srv.serve(console)
    if hal.reset_requested():
        hal.reset()
