# The release life cycle (docs/protocol.md section 7): confirm a pending
# release, restore the previous release (imported when needed).
#
# A commit leaves the new release "pending" (boot_state.py) with the
# previous release's replaced and removed files, manifest and version kept
# in the top-level ota_prev* entries (layout.py). confirm() marks it
# "confirmed" (the single write that confirms) and then deletes them; boot
# deletes leftovers of a confirmed release, so a cut in between is harmless.
#
# Rollback (at boot, once the pending release has used its boot attempts)
# is a journal of its own, /ota_prev_rollback (JSON: from, to, reason,
# runtime), which appears by a rename: the rollback point. Boot finishes a
# rollback whose marker exists, from the top:
#   R1 delete the files the pending release added (in its manifest, not in
#      the previous one, no copy kept), then create /ota_prev_rollback2 (R1
#      done: it never runs again, because after R2 a restored file that the
#      failed release also listed would look like one of its additions)
#   R2 move every kept file and folder back into place: the top-level ones
#      (renames inside the root), then those in folders, main.py last
#   R3 rename /ota_prev_version and /ota_prev_manifest over the active ones,
#      and /ota_prev_settings.json over /ota_settings.json (config.py)
#   R4 the boot state: confirmed, last_rollback = {from, to, reason}
#   then remove the marker and the rest of the previous release.
import json
import os

from uota import boot_state, config, fs, hal, log, paths, release
from uota import manifest as mf
from uota.layout import (
    MANIFEST, PREV, PREV_MANIFEST, PREV_TOP, PREV_VERSION, ROLLBACK, ROLLBACK_R1_DONE, VERSION,
    prev_path,
)


def confirm():
    """Confirm the pending release: it stays, and the previous one is
    deleted. True when the active release is (now) confirmed; False when it
    cannot be confirmed in this boot (a commit since boot installed a release
    that has not run yet)."""
    if boot_state.committed:
        return False
    if boot_state.load()["state"] != "pending":
        return True
    if fs.exists(ROLLBACK):
        return False
    boot_state.confirmed()  # the confirm point
    release.drop_prev()
    hal.mark_firmware_valid()
    log.info("release %s confirmed" % release.read_version())
    return True


def confirm_before_commit():
    """A release is about to be committed on top of the running one. When
    that one is pending and running healthy (boot_state.running_healthy), it
    is confirmed first, so it becomes the previous release of the new one,
    and a failure of the new one rolls back to it rather than to the release
    confirmed before it (which may be no app at all). True when it was."""
    if not boot_state.running_healthy():
        return False
    log.info("release %s runs healthy: confirmed before the next commit" % release.read_version())
    try:
        return confirm()
    except OSError as e:  # the commit goes on; a rollback then skips it
        log.error("could not confirm the release", e)
        return False


def rollback(reason):
    """Restore the previous release. Returns True when that restored
    runtime files (the caller then resets)."""
    st = boot_state.load()
    frm = release.read_version()
    if not (fs.exists(PREV_MANIFEST) and fs.exists(PREV_VERSION)):
        log.error("release %s failed (%s) and there is no previous release to restore" % (frm, reason))
        boot_state.rolled_back(frm, None, reason)
        release.drop_prev()
        return False
    to = st["previous"] or release.version_of(fs.read_atomic(PREV_VERSION))
    log.warn("release %s failed (%s): restoring %s" % (frm, reason, to))
    meta = {"from": frm, "to": to, "reason": reason, "runtime": st["runtime"]}
    fs.remove_quiet(ROLLBACK_R1_DONE)
    fs.atomic_write(ROLLBACK, json.dumps(meta).encode())  # the rollback point
    return rollback_forward()


def rollback_forward():
    """Carry out (or finish) the rollback recorded in /ota_prev_rollback."""
    meta = fs.read_json(ROLLBACK) or {}
    runtime = meta.get("runtime") is True
    if not fs.exists(ROLLBACK_R1_DONE):
        _remove_added(runtime)
        open(ROLLBACK_R1_DONE, "w").close()
    _restore_top(False)
    _restore(PREV, "")
    _restore_top(True)
    if fs.exists(PREV_VERSION):
        fs.rename_replace(PREV_VERSION, VERSION)
    if fs.exists(PREV_MANIFEST):
        fs.rename_replace(PREV_MANIFEST, MANIFEST)
    config.restore_settings()
    boot_state.rolled_back(meta.get("from"), meta.get("to"), meta.get("reason"))
    os.remove(ROLLBACK)
    release.drop_prev()
    log.info("release %s restored" % meta.get("to"))
    return runtime


def _remove_added(runtime):
    """R1: the files of the failed release that the previous one did not
    have and that were not there before it (no copy kept)."""
    m = mf.Merge(MANIFEST, PREV_MANIFEST)
    try:
        while True:
            pair = m.next()
            if pair is None:
                break
            cur, prev = pair
            if cur is None or prev is not None:
                continue
            p = cur[2]
            if paths.protected(p, runtime) or fs.exists(prev_path(p)):
                continue
            live = "/" + p
            if fs.stat_size(live) is not None:
                os.remove(live)
                fs.prune_dirs(live, paths.KEEP_DIRS)
            hal.feed()
    finally:
        m.close()


def _restore(src, dst):
    """R2, folders: move the tree src back to dst ("" is the root), a few
    entries at a time (RAM does not grow with the number of files)."""
    while True:
        batch = fs.names(src)
        if not batch:
            return
        for name in batch:
            _restore_one(src + "/" + name, dst + "/" + name)


def _restore_one(s, d):
    if fs.is_dir(s):
        if fs.exists(d) and not fs.is_dir(d):
            os.remove(d)
        if not fs.exists(d):
            os.mkdir(d)
        _restore(s, d)
        os.rmdir(s)
    else:
        if fs.is_dir(d) and not paths.keep_folder(d[1:]):
            fs.rmtree(d, hal.feed)
        fs.rename_replace(s, d)
    hal.feed()


_KEPT_TOP = PREV_TOP[1:]  # "ota_prev.": the names of kept top-level entries


def _kept_top(name):
    return name.startswith(_KEPT_TOP)


def _restore_top(main):
    """R2, the top level: /ota_prev.<name> back to /<name>, by renames inside
    the root folder. First everything but main.py (before the folders, which
    may fill a restored top-level folder), main.py at the very end."""
    if main:
        if fs.exists(PREV_TOP + "main.py"):
            _restore_top_one("main.py")
        return
    n = len(_KEPT_TOP)
    kept_main = _KEPT_TOP + "main.py"
    while True:
        batch = fs.names("/", lambda x: not _kept_top(x) or x == kept_main)
        if not batch:
            return
        for name in batch:
            _restore_top_one(name[n:])


def _restore_top_one(name):
    s = PREV_TOP + name
    d = "/" + name
    if fs.exists(d) and (fs.is_dir(d) or fs.is_dir(s)):
        if paths.keep_folder(name):
            return  # never kept as a whole; cannot happen
        fs.rmtree(d, hal.feed)  # a folder where a file was, or the other way
    fs.rename_replace(s, d)
    hal.feed()
