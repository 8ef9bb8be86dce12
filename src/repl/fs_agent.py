# uota's file agent: serves file operations on the console in a compact
# binary protocol (docs/repl.md, "Files over the REPL"). The host runs it from
# the raw REPL with two lines in front:
#     C = <bytes per grant>
#     T = <idle and stall timeout, ms>
# It needs nothing installed on the board; its RAM use is fixed (a few small
# buffers), whatever the size of the files. The host strips the comments and
# the indentation's depth (4 spaces become 1) before sending it.
import sys
import os
import gc
import select
import hashlib
import micropython

try:
    import deflate
    import io

    Z = io.IOBase
except ImportError:
    deflate = None
    Z = object
I = sys.stdin.buffer
O = sys.stdout.buffer
B = bytearray(C)
M = memoryview(B)
Q = bytearray(1024)
N = memoryview(Q)
V = select.poll()
V.register(I, select.POLLIN)
A = 0


def w(b):
    m = memoryview(b)
    while len(m):
        k = O.write(m)
        if k is None:
            break
        m = m[k:]


# Fill memoryview m (at most C bytes) from the host; one grant byte (0x06)
# goes back for every C bytes taken in.
def rd(m):
    global A
    n = len(m)
    k = 0
    while k < n:
        if not V.poll(T):
            raise OSError(110)
        r = I.readinto(m[k:])
        if not r:
            raise OSError(5)
        k += r
    A += n
    while A >= C:
        A -= C
        w(b"\x06")


def rdn(n):
    b = bytearray(n)
    m = memoryview(b)
    k = 0
    while k < n:
        j = min(C, n - k)
        rd(m[k : k + j])
        k += j
    return b


def rep(t, p=b""):
    n = len(p)
    w(bytes((t, n & 255, n >> 8)))
    if n:
        w(p)


def err(x, p):
    if isinstance(x, OSError) and x.args and isinstance(x.args[0], int):
        c = str(x.args[0])
    elif isinstance(x, str):
        c = x
    else:
        c = "exc " + repr(x)
    rep(88, (c + "\x00" + p).encode())


# The bytes of one file as they arrive: segments of <u16 length><bytes>, up to
# an empty one. DeflateIO reads them one byte at a time through readinto.
class S(Z):
    def __init__(s):
        s.p = 0
        s.e = 0
        s.l = 0
        s.z = 0

    def fill(s):
        while not s.l:
            if s.z:
                return False
            rd(M[:2])
            s.l = B[0] | B[1] << 8
            if not s.l:
                s.z = 1
                return False
        k = s.l if s.l < C else C
        rd(M[:k])
        s.l -= k
        s.p = 0
        s.e = k
        return True

    def readinto(s, b):
        p = s.p
        if p >= s.e:
            if not s.fill():
                return 0
            p = 0
        n = len(b)
        if n == 1:
            b[0] = B[p]
            s.p = p + 1
            return 1
        n = min(n, s.e - p)
        b[:n] = M[p : p + n]
        s.p = p + n
        return n


def ren(a, b):
    try:
        os.rename(a, b)
    except OSError:
        # FAT does not rename over a file.
        if os.stat(b)[0] & 0x4000:
            raise
        os.remove(b)
        os.rename(a, b)


def put(p):
    fl = p[0]
    path = bytes(p[2:]).decode()
    t = path + ".uota-tmp"
    e = None
    try:
        f = open(t, "wb")
    except OSError as x:
        f = None
        e = x
    h = hashlib.sha256()
    n = 0
    s = S()
    try:
        if f and fl & 1 and Z is object:
            e = "inflate"
        elif f and fl & 1:
            d = deflate.DeflateIO(s, deflate.RAW, p[1])
            while True:
                try:
                    k = d.readinto(Q)
                except Exception:
                    e = "inflate"
                    break
                if not k:
                    break
                m = N[:k]
                try:
                    f.write(m)
                except OSError as x:
                    e = x
                    break
                h.update(m)
                n += k
            d = None
        elif f:
            while s.fill():
                m = M[: s.e]
                try:
                    f.write(m)
                except OSError as x:
                    e = x
                    break
                h.update(m)
                n += s.e
        while s.fill():
            pass
        rd(M[:36])
    except BaseException:
        # The host went silent mid-file: no temporary file is left behind.
        if f:
            f.close()
            os.remove(t)
        raise
    if f:
        try:
            f.close()
        except OSError as x:
            if e is None:
                e = x
    if e is None and (h.digest() != bytes(M[:32]) or n != (B[32] | B[33] << 8 | B[34] << 16 | B[35] << 24)):
        e = "sha"
    if e is None:
        try:
            ren(t, path)
        except OSError as x:
            e = x
    if e is None:
        rep(75)
        return
    if f:
        try:
            os.remove(t)
        except OSError:
            pass
    err(e, path)


def get(path):
    try:
        f = open(path, "rb")
        z = os.stat(path)[6]
    except OSError as x:
        err(x, path)
        return
    rep(83, str(z).encode())
    h = hashlib.sha256()
    while True:
        k = f.readinto(Q)
        if not k:
            break
        m = N[:k]
        h.update(m)
        w(bytes((68, k & 255, k >> 8)))
        w(m)
    f.close()
    rep(72, h.digest())


def sha(path):
    h = hashlib.sha256()
    n = 0
    try:
        with open(path, "rb") as f:
            while True:
                k = f.readinto(Q)
                if not k:
                    break
                h.update(N[:k])
                n += k
    except OSError as x:
        err(x, path)
        return
    rep(75, h.digest() + str(n).encode())


def stat(path):
    try:
        st = os.stat(path)
    except OSError as x:
        err(x, path)
        return
    rep(75, ("%d %d %d" % (st[0], st[6], st[8])).encode())


def ls(path):
    b = path.rstrip("/") + "/"
    try:
        for x in os.ilistdir(path):
            nm = x[0]
            ty = x[1]
            z = x[3] if len(x) > 3 else -1
            if ty not in (0x4000, 0x8000) or (z < 0 and ty == 0x8000):
                st = os.stat(b + nm)
                ty = st[0] & 0xF000
                z = st[6]
            if ty == 0x4000:
                z = 0
            rep(69, ("%d %d %s" % (ty == 0x4000, z, nm)).encode())
    except OSError as x:
        err(x, path)
        return
    rep(75)


def mk(path):
    q = ""
    for part in path.split("/"):
        if part:
            q += "/" + part
            try:
                os.mkdir(q)
            except OSError as x:
                if x.args[0] != 17:
                    err(x, q)
                    return
    try:
        if not os.stat(q or "/")[0] & 0x4000:
            err(OSError(20), q)
            return
    except OSError as x:
        err(x, q)
        return
    rep(75)


# A few names of a folder at a time, so that RAM does not grow with it; the
# listing is always read to its end (littlefs then closes the folder).
def names(p):
    o = []
    for x in os.ilistdir(p):
        if len(o) < 8:
            o.append((x[0], x[1]))
    return o


def rmt(p):
    b = p.rstrip("/") + "/"
    while True:
        l = names(p)
        if not l:
            break
        for nm, ty in l:
            if ty == 0x4000:
                rmt(b + nm)
            else:
                os.remove(b + nm)
    if b != "/":
        os.rmdir(p)


def rm(p):
    path = bytes(p[1:]).decode()
    try:
        if os.stat(path)[0] & 0x4000:
            if p[0] & 1:
                rmt(path)
            else:
                os.rmdir(path)
        else:
            os.remove(path)
    except OSError as x:
        err(x, path)
        return
    rep(75)


def free(path):
    gc.collect()
    try:
        s = os.statvfs(path)
    except OSError as x:
        err(x, path)
        return
    z = s[1] or s[0]
    rep(75, ("%d %d %d %d" % (z * s[2], z * s[4], gc.mem_free(), gc.mem_alloc())).encode())


def serve():
    while True:
        try:
            rd(M[:3])
        except OSError:
            return
        op = B[0]
        n = B[1] | B[2] << 8
        p = rdn(n) if n else b""
        if op == 80:
            put(p)
        elif op == 81:
            rep(75)
            return
        elif op == 82:
            rm(p)
        else:
            path = bytes(p).decode()
            if op == 71:
                get(path)
            elif op == 72:
                sha(path)
            elif op == 83:
                stat(path)
            elif op == 76:
                ls(path)
            elif op == 77:
                mk(path)
            elif op == 70:
                free(path)
            else:
                err("op", str(op))
                return


def main():
    tc = None
    try:
        import termios

        tc = termios.tcgetattr(0)
        termios.setraw(0)
    except Exception:
        tc = None
    micropython.kbd_intr(-1)
    try:
        gc.collect()
        w(("uota-fs:1 %d %d %d\n" % (deflate is not None and Z is not object, gc.mem_free(), C)).encode())
        serve()
    finally:
        micropython.kbd_intr(3)
        if tc is not None:
            termios.tcsetattr(0, termios.TCSANOW, tc)


main()
