# The app's output for RemoteIO listeners (docs/remoteio.md): while
# capture is on (config remoteioBuffer > 0), print() also puts what it prints
# into a ring of remoteioBuffer bytes, one entry per print with a sequence
# number (from 0 at every boot). Listeners (the server's `listen` request,
# commands.py) get what the ring holds, then live entries; the app never
# waits for them: when the ring is full the oldest entries go, and a listener
# that had not read them is told how many it missed.
#
# This module stays loaded while capture is on, so it holds only the ring;
# the calls' code (remoteio.py) is loaded when an app or a call needs it.
import builtins
import sys

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

try:
    import _thread

    _lock = _thread.allocate_lock()
except ImportError:
    _lock = None


MIN_RING = 256  # a heap too short for this many bytes captures nothing


def capture(limit):
    """Capture print() into a ring of about limit bytes (0: not at all).
    A heap that cannot spare them gets a smaller ring, or none: output
    capture never stops a boot. Returns the ring's size."""
    global _limit, _buf, _head, _used, _count, _first
    n = int(limit)
    while n >= MIN_RING:
        try:
            buf = bytearray(n)
        except MemoryError:
            n //= 2
            continue
        _buf, _limit = buf, n
        _first += _count  # a new ring, empty; numbering goes on
        _head = _used = _count = 0
        builtins.print = _captured
        return n
    return 0


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
