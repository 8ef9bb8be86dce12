# uota virtual device: boots the device runtime on the MicroPython unix port.
# NOT installed on devices; the `uota sim` supervisor runs
#     micropython [-X heapsize=N] simboot.py
# and starts it again whenever it exits with code 75 (a device reset).
#
# This launcher is kept small on purpose: its code stays in the heap for the
# device's whole life. The shim's machinery (simshim.py beside it: mounting,
# install/export, power cuts, the serial console; its environment variables
# are documented there) runs in a namespace that is dropped before /boot.py
# starts, so `--heap N` leaves the runtime about what a board with N bytes of
# heap has.
import gc
import sys

# simshim is .mpy when the supervisor found an mpy-cross of this
# interpreter's bytecode version (loading it needs far less heap than
# compiling its source), else .py.
_dir = sys.argv[0].rsplit("/", 1)
sys.path.insert(0, _dir[0] if len(_dir) == 2 else ".")
import simshim

_boot = simshim.prepare()
del sys.modules["simshim"], simshim, _dir
gc.collect()
if _boot is not None:
    _code = compile(_boot, "/boot.py", "exec")
    del _boot
    exec(_code, {"__name__": "__main__", "__file__": "/boot.py"})
    print("[sim] boot.py returned")
    sys.exit(70)
# A serial device: the unix port's REPL follows, in this namespace, which is
# left empty as on a board.
del _boot, gc, sys
