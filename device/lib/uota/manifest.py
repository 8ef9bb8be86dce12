# Manifest files: one "<sha256 hex> <size> <path>" line per file, sorted by
# the string path + ":". They are always streamed line by line; no manifest is
# ever held in RAM as a whole.
from uota import config

ACTIVE = "/ota_manifest.txt"


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
    if not config.is_hex(sha, 64):
        raise ValueError("bad sha256 in manifest line")
    if not size or not size.isdigit():
        raise ValueError("bad size in manifest line")
    return sha, int(size), path


class Reader:
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


class Merge:
    """Walks two sorted manifests side by side. next() returns (old, new):
    the entries of both for the same path, or one of them and None."""

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


class Cursor:
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
    c = Cursor(manifest)
    try:
        return c.find(path)
    finally:
        c.close()


def count(path=ACTIVE):
    n = 0
    r = Reader(path)
    while r.next() is not None:
        n += 1
    return n


def remove_entries(prefix, path=ACTIVE):
    """Drop the entry for file prefix, or every entry under folder prefix, from
    the active manifest (an atomic rewrite, only when something matched)."""
    import os
    from uota import fs

    r = Reader(path)
    if r.f is None:
        return
    tmp = path + ".tmp"
    changed = False
    with open(tmp, "w") as out:
        while True:
            e = r.next()
            if e is None:
                break
            p = e[2]
            if p == prefix or p.startswith(prefix + "/"):
                changed = True
                continue
            out.write(format_line(e[0], e[1], p))
    if changed:
        fs.rename_replace(tmp, path)
    else:
        os.remove(tmp)
