# The RemoteIO output ring (device/lib/uota/output.py) on MicroPython:
# entries read back in order across wrap-arounds, with what was dropped
# counted, long entries cut. Run by tests/remoteio.rs with the rendered runtime.
import sys
sys.path.insert(0, "lib")
from uota import output as r
assert r.capture(100) == 0, 'below MIN_RING: no capture'
# More than the heap holds: a smaller ring, never a MemoryError.
big = r.capture(1 << 40)
assert 256 <= big < (1 << 40), big
assert r.capture(300) == 300
import builtins
builtins.print = r._print  # keep the test's own output out of the ring
texts = []
for i in range(300):
    t = ("e%d:" % i) + "x" * (i % 70) + "é\n"
    texts.append(t)
    r.write(t)
    # The newest entries are always readable, in order.
    missed, start, got = r.since(0, 10000)
    assert start + len(got) == i + 1, (i, start, len(got))
    assert got == texts[start:], (i, got, texts[start:])
    assert missed == start
# Reading from the middle, with a budget.
nxt = r.next_seq()
m, s, g = r.since(nxt - 2, 1)
assert (m, s, len(g)) == (0, nxt - 2, 1)
# A huge entry is cut, never larger than the ring.
r.write("y" * 1000 + "\n")
m, s, g = r.since(r.next_seq() - 1, 10000)
assert len(g) == 1 and g[0].endswith("...\n") and len(g[0]) < 300, g
print("ring ok", r._used, r._count)
