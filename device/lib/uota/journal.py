# The commit journal's roll-forward, and wipe (docs/device-runtime.md,
# "Staging and the commit journal").
#
# Roll-forward of a commit (boot runs it again from the top while .ready
# exists; every step can run twice):
#   1. remove .uota_session
#   2. full pushes: the active release's files the new one lacks are moved
#      to the previous release (or deleted when they are not its own)
#   3. staged files are renamed into place (main.py last), the files they
#      replace first moved to the previous release the same way
#   3b. a runtime release that carries config/ota.json: its guarded keys
#      take effect (/ota_settings.json; the old snapshot is kept as
#      /ota_prev_settings.json for a rollback, see config.py)
#   4. /ota_manifest.txt and /ota_version.json become /ota_prev_manifest and
#      /ota_prev_version (unless an older confirmed release is kept), the new
#      version is written, .uota_next is renamed to /ota_manifest.txt
#   5. the boot state says "pending"; .ready is removed; the rest of the
#      staging area is removed
import os

from uota import boot_state, config, fs, hal, paths, release
from uota import manifest as mf
from uota.errors import PushError
from uota.layout import (
    MANIFEST, MARKER, NEXT_MANIFEST, PREV_MANIFEST, PREV_VERSION, ROLLBACK, SESSION, STAGE, STAGE_NAME,
    STAGED_MANIFEST, VERSION, prev_path, stage_path,
)


def _need_save(path, in_cur, in_prev):
    """Must the live file at path be kept for a rollback? Not when a copy is
    kept already (the live one is then a pending release's), nor when it is
    a pending release's own addition (in its manifest, not in the previous
    release's)."""
    if fs.exists(prev_path(path)):
        return False
    return not (in_cur and not in_prev)


def _set_aside(path, save):
    """Move the live file or folder at path to the previous-release area, or
    delete it when it is not the previous release's."""
    live = "/" + path
    if paths.keep_folder(path) or paths.protected(path, True):
        # (Never happens: begin refuses such paths. A state or secrets file
        # must not leave its place whatever a manifest says.)
        raise OSError(1, "refusing to replace " + live)
    if save:
        dst = prev_path(path)
        if "/" in path:
            fs.makedirs(fs.parent(dst))
        os.rename(live, dst)
    else:
        fs.rmtree(live)


def roll_forward():
    """Carry out the committed release recorded in the staging area."""
    meta = fs.read_json(MARKER) or {}  # always complete: it appeared by a rename
    mode = meta.get("mode", "fast")
    runtime = meta.get("runtime") is True
    keep = meta.get("keep") is True
    fs.remove_quiet(SESSION)
    if fs.exists(NEXT_MANIFEST):
        pman = PREV_MANIFEST if keep else MANIFEST
        if mode == "full":
            _drop_removed(runtime, keep, pman)
        _install_staged(keep, pman)
        if meta.get("settings") is True:
            config.adopt_settings()
        if not keep:
            if not fs.exists(PREV_MANIFEST):
                if not fs.move(MANIFEST, PREV_MANIFEST):
                    fs.atomic_write(PREV_MANIFEST, b"")
            if not fs.exists(PREV_VERSION):
                if not fs.move(VERSION, PREV_VERSION):
                    release.write_version(meta.get("prev", "unknown"), PREV_VERSION)
        release.write_version(meta.get("version", "unknown"))
        fs.rename_replace(NEXT_MANIFEST, MANIFEST)
    boot_state.pending(meta.get("prev"), meta.get("prev_runtime") is True)
    os.remove(MARKER)
    fs.rmtree(STAGE, hal.feed)


def _drop_removed(runtime, keep, pman):
    """full: the active release's files that the new one lacks leave the tree."""
    rules = paths.ReleaseRules(runtime)
    m = mf.Merge(MANIFEST, NEXT_MANIFEST)
    pc = mf.Cursor(pman) if keep else None
    try:
        for old, new in m:
            if new is not None or not rules.may_delete(old[2]):
                continue
            p = old[2]
            live = "/" + p
            if fs.stat_size(live) is None:
                # Gone already (this step ran before): its folder may still
                # be waiting to be pruned.
                fs.prune_dirs(live, paths.KEEP_DIRS)
                continue
            in_prev = pc.find(p) is not None if keep else True
            _set_aside(p, _need_save(p, True, in_prev))
            fs.prune_dirs(live, paths.KEEP_DIRS)
            hal.feed()
    finally:
        m.close()
        if pc is not None:
            pc.close()


def _clear_way(folder, keep, pman):
    """Make folder (absolute) a folder: a file standing where one of its
    parts must be is set aside like a replaced file."""
    if fs.is_dir(folder):
        return
    cur = ""
    for part in folder.strip("/").split("/"):
        cur += "/" + part
        size = fs.stat_size(cur)
        if size is None:
            if not fs.exists(cur):
                os.mkdir(cur)
            continue
        rel = cur[1:]
        if paths.protected(rel, True) or rel.lower() == "boot.py":
            # A file a folder may not replace (boot.py, a state file): begin
            # refuses paths under them, so this never happens.
            raise OSError(1, "refusing to replace " + cur)
        in_cur = mf.find(MANIFEST, rel) is not None
        in_prev = mf.find(pman, rel) is not None if keep else in_cur
        _set_aside(rel, _need_save(rel, in_cur, in_prev))
        os.mkdir(cur)


def _install_staged(keep, pman):
    """Rename the staged files into place (main.py last, so that a board
    never starts a new main.py beside old modules)."""
    r = mf.Reader(STAGED_MANIFEST)
    cc = mf.Cursor(MANIFEST)
    pc = mf.Cursor(pman) if keep else None
    made = None
    last = None
    try:
        for e in r:
            p = e[2]
            in_cur = cc.find(p) is not None
            in_prev = pc.find(p) is not None if keep else in_cur
            if p == "main.py":
                last = (in_cur, in_prev)
                continue
            if _install(p, in_cur, in_prev, keep, pman, made):
                made = fs.parent("/" + p)
    finally:
        r.close()
        cc.close()
        if pc is not None:
            pc.close()
    if last is not None:
        _install("main.py", last[0], last[1], keep, pman, None)


def _install(p, in_cur, in_prev, keep, pman, made):
    """Move one staged file into place, setting aside the file it replaces.
    False when there is nothing to move (moved already, or never sent)."""
    src = stage_path(p)
    if fs.stat_size(src) is None:
        return False
    dst = "/" + p
    d = fs.parent(dst)
    if d != made:
        _clear_way(d, keep, pman)
    if fs.is_dir(dst):
        try:
            os.rmdir(dst)  # an empty folder holds nothing to keep
        except OSError:
            _set_aside(p, _need_save(p, in_cur, in_prev))
    elif fs.exists(dst) and _need_save(p, in_cur, in_prev):
        _set_aside(p, True)
    fs.rename_replace(src, dst)
    hal.feed()
    return True


def wipe():
    """Remove the app: every top-level entry except boot.py, lib/uota, config,
    data and the state files; every other entry under lib; and drop removed
    files from the active manifest. The previous release goes too (the
    active release is then confirmed as it is)."""
    if boot_state.load()["state"] == "pending" or release.has_prev():
        if fs.exists(ROLLBACK):
            raise PushError("io", "a rollback is unfinished; reset the device")
        boot_state.confirmed()
    for name in [e[0] for e in os.ilistdir("/")]:
        if name in ("boot.py", "config", "data") or paths.is_state(name):
            continue
        if name == STAGE_NAME and fs.exists(MARKER):
            continue  # a committed release still being installed
        if name == "lib":
            for sub in [e[0] for e in os.ilistdir("/lib")]:
                if sub != "uota":
                    fs.rmtree("/lib/" + sub, hal.feed)
            continue
        fs.rmtree("/" + name, hal.feed)
    mf.rewrite(lambda e: fs.stat_size("/" + e[2]) is not None)
    # No app, no release version: the device reports "unknown", as a new one.
    fs.remove_quiet(VERSION)
