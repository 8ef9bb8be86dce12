# uota virtual device: what the boot shim keeps loaded while the device
# runs (see simboot.py): the block device of an image and, for a device on a
# host folder, the os module's stand-in. Kept apart from simshim.py so that
# the rest of the shim leaves the device's heap once the filesystem is
# mounted. NOT installed on devices.
BLOCK = 4096


class FileBlockDevice:
    """A block device (MicroPython's extended protocol) backed by a host
    file. Writes go straight to the file, so a killed process leaves the
    image as a power cut leaves a flash chip."""

    def __init__(self, f, nblocks):
        self.f = f
        self.nblocks = nblocks

    def readblocks(self, n, buf, off=0):
        self.f.seek(n * BLOCK + off)
        got = self.f.readinto(buf) or 0
        for i in range(got, len(buf)):
            buf[i] = 0xFF

    def writeblocks(self, n, buf, off=0):
        self.f.seek(n * BLOCK + off)
        self.f.write(buf)

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self.nblocks
        if op == 5:  # block size
            return BLOCK
        return 0  # init, deinit, sync, erase


class OsShim:
    """The os module with a rename that works on a VfsPosix mounted at "/":
    the unix port fails os.rename on absolute paths there, while paths
    relative to the root (the current directory) work. Given a flash size,
    statvfs reports a flash of that size instead of the host disk."""

    def __init__(self, real, flash_size=0):
        for name in dir(real):
            if not name.startswith("__") and name != "rename":
                setattr(self, name, getattr(real, name))
        self._real_rename = real.rename
        self._blocks = flash_size // BLOCK
        if self._blocks:
            self.statvfs = self._flash_statvfs

    def rename(self, a, b):
        self._real_rename(a.lstrip("/") or ".", b.lstrip("/") or ".")

    def _used(self, path):
        """4096-byte blocks the tree at path would take on littlefs: each
        file in whole blocks, a metadata pair per folder (path's own too)."""
        n = 2
        for e in self.ilistdir(path):
            p = path.rstrip("/") + "/" + e[0]
            try:
                st = self.stat(p)
            except OSError:  # gone meanwhile
                continue
            if st[0] & 0x4000:
                n += self._used(p)
            else:
                n += (st[6] + 4095) // 4096
        return n

    def _flash_statvfs(self, path):
        free = max(self._blocks - self._used("/"), 0)
        # bsize, frsize, blocks, bfree, bavail, files, ffree, favail, flag, namemax
        return (BLOCK, BLOCK, self._blocks, free, free, 0, 0, 0, 0, 255)
