# Filesystem helpers. Paths given here are absolute device paths ("/app/x.py").
import json
import os

_DIR = 0x4000


def stat_size(path):
    """Size of a regular file, or None if it is missing or a folder."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if st[0] & _DIR:
        return None
    return st[6]


def is_dir(path):
    try:
        return bool(os.stat(path)[0] & _DIR)
    except OSError:
        return False


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def parent(path):
    i = path.rfind("/")
    return path[:i] if i > 0 else "/"


def makedirs(path):
    """Create folder path and its parents. A plain file standing where a folder
    must be is removed (an old release's file replaced by a folder)."""
    if path in ("", "/"):
        return
    cur = ""
    for part in path.strip("/").split("/"):
        cur += "/" + part
        try:
            st = os.stat(cur)
        except OSError:
            os.mkdir(cur)
            continue
        if not st[0] & _DIR:
            os.remove(cur)
            os.mkdir(cur)


def remove_quiet(path):
    try:
        os.remove(path)
        return True
    except OSError:
        return False


def names(path, skip=None, limit=16):
    """Up to limit names in folder path (not those for which skip(name) is
    true). Callers that remove what they get call it again until it returns
    nothing, so RAM stays bounded whatever the folder holds."""
    out = []
    try:
        it = os.ilistdir(path)
    except OSError:
        return out
    for e in it:  # always exhausted: a littlefs folder handle is then closed
        name = e[0]
        if len(out) < limit and (skip is None or not skip(name)):
            out.append(name)
    return out


def rmtree(path, feed=None):
    """Remove a file or a folder tree; missing is fine. RAM use does not grow
    with the number of entries (they are removed a few at a time)."""
    try:
        st = os.stat(path)
    except OSError:
        return
    if not st[0] & _DIR:
        os.remove(path)
        return
    base = path.rstrip("/")
    while True:
        batch = names(path)
        if not batch:
            break
        for name in batch:
            rmtree(base + "/" + name, feed)
        if feed is not None:
            feed()
    if path != "/":
        os.rmdir(path)


def rename_replace(src, dst):
    """Rename src over dst. littlefs and POSIX replace dst atomically; FAT
    refuses an existing dst, so it is removed first there (the staged copy
    still exists until the rename, so a cut in between is rolled forward)."""
    try:
        os.rename(src, dst)
    except OSError:
        if stat_size(dst) is None:
            raise
        os.remove(dst)
        os.rename(src, dst)


def atomic_write(path, data):
    """Write a small file through a temporary sibling and a rename. (On FAT
    the rename is a remove and a rename; read_atomic() then finds the
    complete temporary file if the cut fell between the two.)"""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    rename_replace(tmp, path)


def read_json(path):
    """The JSON object in a file, or None (missing, unreadable, not an object)."""
    try:
        with open(path) as f:
            v = json.load(f)
    except (OSError, ValueError):
        return None
    return v if isinstance(v, dict) else None


def read_atomic(path):
    """The text of a file written by atomic_write, or None. Falls back to the
    temporary sibling only when the file itself is missing (the FAT window
    between removing the old file and renaming the new one)."""
    for p in (path, path + ".tmp"):
        try:
            with open(p) as f:
                return f.read()
        except OSError:
            pass
    return None


def move(src, dst):
    """Rename src to dst (folders of dst created) when src exists; a no-op
    when it does not, so a journal step that moves can run again."""
    if not exists(src):
        return False
    makedirs(parent(dst))
    rename_replace(src, dst)
    return True


def prune_dirs(path, stop):
    """Remove the empty parent folders of path, up to a top-level folder in stop."""
    d = parent(path)
    while d != "/":
        top = d[1:].split("/", 1)[0]
        if d[1:] == top and top in stop:
            return
        if not is_dir(d):
            return  # (littlefs's rmdir would remove a file, too)
        try:
            os.rmdir(d)
        except OSError:
            return
        d = parent(d)
