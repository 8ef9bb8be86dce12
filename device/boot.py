# uota boot: start the OTA runtime, which starts the app (see main.py).
# Installed by uota; your code goes in main.py and app/.
import os
import sys

# First, before reading anything: a write makes littlefs finish a rename that
# a power cut interrupted (until then the source folder can read as if the
# entry after the renamed one were missing, e.g. /lib/uota). Removing a file
# that does not exist is such a write, and costs no flash write otherwise.
try:
    os.remove("/.uota_fsck")
except OSError:
    pass

if "/lib" not in sys.path:
    sys.path.append("/lib")

recovered = False
try:
    from uota import boot_guard

    boot_guard.boot()
    recovered = boot_guard.recovered
    del boot_guard
except Exception as e:
    print("[uota] E boot guard:", repr(e))

try:
    from uota import hal

    hal.unload()  # the boot guard's modules: the runtime needs the RAM
    del hal
except Exception as e:
    print("[uota] E unload:", repr(e))

try:
    from uota import runtime

    runtime.main(recovered)
    print("[uota] E runtime returned")
except Exception as e:
    # KeyboardInterrupt and SystemExit pass through: Ctrl-C gives a REPL, and
    # the unix port's reset is a SystemExit.
    print("[uota] E fatal:", repr(e))
    sys.print_exception(e)

import time

time.sleep(3)
try:
    from uota import hal

    hal.reset()
except ImportError:
    try:
        import machine

        machine.reset()
    except (ImportError, AttributeError):
        sys.exit(75)  # unix port: the sim supervisor restarts the device
