# HMAC-SHA256 (MicroPython has no hmac module) and constant-time comparison.
import hashlib
import binascii

_BLOCK = 64


class HmacSha256:
    """Incremental HMAC-SHA256: update() any number of times, then digest()
    or hexdigest() once."""

    def __init__(self, key):
        if isinstance(key, str):
            key = key.encode()
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        pad = bytearray(_BLOCK)
        pad[0 : len(key)] = key
        inner = bytearray(_BLOCK)
        outer = bytearray(_BLOCK)
        for i in range(_BLOCK):
            inner[i] = pad[i] ^ 0x36
            outer[i] = pad[i] ^ 0x5C
        self._outer = bytes(outer)
        self._inner = hashlib.sha256(inner)

    def update(self, data):
        self._inner.update(data)

    def digest(self):
        return hashlib.sha256(self._outer + self._inner.digest()).digest()

    def hexdigest(self):
        return binascii.hexlify(self.digest()).decode()


def pbkdf2_sha256(password, salt, iterations):
    """PBKDF2-HMAC-SHA256, one 32-byte block. Only micro-ota's plaintext
    password line (legacy mode) needs it on the device: uota hosts send a MAC
    keyed with the stored result instead."""
    if isinstance(password, str):
        password = password.encode()
    h = HmacSha256(password)
    outer = h._outer
    # The keyed inner pad, so each round costs two SHA-256 runs, not four.
    key = password if len(password) <= _BLOCK else hashlib.sha256(password).digest()
    ipad = bytearray(_BLOCK)
    ipad[0 : len(key)] = key
    for i in range(_BLOCK):
        ipad[i] ^= 0x36
    ipad = bytes(ipad)
    sha = hashlib.sha256
    u = sha(outer + sha(ipad + salt + b"\x00\x00\x00\x01").digest()).digest()
    out = bytearray(u)
    for _ in range(iterations - 1):
        u = sha(outer + sha(ipad + u).digest()).digest()
        for i in range(32):
            out[i] ^= u[i]
    return bytes(out)


def equal(a, b):
    """Compare two str or bytes values in time independent of where they differ."""
    if isinstance(a, str):
        a = a.encode()
    if isinstance(b, str):
        b = b.encode()
    diff = len(a) ^ len(b)
    n = len(a) if len(a) < len(b) else len(b)
    for i in range(n):
        diff |= a[i] ^ b[i]
    return diff == 0


def random_hex(nbytes=16):
    import os

    try:
        raw = os.urandom(nbytes)
    except (AttributeError, OSError):
        import random
        import time

        random.seed(time.ticks_us())
        raw = bytes(random.getrandbits(8) for _ in range(nbytes))
    return binascii.hexlify(raw).decode()
