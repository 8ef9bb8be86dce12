# Device configuration: settings baked into the build, overridden by
# /config/ota.json; secrets from /config/.ota.secrets.json (or, on a device
# migrated from micro-ota, from the same keys inside ota.json).
import json

from uota import settings, hal, fs

CONFIG_PATH = "/config/ota.json"
SECRETS_PATH = "/config/.ota.secrets.json"

_HEX = "0123456789abcdef"


def read_json(path):
    try:
        with open(path) as f:
            v = json.load(f)
    except (OSError, ValueError):
        return None
    return v if isinstance(v, dict) else None


def config_has_secrets(path=CONFIG_PATH):
    cfg = read_json(path)
    if not cfg:
        return False
    return bool(cfg.get("otaPassword") or cfg.get("signingKey"))


def is_hex(s, n=None):
    if not isinstance(s, str) or (n is not None and len(s) != n):
        return False
    for c in s:
        if c not in _HEX:
            return False
    return True


def _num(v, default):
    """A non-negative number from the config, or the default."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        return default
    return v


class Config:
    """The effective configuration. Attributes use the runtime's names; raw
    holds /config/ota.json as read."""

    def __init__(self):
        raw = read_json(CONFIG_PATH) or {}
        self.raw = raw
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
        sec = read_json(SECRETS_PATH) or {}
        raw = self.raw

        def pick(name):
            if name in sec:
                return sec.get(name) or ""
            return raw.get(name) or ""

        verifier = pick("otaPassword")
        if not isinstance(verifier, str):
            verifier = ""
        verifier = verifier.strip().lower()
        if verifier and not is_hex(verifier, 64):
            # An old micro-ota wheel stored the password itself: hash it.
            import hashlib
            import binascii

            verifier = binascii.hexlify(hashlib.sha256(verifier.encode()).digest()).decode()
        self.verifier = verifier
        key = pick("signingKey")
        self.signing_key = key if isinstance(key, str) else ""

    def set_signing_key(self, key):
        """Store a new signing key in the secrets file (atomically), keeping
        the password verifier in force."""
        sec = read_json(SECRETS_PATH) or {}
        sec["signingKey"] = key
        if "otaPassword" not in sec:
            sec["otaPassword"] = self.verifier
        fs.makedirs("/config")
        fs.atomic_write(SECRETS_PATH, json.dumps(sec).encode())
        self.load_secrets()

    def verifier_bytes(self):
        """The password verifier as the 32 raw SHA-256 bytes (empty: no password)."""
        if not self.verifier:
            return b""
        import binascii

        return binascii.unhexlify(self.verifier)

    def set_verifier(self, verifier):
        """Store a new password verifier (sha256 hex, or "" to clear) in the
        secrets file, keeping the signing key that is in force."""
        sec = read_json(SECRETS_PATH) or {}
        sec["otaPassword"] = verifier
        if "signingKey" not in sec:
            sec["signingKey"] = self.signing_key
        fs.makedirs("/config")
        fs.atomic_write(SECRETS_PATH, json.dumps(sec).encode())
        self.load_secrets()


def load():
    return Config()
