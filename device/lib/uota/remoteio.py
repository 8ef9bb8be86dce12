# RemoteIO: the app's output for listeners, and calls to handlers the app
# registers (docs/remoteio.md).
#
#   from uota import remoteio
#
#   @remoteio.on("set_led")
#   def set_led(state=False):
#       led.value(state)
#       return {"led": state}
#
# Output: while RemoteIO is on (config remoteioBuffer > 0), print() also puts
# what it prints into a ring buffer of remoteioBuffer bytes, each print one
# entry with a sequence number (from 0 at every boot). Listeners (the OTA
# server's `listen` request) get what the ring holds, then live entries; the
# app never waits for them: when the ring is full the oldest entries go, and
# a listener that had not read them is told how many it missed.
#
# Calls: the server's `call` request runs a handler with the JSON arguments
# as keyword arguments; the reply carries its JSON result, or the exception's
# type and message. The results of the last RESULTS call ids are kept, so a
# call resent after a link drop (same id) gets its first reply and does not
# run twice — within one boot: the replies carry the boot count, so the host
# can tell when a device restarted between a call and its answer.
import asyncio
import builtins
import sys

from uota import hal

RESULTS = 64
CALL_TIMEOUT_MS = 10000  # an async handler that never returns

_handlers = {}
_limit = 0  # ring size in bytes; 0: output is not captured
# The ring: one bytearray of _limit bytes holding entries back to back (a
# 2-byte length, then the UTF-8 text), wrapping around; no allocation per
# print. _first is the sequence number of the oldest entry.
_buf = None
_head = 0  # offset of the oldest entry
_used = 0  # bytes held
_count = 0  # entries held
_first = 0
_print = builtins.print
_results = {}  # call id -> (ok, value) or None while it runs
_order = []  # call ids, oldest first

try:
    import _thread

    _lock = _thread.allocate_lock()
except ImportError:
    _lock = None


def on(name):
    """Register the decorated function (sync or async) as the handler of
    calls named name; it gets the call's arguments as keyword arguments."""

    def register(fn):
        _handlers[name] = fn
        return fn

    return register


def handler(name):
    """The handler registered for name (built-ins included), or None."""
    return _handlers.get(name) or _BUILTINS.get(name)


# --- output -------------------------------------------------------------------


def start(limit):
    """Capture print() into a ring of limit bytes (0: not at all)."""
    global _limit, _buf
    _limit = int(limit)
    if _limit > 0:
        _limit = max(_limit, 64)
        _buf = bytearray(_limit)
        builtins.print = _captured


def _captured(*args, sep=" ", end="\n", file=None):
    if file is not None and file is not sys.stdout:
        _print(*args, sep=sep, end=end, file=file)
        return
    text = sep.join([a if isinstance(a, str) else str(a) for a in args]) + end
    _print(text, end="")
    write(text)


def _put(pos, data):
    n = len(data)
    room = _limit - pos
    if n <= room:
        _buf[pos : pos + n] = data
    else:
        _buf[pos:] = data[:room]
        _buf[: n - room] = data[room:]


def _get(pos, n):
    end = pos + n
    if end <= _limit:
        return bytes(_buf[pos:end])
    return bytes(_buf[pos:]) + bytes(_buf[: end - _limit])


def _len_at(pos):
    return _buf[pos] | _buf[(pos + 1) % _limit] << 8


def write(text):
    """Put text into the ring as one entry (print() does it for the app)."""
    global _head, _used, _count, _first
    if _limit <= 0:
        return
    if len(text) > _limit // 2:
        text = text[: _limit // 8] + "...\n"
    data = text.encode()
    n = len(data)
    if n + 2 > _limit:
        data = data[: _limit - 2]
        n = len(data)
    if _lock:
        _lock.acquire()
    try:
        while _used + n + 2 > _limit:
            k = 2 + _len_at(_head)
            _head = (_head + k) % _limit
            _used -= k
            _count -= 1
            _first += 1
        tail = (_head + _used) % _limit
        _put(tail, bytes((n & 255, n >> 8)))
        _put((tail + 2) % _limit, data)
        _used += n + 2
        _count += 1
    finally:
        if _lock:
            _lock.release()


def next_seq():
    """The sequence number the next entry will get."""
    return _first + _count


def since(seq, budget):
    """(missed, first_seq, texts): the entries from seq on, up to about
    budget bytes; missed counts those before seq that the ring dropped."""
    if _lock:
        _lock.acquire()
    try:
        missed = _first - seq if seq < _first else 0
        start = seq + missed
        out = []
        if _limit <= 0:
            return missed, start, out
        pos = _head
        for _ in range(start - _first):  # skip what this listener has
            pos = (pos + 2 + _len_at(pos)) % _limit
        i = start - _first
        n = 0
        while i < _count and (n < budget or not out):
            k = _len_at(pos)
            out.append(_get((pos + 2) % _limit, k))
            n += k
            pos = (pos + 2 + k) % _limit
            i += 1
    finally:
        if _lock:
            _lock.release()
    return missed, start, [_text(b) for b in out]


def _text(b):
    try:
        return str(b, "utf-8")
    except UnicodeError:  # cut inside a character
        return "".join([chr(c) if c < 128 else "?" for c in b])


# --- calls ----------------------------------------------------------------------


def _remember(cid, result):
    if cid not in _results:
        _order.append(cid)
        while len(_order) > RESULTS:
            _results.pop(_order.pop(0), None)
    _results[cid] = result


async def call(cid, name, args):
    """Run the call cid once: (ok, value, duplicate). ok False: value is
    (error code, message, exception type). cid None: run it, remember
    nothing."""
    if cid is not None and cid in _results:
        while _results.get(cid, 1) is None:  # the first one still runs
            await asyncio.sleep_ms(20)
        done = _results.get(cid)
        if done is not None:
            return done[0], done[1], True
    fn = handler(name)
    if fn is None:
        return False, ("unknown_handler", "no handler named %s" % name, ""), False
    if cid is not None:
        _remember(cid, None)
    try:
        r = fn(**args)
        if hasattr(r, "send"):  # a coroutine: an async handler
            r = await asyncio.wait_for_ms(r, CALL_TIMEOUT_MS)
        if _plain(r):
            result = (True, r)
        else:
            result = (False, ("bad_result", "%s returned a %s, which JSON cannot hold" % (name, type(r).__name__), "TypeError"))
    except asyncio.TimeoutError:
        result = (False, ("call_timeout", "%s did not return within %d ms" % (name, CALL_TIMEOUT_MS), "TimeoutError"))
    except Exception as e:
        result = (False, ("call_failed", "%s: %s" % (type(e).__name__, e), type(e).__name__))
    if cid is not None:
        _remember(cid, result)
    return result[0], result[1], False


def _plain(v, depth=0):
    """Whether JSON holds v as it is (MicroPython's json.dumps writes the
    repr of anything else, which no host can parse)."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return True
    if depth > 20:
        return False
    if isinstance(v, (list, tuple)):
        return all(_plain(x, depth + 1) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _plain(x, depth + 1) for k, x in v.items())
    return False


def _version():
    from uota import release

    return release.read_version()


def _info():
    return {
        "version": _version(),
        "platform": hal.platform(),
        "id": hal.unique_id(),
        "mem_free": hal.mem_free(),
        "uptime_ms": hal.uptime_ms(),
        "handlers": sorted(_handlers),
    }


_BUILTINS = {
    "ping": lambda: "pong",
    "uptime_ms": hal.uptime_ms,
    "free_mem": hal.mem_free,
    "version": _version,
    "info": _info,
}
