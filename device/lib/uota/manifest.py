# Manifest files: one "<sha256 hex> <size> <path>" line per file, sorted by
# the string path + ":". They are always streamed line by line; no manifest is
# ever held in RAM as a whole. Readers, merges and cursors close their file
# when used in a `with` block.
import os

from uota import fs
from uota.errors import is_hex
from uota.layout import MANIFEST


def key(path):
    """The sort key of an entry (micro-ota's signing order)."""
    return path + ":"


def format_line(sha, size, path):
    return "%s %d %s\n" % (sha, size, path)


def parse_line(line):
    """(sha, size, path) of a manifest line (without its newline). Raises
    ValueError when malformed; the path itself is checked by the caller."""
    if line.endswith("\r"):
        line = line[:-1]
    parts = line.split(" ", 2)
    if len(parts) != 3:
        raise ValueError("manifest line needs '<sha256> <size> <path>'")
    sha, size, path = parts
    if not is_hex(sha, 64):
        raise ValueError("bad sha256 in manifest line")
    if not size or not size.isdigit():
        raise ValueError("bad size in manifest line")
    return sha, int(size), path


def same(a, b):
    """Do two entries (of the same path) have the same content?"""
    return a[0] == b[0] and a[1] == b[1]


class _Closing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __iter__(self):
        return self

    def __next__(self):
        e = self.next()
        if e is None:
            raise StopIteration
        return e


class Reader(_Closing):
    """Iterates the entries of a manifest file. A missing file has no entries;
    an unreadable line is skipped, so a damaged manifest never blocks an
    update."""

    def __init__(self, path):
        try:
            self.f = open(path, "r")
        except OSError:
            self.f = None

    def next(self):
        """The next (sha, size, path), or None at the end."""
        f = self.f
        while f is not None:
            line = f.readline()
            if not line:
                self.close()
                return None
            if line[-1] == "\n":
                line = line[:-1]
            try:
                return parse_line(line)
            except ValueError:
                continue
        return None

    def close(self):
        if self.f is not None:
            self.f.close()
            self.f = None


class Merge(_Closing):
    """Walks two sorted manifests side by side, yielding (old, new): the
    entries of both for the same path, or one of them and None."""

    def __init__(self, old_path, new_path):
        self.a = Reader(old_path)
        self.b = Reader(new_path)
        self.ea = self.a.next()
        self.eb = self.b.next()

    def next(self):
        ea, eb = self.ea, self.eb
        if ea is None and eb is None:
            return None
        if eb is None or (ea is not None and key(ea[2]) < key(eb[2])):
            self.ea = self.a.next()
            return ea, None
        if ea is None or key(eb[2]) < key(ea[2]):
            self.eb = self.b.next()
            return None, eb
        self.ea = self.a.next()
        self.eb = self.b.next()
        return ea, eb

    def close(self):
        self.a.close()
        self.b.close()


class Cursor(_Closing):
    """Looks paths up in a sorted manifest in one forward pass: the paths
    asked for must come in ascending key order."""

    def __init__(self, path):
        self.r = Reader(path)
        self.e = self.r.next()

    def find(self, path):
        """The entry for path, or None."""
        k = key(path)
        e = self.e
        while e is not None and key(e[2]) < k:
            e = self.e = self.r.next()
        if e is not None and e[2] == path:
            return e
        return None

    def close(self):
        self.r.close()


def find(manifest, path):
    """The entry for path in a manifest file (a full scan), or None."""
    with Cursor(manifest) as c:
        return c.find(path)


def count(path=MANIFEST):
    n = 0
    with Reader(path) as r:
        for _ in r:
            n += 1
    return n


def lines(path=MANIFEST):
    """The lines of a manifest, as `manifest` sends them."""
    with Reader(path) as r:
        for e in r:
            yield format_line(e[0], e[1], e[2])


def rewrite(keep, path=MANIFEST):
    """Drop the entries for which keep(entry) is false from a manifest (an
    atomic rewrite, only when one was dropped)."""
    r = Reader(path)
    if r.f is None:
        return
    tmp = path + ".tmp"
    changed = False
    with r, open(tmp, "w") as out:
        for e in r:
            if keep(e):
                out.write(format_line(e[0], e[1], e[2]))
            else:
                changed = True
    if changed:
        fs.rename_replace(tmp, path)
    else:
        os.remove(tmp)


def remove_entries(prefix, path=MANIFEST):
    """Drop the entry for file prefix, or every entry under folder prefix, from
    the active manifest."""
    rewrite(lambda e: e[2] != prefix and not e[2].startswith(prefix + "/"), path)
