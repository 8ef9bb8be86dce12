# Filesystem helpers. Paths given here are absolute device paths ("/app/x.py").
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


def rmtree(path):
    """Remove a file or a folder tree; missing is fine."""
    try:
        st = os.stat(path)
    except OSError:
        return
    if not st[0] & _DIR:
        os.remove(path)
        return
    names = [e[0] for e in os.ilistdir(path)]
    for name in names:
        rmtree(path.rstrip("/") + "/" + name)
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
    """Write a small file through a temporary sibling and a rename."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    rename_replace(tmp, path)


def prune_dirs(path, stop):
    """Remove the empty parent folders of path, up to a top-level folder in stop."""
    d = parent(path)
    while d != "/":
        top = d[1:].split("/", 1)[0]
        if d[1:] == top and top in stop:
            return
        try:
            os.rmdir(d)
        except OSError:
            return
        d = parent(d)
