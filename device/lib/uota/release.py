# The installed releases on flash: the active release's version file, and
# the previous release kept while the active one is pending (its files,
# manifest and version under the ota_prev* names of layout.py).
import json

from uota import fs, hal
from uota.layout import PREV_NAME, VERSION


def version_of(text):
    """The version in the text of a version file ("unknown" if it has none)."""
    try:
        v = json.loads(text)
        return v.get("version", "unknown") if isinstance(v, dict) else "unknown"
    except (TypeError, ValueError):
        return "unknown"


def read_version():
    """The active release's version."""
    return version_of(fs.read_atomic(VERSION))


def version_json():
    """The version file as micro-ota's `version` answers it."""
    text = fs.read_atomic(VERSION)
    try:
        text = text.strip()
        json.loads(text)
        return text
    except (AttributeError, ValueError):
        return '{"version": "unknown"}'


def write_version(version, path=VERSION):
    """Write a version file (the active one unless path says otherwise)."""
    fs.atomic_write(path, json.dumps({"version": version}).encode())


def _not_prev(name):
    return not name.startswith(PREV_NAME)


def has_prev():
    """Is anything of a previous release on flash?"""
    return bool(fs.names("/", _not_prev, 1))


def drop_prev():
    """Delete the previous release (every top-level ota_prev* entry)."""
    while True:
        batch = fs.names("/", _not_prev)
        if not batch:
            return
        for name in batch:
            fs.rmtree("/" + name, hal.feed)
