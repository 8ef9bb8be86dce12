# uota virtual device: the machinery of the boot shim (simboot.py) that runs
# the device runtime on the MicroPython unix port. NOT installed on devices;
# the `uota sim` supervisor runs
#     micropython [-X heapsize=N] simboot.py
# and starts it again whenever it exits with code 75 (a device reset).
# simboot.py runs this file in a namespace of its own and calls prepare(),
# which mounts the device filesystem; everything here but the block device
# is then dropped, so the shim holds about 1 KB of the device's heap while
# the runtime runs, as a board's boot holds next to nothing.
#
# Environment:
#   UOTA_SIM_ROOT=<host folder>    the device filesystem is this folder, OR
#   UOTA_SIM_IMAGE=<file>          the device filesystem is this littlefs2
#                                  image (created and formatted when missing
#                                  or blank; a damaged image is an error)
#   UOTA_SIM_IMAGE_SIZE=<bytes>    image size, default 1441792 (4096-byte blocks)
#   UOTA_SIM_HOST=<address>        address the OTA server listens on (a
#                                  loopback address such as 127.0.0.5)
#   UOTA_SIM_PORT=<port>           overrides the port of /config/ota.json
#   UOTA_SIM_INSTALL=<host folder> copy that folder's tree onto the device
#                                  filesystem (overwriting), then exit 0
#                                  without booting
#   UOTA_SIM_EXPORT=<host folder>  copy the device filesystem's tree out to
#                                  that folder, then exit 0 without booting
#   UOTA_SIM_FLASH_SIZE=<bytes>    folder mode: the flash size the device
#                                  reports (os.statvfs): free space is this
#                                  size less what the folder holds, counted in
#                                  4096-byte blocks as littlefs would (a file
#                                  in whole blocks, a block pair per folder);
#                                  unset, the host disk's figures show through
#
# Power-cut testing (image mode only; see tests/power_cut.rs):
#   UOTA_SIM_WRITE_LOG=<host file> count the image's mutating block operations
#                                  (each writeblocks call and each erase,
#                                  ioctl 6) and append the running count to
#                                  this file, one line per operation:
#                                  "<n> w <block> <offset> <length>" or
#                                  "<n> e <block>" (plus "boot <count>" when
#                                  a process starts and "cut <n> <mode> <op>"
#                                  at a cut). The count goes on from the
#                                  file's last number, so it runs across
#                                  resets (new processes).
#   UOTA_SIM_CUT_AFTER=<n>         cut the power at the n-th mutating
#                                  operation of that running count: the
#                                  process is killed (SIGKILL) right there,
#                                  so no runtime code sees it coming
#   UOTA_SIM_CUT_MODE=before|torn  "before" (default): the n-th operation
#                                  does not happen; "torn": its first half is
#                                  written, then the power is cut
# While counting, an erase really erases (the block becomes 0xFF, as flash),
# instead of being a no-op.
#
# Serial virtual device (see src/sim/serial.rs): the interpreter's stdin and
# stdout are a pseudo-terminal, and instead of the OTA runtime's boot the
# device comes up like a board on its USB/UART console:
#   UOTA_SIM_REPL=1                after mounting, run /boot.py then /main.py
#                                  (each only if present; an exception, Ctrl-C
#                                  included, prints its traceback and the boot
#                                  goes on, SystemExit ends the process with its
#                                  code), then start the interactive REPL on
#                                  stdin/stdout (MICROPYINSPECT)
#   UOTA_SIM_RUN=all|boot|none     which of /boot.py and /main.py to run
#                                  (default all; "boot" is a board's soft reset
#                                  from the raw REPL, which skips main.py)
#   UOTA_SIM_READY=<host file>     "1" is written to it once Ctrl-C (SIGINT)
#                                  interrupts like a board's: just before
#                                  /boot.py (the shim's own setup ignores it)
#   UOTA_SIM_QUIET_BANNER=1        print SIM_QUIET_MARK just before the REPL
#                                  starts; the supervisor drops it and the
#                                  friendly banner behind it (a board coming
#                                  back from a raw-REPL soft reset prints only
#                                  the raw REPL banner)
#
# Exit codes: 75 the device reset itself (restart it), 0 install/export done,
# 2 bad environment or image, 28 the image is too small for what
# UOTA_SIM_INSTALL copies (ENOSPC), 98 the runtime's listen address is taken
# (EADDRINUSE; see uota.hal.listen_failed), anything else a crash.
import os
import sys
import vfs

from simdisk import BLOCK, FileBlockDevice, OsShim
DEFAULT_IMAGE_SIZE = 1441792
# littlefs geometry: 4096-byte blocks (ESP32 flash sectors), 256-byte
# read/program units (a flash page). Only the block size and count are stored
# in the image; these units just make the Python block device take fewer,
# larger calls than the 32-byte default.
LFS_OPTS = {"readsize": 256, "progsize": 256, "lookahead": 256}
_DIR = 0x4000


def env(name, default=None):
    v = os.getenv(name)
    return v if v else default


def die(msg, code=2):
    print("[sim] " + msg)
    sys.exit(code)


class CutBlockDevice(FileBlockDevice):
    """A FileBlockDevice that counts its mutating operations and can cut the
    power at one of them (power-cut tests). A cut is a SIGKILL of this
    process: no exception, no finally, no flush, like a board losing power."""

    def __init__(self, f, nblocks, log, count, cut_at, torn):
        super().__init__(f, nblocks)
        self.log = log
        self.count = count
        self.cut_at = cut_at
        self.torn = torn
        self.what = ""  # the operation the power goes at

    def _next(self, what):
        """Count one mutating operation (what: "w <block> <offset> <len>" or
        "e <block>"); True if the power goes at it."""
        self.count += 1
        if self.count == self.cut_at:
            self.what = what
            return True
        if self.log is not None:
            self.log.write("%d %s\n" % (self.count, what))
        return False

    def _cut(self):
        if self.log is not None:
            mode = "torn" if self.torn else "before"
            self.log.write("cut %d %s %s\n" % (self.count, mode, self.what))
        # The shell's parent is this interpreter process: kill -9 ends it at
        # once (the unix port has no os._exit; CPython-hosted builds no getpid).
        os.system("kill -9 $PPID")
        while True:  # not reached; never go on writing after a cut
            os.system("sleep 1")

    def writeblocks(self, n, buf, off=0):
        if self._next("w %d %d %d" % (n, off, len(buf))):
            if self.torn:
                FileBlockDevice.writeblocks(self, n, memoryview(buf)[: len(buf) // 2], off)
            self._cut()
        FileBlockDevice.writeblocks(self, n, buf, off)

    def ioctl(self, op, arg):
        if op == 6:  # erase block arg: flash reads 0xFF afterwards
            if self._next("e %d" % arg):
                if self.torn:
                    self.f.seek(arg * BLOCK)
                    self.f.write(b"\xff" * (BLOCK // 2))
                self._cut()
            self.f.seek(arg * BLOCK)
            self.f.write(b"\xff" * BLOCK)
            return 0
        return FileBlockDevice.ioctl(self, op, arg)


def cut_device(f, nblocks):
    """The power-cut block device when the environment asks for one, else None."""
    log_path = env("UOTA_SIM_WRITE_LOG")
    cut_at = int(env("UOTA_SIM_CUT_AFTER", "0"))
    mode = env("UOTA_SIM_CUT_MODE", "before")
    if mode not in ("before", "torn"):
        die("UOTA_SIM_CUT_MODE must be before or torn, not %s" % mode)
    if not log_path and cut_at <= 0:
        return None
    count = 0
    log = None
    if log_path:
        # Opened now, while the host's files are still mounted at "/".
        try:
            with open(log_path) as lf:
                for line in lf:
                    if line[:1].isdigit():
                        count = int(line.split()[0])
        except OSError:
            pass
        log = open(log_path, "a")
        log.write("boot %d\n" % count)  # a new process: where its operations start
    return CutBlockDevice(f, nblocks, log, count, cut_at, mode == "torn")


def open_image(path, size):
    try:
        f = open(path, "r+b")
    except OSError:
        f = open(path, "w+b")
    f.seek(0, 2)
    have = f.tell()
    # An existing image keeps its own size when it is the larger one.
    nblocks = max(size, have) // BLOCK
    if have < nblocks * BLOCK:
        pad = b"\xff" * BLOCK
        f.seek(have)
        f.write(pad[: (BLOCK - have % BLOCK) % BLOCK])
        for _ in range(have // BLOCK + (1 if have % BLOCK else 0), nblocks):
            f.write(pad)
    bd = cut_device(f, nblocks) or FileBlockDevice(f, nblocks)
    try:
        return vfs.VfsLfs2(bd, **LFS_OPTS)
    except OSError:
        pass
    head = bytearray(2 * BLOCK)
    f.seek(0)
    f.readinto(head)
    if head != b"\xff" * len(head) and head != bytes(len(head)):
        die("%s is not a littlefs2 image (and is not blank)" % path)
    vfs.VfsLfs2.mkfs(bd, **LFS_OPTS)
    return vfs.VfsLfs2(bd, **LFS_OPTS)


def is_dir(path):
    try:
        return bool(os.stat(path)[0] & _DIR)
    except OSError:
        return False


def makedirs(path):
    cur = ""
    for part in path.strip("/").split("/"):
        if not part:
            continue
        cur += "/" + part
        if not is_dir(cur):
            try:
                os.remove(cur)  # a file where a folder must be
            except OSError:
                pass
            os.mkdir(cur)


def copy_tree(src, dst):
    """Copy folder src into folder dst (both absolute, in the current VFS)."""
    makedirs(dst)
    buf = bytearray(BLOCK)
    for e in os.ilistdir(src):
        name = e[0]
        s = src.rstrip("/") + "/" + name
        d = dst.rstrip("/") + "/" + name
        if is_dir(s):
            copy_tree(s, d)
            continue
        with open(s, "rb") as fi:
            with open(d, "wb") as fo:
                while True:
                    n = fi.readinto(buf)
                    if not n:
                        break
                    fo.write(memoryview(buf)[:n])


SIM_QUIET_MARK = "\x00uota-sim-quiet\x00"


def run_board_file(path):
    """Run /boot.py or /main.py as a board does: skip it when missing, print
    the traceback of an exception (KeyboardInterrupt too) and go on; a
    SystemExit ends the process (75: reset, anything else: soft reset).
    Ctrl-C interrupts the file only: one arriving after it ended (a host
    sends a second to catch a program that swallowed the first) is dropped,
    as a board's C code between its scripts and its REPL drops it."""
    import micropython

    try:
        with open(path) as f:
            src = f.read()
    except OSError:
        return
    # A namespace of its own, so that a script cannot clobber the shim's names.
    g = {"__name__": "__main__", "__file__": path}
    error = None
    try:
        micropython.kbd_intr(3)
        exec(compile(src, path, "exec"), g)
    except SystemExit:
        micropython.kbd_intr(-1)
        raise
    except BaseException as e:  # noqa: B036 -- Ctrl-C included, as on a board
        error = e
    while True:
        try:
            micropython.kbd_intr(-1)
            # A backward jump: an interrupt that was already pending surfaces here.
            for _ in range(2):
                pass
            break
        except KeyboardInterrupt:
            pass
    if error is not None:
        sys.print_exception(error)


def serial_device(ready):
    """Boot like a board on a serial console, then hand over to the REPL."""
    run = env("UOTA_SIM_RUN", "all")
    if run not in ("all", "boot", "none"):
        die("UOTA_SIM_RUN must be all, boot or none, not %s" % run)
    if ready is not None:
        ready.write("1")
        ready.close()
    if run != "none":
        run_board_file("/boot.py")
    if run == "all":
        run_board_file("/main.py")
    if env("UOTA_SIM_QUIET_BANNER") == "1":
        sys.stdout.write(SIM_QUIET_MARK)
    # The unix port starts its REPL after the script when this is set.
    os.putenv("MICROPYINSPECT", "1")


def prepare():
    """Mount the device filesystem and return the source of /boot.py for
    simboot.py to run, or None when the REPL follows (serial device);
    install/export exit here. Afterwards this namespace keeps only what the
    block device needs."""
    try:
        return _prepare()
    finally:
        _forget()


def _forget():
    """Drop every name the mounted block device does not need, so that the
    shim's code leaves the device's heap."""
    g = globals()
    for name in list(g):
        if name not in ("__name__", "BLOCK", "os", "FileBlockDevice", "CutBlockDevice"):
            del g[name]


def _prepare():
    root = env("UOTA_SIM_ROOT")
    image = env("UOTA_SIM_IMAGE")
    install = env("UOTA_SIM_INSTALL")
    export = env("UOTA_SIM_EXPORT")
    ready = None
    if env("UOTA_SIM_REPL") == "1":
        import micropython

        # Ctrl-C (SIGINT) must not cut the shim's own setup short.
        micropython.kbd_intr(-1)
        if env("UOTA_SIM_READY"):
            # Opened while the host's files are still mounted at "/".
            ready = open(env("UOTA_SIM_READY"), "w")
    if not root and not image:
        die("set UOTA_SIM_ROOT or UOTA_SIM_IMAGE")
    host = env("UOTA_SIM_HOST", "127.0.0.1")
    if not host.startswith("127.") and host not in ("::1", "localhost"):
        die("UOTA_SIM_HOST must be a loopback address, not %s" % host)

    if image:
        fs = open_image(image, int(env("UOTA_SIM_IMAGE_SIZE", str(DEFAULT_IMAGE_SIZE))))
        if install or export:
            # The host's files stay reachable through the default "/" mount.
            vfs.mount(fs, "/flash")
            if install:
                try:
                    copy_tree(install, "/flash")
                except OSError as e:
                    if (e.args[0] if e.args else None) == 28:  # ENOSPC
                        die("the image is too small for the uota runtime", 28)
                    raise
            if export:
                makedirs(export)
                copy_tree("/flash", export)
            vfs.umount("/flash")
            sys.exit(0)
        vfs.umount("/")
        vfs.mount(fs, "/")
    else:
        if install:
            copy_tree(install, root)
        if export:
            makedirs(export)
            copy_tree(root, export)
        if install or export:
            sys.exit(0)
        makedirs(root)
        vfs.umount("/")
        vfs.mount(vfs.VfsPosix(root), "/")
        sys.modules["os"] = OsShim(os, int(env("UOTA_SIM_FLASH_SIZE", "0")))
    os.chdir("/")
    # A board's import path: the current folder, frozen modules, /lib.
    sys.path[:] = ["", ".frozen", "/lib"]

    if env("UOTA_SIM_REPL") == "1":
        serial_device(ready)
        return None

    try:
        with open("/boot.py") as f:
            return f.read()
    except OSError:
        die("the device has no /boot.py (install the runtime first)")
