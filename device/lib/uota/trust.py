# What this device accepts as a release (docs/security.md): the header of the
# signed release payload and the signature over it, the release-number
# floor (floor.py), the compatibility fields, and key rotation. Imported on
# the first push or rekey, so a device that is only queried never loads it.
import sys
import binascii

from uota import crypto, floor, hal
from uota.errors import PushError

MAGIC = "uota-release-v1"
MAX_KEY = 128  # bytes of a signing key


def _text_list(v, what):
    if v is None:
        return []
    if not isinstance(v, list) or len(v) > 16:
        raise PushError("bad_request", "compat %s must be a list of at most 16 strings" % what)
    for s in v:
        if not isinstance(s, str) or not s or len(s) > 64 or "," in s:
            raise PushError("bad_request", "bad compat %s entry" % what)
        for c in s:
            if ord(c) < 32 or c == "\x7f":
                raise PushError("bad_request", "bad compat %s entry" % what)
    return v


def _version_tuple(s):
    if not isinstance(s, str) or not s or len(s) > 16:
        raise PushError("bad_request", "bad compat micropython version")
    out = []
    for part in s.split("."):
        if not part or not part.isdigit():
            raise PushError("bad_request", "bad compat micropython version")
        out.append(int(part))
    while len(out) < 3:
        out.append(0)
    return tuple(out)


class Claims:
    """The begin fields a release signature binds, checked against this
    device."""

    def __init__(self, req, version, mode, runtime, count, nonce):
        # Without a release number (an unsigned push from an older host) the
        # floor is not checked; signed pushes must carry one (push.py).
        self.numbered = "release" in req
        rel = req.get("release", 0)
        if isinstance(rel, bool) or not isinstance(rel, int) or rel < 0 or rel > floor.MAX_RELEASE:
            raise PushError("bad_request", "release must be an integer from 0 to 2^53")
        self.release = rel
        self.rollback = req.get("rollback") is True
        dev = req.get("device", "")
        if not isinstance(dev, str) or len(dev) > 64:
            raise PushError("bad_request", "device must be a short string")
        for c in dev:
            if ord(c) < 32:
                raise PushError("bad_request", "device has a control character")
        self.device = dev
        compat = req.get("compat") or {}
        if not isinstance(compat, dict):
            raise PushError("bad_request", "compat must be an object")
        self.port = _text_list(compat.get("port"), "port")
        self.board = _text_list(compat.get("board"), "board")
        mp = compat.get("micropython")
        if mp is not None:
            if not isinstance(mp, list) or len(mp) != 2:
                raise PushError("bad_request", "compat micropython must be [min, max]")
            self.mp = (mp[0], mp[1], _version_tuple(mp[0]), _version_tuple(mp[1]))
        else:
            self.mp = None
        self.version = version
        self.mode = mode
        self.runtime = runtime
        self.count = count
        self.nonce = nonce

    def check(self):
        """Refuse a release not meant for this device (PushError)."""
        if self.device and self.device != hal.unique_id():
            raise PushError("wrong_device", "this release is for device %s" % self.device)
        if self.port and hal.platform() not in self.port:
            raise PushError("incompatible", "release is for port %s, this is %s" % (",".join(self.port), hal.platform()))
        if self.board:
            machine = hal.board()
            ok = False
            for b in self.board:
                if b in machine:
                    ok = True
            if not ok:
                raise PushError("incompatible", "release is for board %s, this is %s" % (",".join(self.board), machine))
        if self.mp is not None:
            v = tuple(sys.implementation.version[:3])
            if v < self.mp[2] or v > self.mp[3]:
                raise PushError(
                    "incompatible",
                    "release is for MicroPython %s..%s, this is %d.%d.%d" % (self.mp[0], self.mp[1], v[0], v[1], v[2]),
                )
        highest = floor.highest()
        if self.numbered and self.release < highest and not self.rollback:
            raise PushError(
                "downgrade",
                "release %d is below release %d, the highest this device accepted (sign it as a rollback to install it)"
                % (self.release, highest),
            )

    def header(self):
        """The header lines of the signed payload (the file lines follow)."""
        mp = "%s..%s" % (self.mp[0], self.mp[1]) if self.mp is not None else ""
        return (
            "%s\nrelease=%d\nversion=%s\nmode=%s\nruntime=%d\nrollback=%d\nnonce=%s\ndevice=%s\nport=%s\nboard=%s\nmicropython=%s\nfiles=%d\n"
            % (
                MAGIC,
                self.release,
                self.version,
                self.mode,
                1 if self.runtime else 0,
                1 if self.rollback else 0,
                self.nonce,
                self.device,
                ",".join(self.port),
                ",".join(self.board),
                mp,
                self.count,
            )
        ).encode()


class Signature:
    """The release signature being checked: an HMAC under the signing key of
    the claims' header and then one line per manifest entry, fed as the
    entries arrive."""

    def __init__(self, key, claims):
        self.mac = crypto.HmacSha256(key)
        self.mac.update(claims.header())

    def add(self, sha, size, path):
        self.mac.update(("%s:%s:%d\n" % (path, sha, size)).encode())

    def verify(self, sig):
        """PushError(sig_mismatch) unless sig (64 hex digits) signs what was fed."""
        if not crypto.equal(self.mac.hexdigest(), sig):
            raise PushError("sig_mismatch", "signature does not match (it must cover this session's nonce)")


# --- key rotation -------------------------------------------------------------


def _mac(key, *parts):
    m = crypto.HmacSha256(key)
    for p in parts:
        m.update(p)
    return m


def open_rekey(key, nonce, ct_hex, mac_hex):
    """The new signing key carried by a rekey message (see auth.rs:
    rekey_message), after checking its MAC under the current key."""
    if not isinstance(ct_hex, str) or not isinstance(mac_hex, str):
        raise PushError("bad_request", "rekey needs key and mac")
    if len(ct_hex) > 2 * MAX_KEY or len(ct_hex) % 2 or not ct_hex or len(mac_hex) != 64:
        raise PushError("bad_request", "malformed rekey message")
    want = _mac(key, b"uota-rekey:", nonce.encode(), b":", ct_hex.encode()).hexdigest()
    if not crypto.equal(want, mac_hex.lower()):
        raise PushError("sig_mismatch", "the rekey message is not signed by the current key")
    try:
        ct = binascii.unhexlify(ct_hex)
    except ValueError:
        raise PushError("bad_request", "malformed rekey message")
    out = bytearray(len(ct))
    i = 0
    block = 0
    while i < len(ct):
        pad = _mac(key, b"uota-rekey-pad:", nonce.encode(), (":%d" % block).encode()).digest()
        for b in pad:
            if i == len(ct):
                break
            out[i] = ct[i] ^ b
            i += 1
        block += 1
    try:
        new = bytes(out).decode()
    except UnicodeError:
        raise PushError("bad_request", "the new key is not UTF-8")
    for c in new:
        if ord(c) < 32:
            raise PushError("bad_request", "the new key has a control character")
    return new


def rekey_proof(new, nonce):
    return _mac(new, b"uota-rekey-ok:", nonce.encode()).hexdigest()
