# Boot-time recovery: finish what a power cut interrupted, before anything
# else reads the release (docs/device-runtime.md, "Boot flow"). Imported by
# boot_guard.boot() (or by runtime.main() when that failed).
import os

from uota import boot_state, fs, hal, log, release, session
from uota.layout import MANIFEST_IN, MARKER, ROLLBACK, SECRETS, SESSION, STAGE, STATE_FILES


def recover():
    """Finish what a power cut interrupted: a commit (roll forward), a
    rollback (roll forward), a confirm (drop the previous release); drop an
    unfinished push unless it is resumable; repair FAT's rename window."""
    for name in STATE_FILES:
        p = "/" + name
        tmp = p + ".tmp"
        if fs.exists(tmp):
            if fs.exists(p):
                os.remove(tmp)
            else:
                os.rename(tmp, p)  # FAT: the old file was removed, not replaced
    try:
        _recover_secrets()
    except OSError as e:
        log.error("could not clean the secrets file's siblings", e)
    if fs.exists(MARKER):
        from uota import journal

        log.info("finishing an interrupted commit")
        journal.roll_forward()
    elif fs.exists(STAGE):
        if session.kept() is None:
            fs.rmtree(STAGE, hal.feed)
        else:
            fs.remove_quiet(MANIFEST_IN)
            fs.remove_quiet(SESSION + ".tmp")
    if fs.exists(ROLLBACK):
        from uota import lifecycle

        log.info("finishing an interrupted rollback")
        lifecycle.rollback_forward()
    elif release.has_prev():
        if boot_state.load()["state"] != "pending":
            release.drop_prev()  # a confirmation that was cut short


def _recover_secrets():
    """Siblings of the secrets file (every name in /config that starts with
    its name, in any case): the temporary file of an interrupted passwd or
    rekey becomes the secrets file when that is missing (FAT's rename
    window) and the sibling is whole; anything else is removed."""
    d, base = SECRETS.rsplit("/", 1)
    while True:
        batch = fs.names(d, lambda n: n == base or not n.lower().startswith(base))
        if not batch:
            return
        for name in batch:
            p = d + "/" + name
            if name == base + ".tmp" and not fs.exists(SECRETS) and fs.stat_size(p) is not None:
                if fs.read_json(p) is not None:  # whole
                    os.rename(p, SECRETS)
                    continue
            fs.rmtree(p, hal.feed)
