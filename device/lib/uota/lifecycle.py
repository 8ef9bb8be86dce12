# The release life cycle (docs/protocol.md section 7): confirm a pending
# release, record why one failed, restore the previous release.
#
# A commit leaves the new release "pending" (boot_guard's state) with the
# previous release's replaced and removed files, manifest and version kept
# in the top-level ota_prev* entries (release.py). confirm() marks it
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

from uota import fs, hal, log, paths, boot_guard, release
from uota import manifest as mf
from uota.release import PREV, PREV_TOP, PREV_MANIFEST, PREV_VERSION, ROLLBACK

ROLLBACK_R1_DONE = ROLLBACK + "2"


def confirm():
    """Confirm the pending release: it stays, and the previous one is
    deleted. True when the active release is (now) confirmed; False when it
    cannot be confirmed in this boot (a commit since boot installed a release
    that has not run yet)."""
    if release.committed:
        return False
    st = boot_guard.load()
    if st["state"] != "pending":
        return True
    if fs.exists(ROLLBACK):
        return False
    st["state"] = "confirmed"
    st["attempts"] = 0
    st["previous"] = None
    st["runtime"] = False
    st["fail"] = None
    boot_guard.save(st)  # the confirm point
    release.drop_prev()
    hal.mark_firmware_valid()
    log.info("release %s confirmed" % release.read_version())
    return True


def record_fail(reason):
    """Remember why this boot of a pending release is failing (the reason a
    rollback reports). No-op for a confirmed release."""
    if release.committed:
        return False
    st = boot_guard.load()
    if st["state"] != "pending":
        return False
    st["fail"] = reason
    boot_guard.save(st)
    return True


def rollback(reason):
    """Restore the previous release. Returns True when that restored
    runtime files (the caller then resets)."""
    st = boot_guard.load()
    frm = release.read_version()
    if not (fs.exists(PREV_MANIFEST) and fs.exists(PREV_VERSION)):
        log.error("release %s failed (%s) and there is no previous release to restore" % (frm, reason))
        boot_guard.update(
            state="confirmed",
            attempts=0,
            previous=None,
            runtime=False,
            fail=None,
            last_rollback={"from": frm, "to": None, "reason": reason},
        )
        release.drop_prev()
        return False
    to = st["previous"] or release._version_of(fs.read_atomic(PREV_VERSION))
    log.warn("release %s failed (%s): restoring %s" % (frm, reason, to))
    meta = {"from": frm, "to": to, "reason": reason, "runtime": st["runtime"]}
    fs.remove_quiet(ROLLBACK_R1_DONE)
    fs.atomic_write(ROLLBACK, json.dumps(meta).encode())  # the rollback point
    return rollback_forward()


def rollback_forward():
    """Carry out (or finish) the rollback recorded in /ota_prev_rollback."""
    try:
        with open(ROLLBACK) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        meta = {}
    runtime = meta.get("runtime") is True
    if not fs.exists(ROLLBACK_R1_DONE):
        _remove_added(runtime)
        open(ROLLBACK_R1_DONE, "w").close()
    _restore_top(False)
    _restore(PREV, "")
    _restore_top(True)
    if fs.exists(PREV_VERSION):
        fs.rename_replace(PREV_VERSION, release.VERSION_PATH)
    if fs.exists(PREV_MANIFEST):
        fs.rename_replace(PREV_MANIFEST, mf.ACTIVE)
    from uota import config

    config.restore_settings()
    boot_guard.update(
        state="confirmed",
        attempts=0,
        previous=None,
        runtime=False,
        fail=None,
        last_rollback={"from": meta.get("from"), "to": meta.get("to"), "reason": meta.get("reason")},
    )
    os.remove(ROLLBACK)
    release.drop_prev()
    log.info("release %s restored" % meta.get("to"))
    return runtime


def _remove_added(runtime):
    """R1: the files of the failed release that the previous one did not
    have and that were not there before it (no copy kept)."""
    m = mf.Merge(mf.ACTIVE, PREV_MANIFEST)
    try:
        while True:
            pair = m.next()
            if pair is None:
                break
            cur, prev = pair
            if cur is None or prev is not None:
                continue
            p = cur[2]
            if paths.protected(p, runtime) or fs.exists(release.prev_path(p)):
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


def _kept_top(name):
    return name.startswith("ota_prev.")


def _restore_top(main):
    """R2, the top level: /ota_prev.<name> back to /<name>, by renames inside
    the root folder. First everything but main.py (before the folders, which
    may fill a restored top-level folder), main.py at the very end."""
    if main:
        if fs.exists(PREV_TOP + "main.py"):
            _restore_top_one("main.py")
        return
    n = len(PREV_TOP) - 1
    while True:
        batch = fs.names("/", lambda x: not _kept_top(x) or x == "ota_prev.main.py")
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
