# Device configuration: settings baked into the build, overridden by
# /config/ota.json; secrets from /config/.ota.secrets.json (or, on a device
# migrated from micro-ota, from the same keys inside ota.json, moved to the
# secrets file at its first boot).
#
# The guarded keys (GUARDED: what the OTA server's security depends on) are
# read from /ota_settings.json, a snapshot of config/ota.json taken at the
# first boot and again when a release with "runtime": true that carries
# config/ota.json commits. A release without the runtime flag may install a
# config/ota.json, but its guarded keys do not take effect.
import json

from uota import crypto, fs, hal, log, settings
from uota.errors import is_hex
from uota.layout import CONFIG, PREV_SETTINGS, SECRETS, SETTINGS

GUARDED = ("legacy", "maxFiles", "appPaths", "sessionTimeout", "maxConnections")


def config_has_secrets(path=CONFIG):
    cfg = fs.read_json(path)
    if not cfg:
        return False
    return bool(cfg.get("otaPassword") or cfg.get("signingKey"))


def guarded(raw):
    """The guarded keys of a config (those it has)."""
    return {k: raw[k] for k in GUARDED if k in raw}


def read_settings():
    """The snapshot of the guarded keys in force, or None (never taken)."""
    text = fs.read_atomic(SETTINGS)
    try:
        v = json.loads(text) if text else None
    except ValueError:
        return None
    return v if isinstance(v, dict) else None


def take_settings():
    """Snapshot the guarded keys of the config/ota.json in place now."""
    fs.atomic_write(SETTINGS, json.dumps(guarded(fs.read_json(CONFIG) or {})).encode())


def adopt_settings():
    """A release with "runtime": true that carries config/ota.json has
    installed it (journal.py): its guarded keys take effect. The snapshot
    they replace is kept for a rollback, unless one is kept already (a
    commit on top of a pending release keeps the confirmed release's). Can
    run again after a power cut."""
    if not fs.exists(PREV_SETTINGS):
        old = fs.read_atomic(SETTINGS)
        if old is not None:
            fs.atomic_write(PREV_SETTINGS, old.encode())
    take_settings()


def restore_settings():
    """A rollback: the snapshot kept with the previous release is in force
    again (no-op when the failed release did not change it)."""
    if fs.exists(PREV_SETTINGS):
        fs.rename_replace(PREV_SETTINGS, SETTINGS)


def effective(raw):
    """raw (a config as read) with the guarded keys of the snapshot, and
    without otaPassword and signingKey once the snapshot exists (the first
    boot moved them to the secrets file)."""
    snap = read_settings()
    if snap is None:
        return raw
    for k in GUARDED:
        if k in snap:
            raw[k] = snap[k]
        elif k in raw:
            del raw[k]
    for k in ("otaPassword", "signingKey"):
        if k in raw:
            del raw[k]
    return raw


def app_paths():
    """The app area (config "appPaths" as in force; None: the default)."""
    return effective(fs.read_json(CONFIG) or {}).get("appPaths")


def first_boot(raw):
    """The first boot (no snapshot yet): the secrets a migrated micro-ota
    device keeps in config/ota.json move to the secrets file, and the
    guarded keys of the config are snapshot. From then on a release's
    config/ota.json changes neither."""
    moved = {}
    for k in ("otaPassword", "signingKey"):
        if raw.get(k):
            moved[k] = raw[k]
    if moved:
        sec = fs.read_json(SECRETS) or {}
        missing = False
        for k in moved:
            if k not in sec:
                sec[k] = moved[k]
                missing = True
        if missing:
            fs.makedirs(fs.parent(SECRETS))
            fs.atomic_write(SECRETS, json.dumps(sec).encode())
    take_settings()


PBKDF2 = "pbkdf2-sha256"


def parse_verifier(v):
    """(stored verifier, kdf for the hello, 32-byte secret) of an otaPassword
    value: "pbkdf2-sha256$<iter>$<salt hex>$<hash hex>" (what uota hosts
    install), 64 hex digits (micro-ota's unsalted SHA-256), or, from an old
    micro-ota wheel, the password itself (hashed here). ("", "", b"") for none
    or anything malformed."""
    import binascii

    if not isinstance(v, str) or not v.strip():
        return "", "", b""
    v = v.strip()
    if v.startswith(PBKDF2 + "$"):
        parts = v.split("$")
        if len(parts) != 4 or not parts[1].isdigit() or not is_hex(parts[2].lower()) or not is_hex(parts[3].lower(), 64):
            return "", "", b""
        n = int(parts[1])
        if n < 1 or n > 1000000 or not parts[2] or len(parts[2]) % 2 or len(parts[2]) > 128:
            return "", "", b""
        return v.lower(), "$".join(parts[:3]).lower(), binascii.unhexlify(parts[3].lower())
    low = v.lower()
    if not is_hex(low, 64):
        import hashlib

        low = binascii.hexlify(hashlib.sha256(v.encode()).digest()).decode()
    return low, "sha256", binascii.unhexlify(low)


def valid_verifier(v):
    """True for a verifier a host may install with passwd."""
    return v == "" or bool(parse_verifier(v)[0]) and (v.startswith(PBKDF2 + "$") or is_hex(v.lower(), 64))


def _num(v, default):
    """A non-negative number from the config, or the default."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        return default
    return v


class Config:
    """The effective configuration. Attributes use the runtime's names; raw
    holds /config/ota.json as read."""

    def __init__(self):
        raw = fs.read_json(CONFIG) or {}
        if read_settings() is None:
            try:
                first_boot(raw)
            except OSError as e:
                log.error("could not snapshot the config", e)
        raw = effective(raw)
        self.raw = raw
        self.app_paths = raw.get("appPaths")
        port = raw.get("port", settings.PORT)
        if hal.port_override() is not None:
            port = hal.port_override()
        self.port = int(port)
        self.session_timeout = int(raw.get("sessionTimeout", settings.SESSION_TIMEOUT))
        t = raw.get("transports", settings.TRANSPORTS)
        self.transports = t if isinstance(t, list) and t else list(settings.TRANSPORTS)
        self.legacy = raw.get("legacy") is True
        self.app = raw.get("app") or "main"
        self.max_frame = int(settings.MAX_FRAME)
        self.max_conns = int(raw.get("maxConnections", 4))
        # RemoteIO (remoteio.py): a second port for the same protocol (0:
        # none; a virtual device takes it from its supervisor), and the
        # bytes of output kept for listeners (0: output not captured).
        self.remoteio_port = int(_num(raw.get("remoteioPort"), 2019))
        if hal.port_override() is not None:
            self.remoteio_port = hal.remoteio_port_override()
        self.remoteio_buffer = int(_num(raw.get("remoteioBuffer"), 4096))
        self.max_files = int(_num(raw.get("maxFiles"), 1000))
        self.sync_app_delay = int(raw.get("syncAppDelay", 15))
        self.ssid = raw.get("ssid") or ""
        self.wifi_password = raw.get("password") or ""
        self.hostname = raw.get("hostname") or ""
        self.log_level = raw.get("logLevel", 3)
        # The release life cycle (docs/protocol.md section 7).
        self.boot_attempts = _num(raw.get("bootAttempts"), 2)
        self.confirm_after = _num(raw.get("confirmAfter"), 30)
        self.watchdog = _num(raw.get("watchdog"), 60)
        self.load_secrets()

    def get(self, key, default=None):
        return self.raw.get(key, default)

    def load_secrets(self):
        sec = fs.read_json(SECRETS) or {}
        raw = self.raw

        def pick(name):
            if name in sec:
                return sec.get(name) or ""
            return raw.get(name) or ""

        self.verifier, self.kdf, self._secret = parse_verifier(pick("otaPassword"))
        key = pick("signingKey")
        self.signing_key = key if isinstance(key, str) else ""

    def set_signing_key(self, key):
        """Store a new signing key in the secrets file (atomically), keeping
        the password verifier in force."""
        sec = fs.read_json(SECRETS) or {}
        sec["signingKey"] = key
        if "otaPassword" not in sec:
            sec["otaPassword"] = self.verifier
        self._write_secrets(sec)

    def _write_secrets(self, sec):
        """Write the secrets file (atomically) and put it in force."""
        fs.makedirs(fs.parent(SECRETS))
        fs.atomic_write(SECRETS, json.dumps(sec).encode())
        self.load_secrets()

    def verifier_bytes(self):
        """The 32-byte secret behind the password verifier (empty: no password)."""
        return self._secret

    def password_matches(self, plain):
        """Check micro-ota's plaintext password line against the verifier."""
        if not self._secret:
            return False
        if self.kdf == "sha256":
            import hashlib

            got = hashlib.sha256(plain).digest()
        else:
            import binascii

            _, n, salt = self.kdf.split("$")
            got = crypto.pbkdf2_sha256(plain, binascii.unhexlify(salt), int(n))
        return crypto.equal(got, self._secret)

    def auth_methods(self):
        """What this device accepts in auth, strongest claim first."""
        out = []
        if self.verifier:
            out.append("password")
        if self.signing_key:
            out.append("key")
        return out

    def set_verifier(self, verifier):
        """Store a new password verifier (see parse_verifier; "" clears it) in the
        secrets file, keeping the signing key that is in force."""
        sec = fs.read_json(SECRETS) or {}
        sec["otaPassword"] = verifier
        if "signingKey" not in sec:
            sec["signingKey"] = self.signing_key
        self._write_secrets(sec)


def load():
    return Config()
