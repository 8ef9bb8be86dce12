# Hardware abstraction layer: the only runtime module that touches board
# specific modules (network, machine, esp32). On the unix port (virtual
# devices) it stands in for a board: no WiFi, and reset() ends the process
# with exit code 75 so the sim supervisor starts it again into boot.py.
import sys
import os
import gc
import time

try:
    import machine
except ImportError:
    machine = None

try:
    import network
except ImportError:
    network = None

try:
    import _thread
except ImportError:
    _thread = None

# Exit code of a reset on the unix port (EX_TEMPFAIL): "restart me".
RESET_EXIT_CODE = 75

UNIX = sys.platform in ("linux", "darwin", "freebsd", "netbsd", "openbsd")

_getenv = getattr(os, "getenv", None)
_main_ident = _thread.get_ident() if _thread else None
_reset_requested = False
_boot_ticks = time.ticks_ms()
_sta = None
_fault_file = _getenv("UOTA_SIM_FAULT") if _getenv else None  # see fault()


def env(name):
    """An environment variable of the unix port (None on boards)."""
    if _getenv is None:
        return None
    return _getenv(name)


def fault(point):
    """Test hook of virtual devices: MemoryError at the named point of a
    push ("begin": a manifest entry, "file": file bytes, "commit": before the
    commit point, "roll_forward": just after it) when the device file that
    UOTA_SIM_FAULT names holds that point's name. Nothing on boards."""
    if _fault_file is None:
        return
    try:
        with open(_fault_file) as f:
            hit = f.read().strip() == point
    except OSError:
        return
    if hit:
        raise MemoryError("injected at " + point)


def platform():
    return sys.platform


def board():
    """The board's name as the firmware reports it (os.uname().machine)."""
    try:
        return os.uname().machine
    except (AttributeError, OSError):
        return sys.platform


def mpy_version():
    """sys.implementation._mpy as is: the .mpy version in the low byte, the
    native architecture and sub-version in the bits above."""
    return getattr(sys.implementation, "_mpy", None)


def has_threads():
    return _thread is not None


def in_main_thread():
    return _thread is None or _thread.get_ident() == _main_ident


def start_thread(fn, stack=8192):
    """Start fn() in a new thread; a bigger stack on the unix port."""
    if _thread is None:
        raise OSError("no _thread")
    try:
        if UNIX:
            _thread.stack_size(max(stack, 65536))
        else:
            _thread.stack_size(stack)
    except Exception:
        pass
    _thread.start_new_thread(fn, ())


# --- time -------------------------------------------------------------------

ticks_ms = time.ticks_ms
ticks_diff = time.ticks_diff
ticks_add = time.ticks_add
sleep_ms = time.sleep_ms


def uptime_ms():
    return time.ticks_diff(time.ticks_ms(), _boot_ticks)


# --- memory and flash -------------------------------------------------------


def mem_free():
    """Free heap after a collection."""
    try:
        gc.collect()
        return gc.mem_free()
    except AttributeError:
        return None


def fs_stat(path="/"):
    """(block size, free bytes) of the filesystem holding path."""
    try:
        st = os.statvfs(path)
    except (OSError, AttributeError):
        return 4096, None
    bsize = st[1] or st[0]
    return st[0] or bsize, st[4] * bsize


def fs_free(path="/"):
    return fs_stat(path)[1]


# --- identity ---------------------------------------------------------------


def unique_id():
    sim_id = env("UOTA_SIM_ID")
    if sim_id:
        return sim_id
    if machine is not None and hasattr(machine, "unique_id"):
        try:
            import binascii

            return binascii.hexlify(machine.unique_id()).decode()
        except Exception:
            pass
    return "sim-%s-%s" % (listen_host(), env("UOTA_SIM_PORT") or "")


# --- network ----------------------------------------------------------------


def listen_host():
    """Address the OTA server binds: all interfaces on a board; the sim's own
    loopback address on the unix port."""
    host = env("UOTA_SIM_HOST")
    if host:
        return host
    return "127.0.0.1" if UNIX else "0.0.0.0"


def port_override():
    """The sim supervisor's port, which beats the config (None otherwise)."""
    p = env("UOTA_SIM_PORT")
    if p:
        try:
            return int(p)
        except ValueError:
            pass
    return None


def remoteio_port_override():
    """A virtual device's RemoteIO port: UOTA_SIM_REMOTEIO_PORT, else none
    (0), so that devices sharing an address do not fight over 2019."""
    p = env("UOTA_SIM_REMOTEIO_PORT")
    try:
        return int(p) if p else 0
    except ValueError:
        return 0


# Exit code of a virtual device whose listen address is taken (EADDRINUSE):
# its supervisor stops with that error instead of restarting it.
ADDR_IN_USE_EXIT_CODE = 98


def listen_failed(e):
    """The OTA server could not listen (OSError e). A virtual device (the
    unix port under `uota sim`) whose address another program holds ends
    here: nothing it can do frees the port, and its supervisor says so. A
    board returns and retries (its network may yet come up)."""
    if not UNIX or not env("UOTA_SIM_HOST"):
        return
    try:
        import errno

        in_use = getattr(errno, "EADDRINUSE", 98)
    except ImportError:
        in_use = 98
    if (e.args[0] if e.args else None) == in_use:
        print("[uota] E %s:%s is already in use" % (listen_host(), env("UOTA_SIM_PORT") or ""))
        raise SystemExit(ADDR_IN_USE_EXIT_CODE)


def has_wifi():
    return network is not None and hasattr(network, "WLAN")


def wifi_start(ssid, password, hostname=None):
    """Activate the station interface and start connecting. No-op without
    `network` (unix port). Returns True when there is nothing to wait for."""
    global _sta
    if network is None or not hasattr(network, "WLAN"):
        return True
    if hostname and hasattr(network, "hostname"):
        try:
            network.hostname(hostname)
        except Exception:
            pass
    _sta = network.WLAN(network.STA_IF)
    _sta.active(True)
    if _sta.isconnected():
        return True
    if ssid:
        try:
            _sta.connect(ssid, password or "")
        except OSError:
            pass
    return False


def wifi_connected():
    if network is None or _sta is None:
        return True
    try:
        return _sta.isconnected()
    except Exception:
        return False


def wifi_address():
    if network is None or _sta is None:
        return listen_host()
    try:
        return _sta.ifconfig()[0]
    except Exception:
        return None


def wifi_reconnect(ssid, password):
    if network is None or _sta is None or not ssid:
        return
    try:
        _sta.disconnect()
    except Exception:
        pass
    try:
        _sta.connect(ssid, password or "")
    except OSError:
        pass


# --- firmware ---------------------------------------------------------------


def mark_firmware_valid():
    """Cancel a pending ESP-IDF app rollback (ESP32 with OTA partitions);
    a no-op elsewhere."""
    try:
        import esp32

        esp32.Partition.mark_app_valid_cancel_rollback()
    except Exception:
        pass


def reset_cause():
    """"watchdog" when the last reset was the hardware watchdog's, else None."""
    if machine is None or not hasattr(machine, "reset_cause"):
        return None
    try:
        if machine.reset_cause() == getattr(machine, "WDT_RESET", -1):
            return "watchdog"
    except Exception:
        pass
    return None


# --- watchdog ---------------------------------------------------------------
#
# The runtime's main loop calls feed() every few hundred ms (and long flash
# jobs call it as they go). On a board feed() feeds machine.WDT, which resets
# the board when the loop stops. The unix port has no WDT: a thread watches
# the time of the last feed and, when it is older than the timeout, raises
# KeyboardInterrupt in the main thread with SIGINT (the runtime turns that into
# a reset with exit code 75), and kills the process outright when that has
# not worked within 3 s.

_wdt = None
_beat = time.ticks_ms()
_wd_timeout_ms = 0
_wd_fired = False
_wd_on_fire = None


def feed():
    global _beat
    _beat = time.ticks_ms()
    if _wdt is not None:
        _wdt.feed()


def watchdog_fired():
    """True once the unix watchdog has fired (its SIGINT is on its way)."""
    return _wd_fired


def watchdog_start(seconds, on_fire=None):
    """Reset the device when feed() is not called for `seconds`. Returns the
    timeout in force (a board may cap it), or 0 when none could be started."""
    global _wdt, _wd_timeout_ms, _wd_on_fire
    if seconds <= 0:
        return 0
    ms = int(max(seconds, 1) * 1000)
    feed()
    if machine is not None and hasattr(machine, "WDT"):
        for t in (ms, 8000):  # rp2 caps the timeout at about 8.3 s
            try:
                _wdt = machine.WDT(timeout=t)
                return t / 1000
            except TypeError:  # esp8266: a fixed timeout
                _wdt = machine.WDT()
                return 1
            except (ValueError, OSError):
                continue
        return 0
    if not UNIX or _thread is None:
        return 0
    _wd_timeout_ms = ms
    _wd_on_fire = on_fire
    global _poller
    try:
        import select

        _poller = select.poll()
    except (ImportError, AttributeError):
        _poller = None
    start_thread(_watch, 16384)
    return seconds


_poller = None  # the watchdog thread's: made by the main thread


def _nap(ms):
    """Sleep ms in the kernel: the unix port's time.sleep_ms wakes every
    half millisecond in a thread (some 4% of a core per idle device). The
    poller was made by the main thread: the unix port has no GIL, and
    loading a module in this thread would race the main thread's loading
    on sys.modules."""
    if _poller is None:
        time.sleep_ms(ms)
    else:
        _poller.poll(ms)


def _watch():
    global _wd_fired
    step = 200 if _wd_timeout_ms < 4000 else 1000
    while True:
        _nap(step)
        if time.ticks_diff(time.ticks_ms(), _beat) > _wd_timeout_ms:
            break
    _wd_fired = True
    print("[uota] E watchdog: the event loop has been blocked for %d s; resetting" % (_wd_timeout_ms // 1000))
    # SIGINT raises KeyboardInterrupt in the main thread at its next
    # bytecode (or interrupted system call). system() ignores SIGINT while it
    # waits, so the kill runs in the background after it has returned.
    os.system("(sleep 0.2; kill -INT $PPID) >/dev/null 2>&1 &")
    time.sleep_ms(3000)
    # Still alive: the main thread swallowed the interrupt or is stuck in C.
    if _wd_on_fire is not None:
        try:
            _wd_on_fire()
        except Exception:
            pass
    try:
        sys.stdout.flush()
    except Exception:
        pass
    os.system("kill -9 $PPID")
    while True:
        time.sleep_ms(1000)


# --- reset ------------------------------------------------------------------


def reset_requested():
    """True after reset() was called from a thread other than the main one
    (unix port); the runtime's main loop then finishes the reset."""
    return _reset_requested


def soft_reset():
    """Restart the interpreter (boot.py runs again); a full reset where
    there is no soft reset (the unix port). Never returns."""
    if machine is not None and hasattr(machine, "soft_reset"):
        machine.soft_reset()
    reset()


def reset():
    """Reset the board. Never returns.

    On the unix port this ends the process with exit code 75. SystemExit only
    ends the process when it is raised in the main thread, so a call from an
    app thread flags the request (the runtime's main loop polls it and exits)
    and parks the calling thread.
    """
    global _reset_requested
    if machine is not None and hasattr(machine, "reset"):
        machine.reset()
    try:
        sys.stdout.flush()
    except Exception:
        pass
    if _thread is not None and _thread.get_ident() != _main_ident:
        _reset_requested = True
        while True:
            time.sleep_ms(1000)
    raise SystemExit(RESET_EXIT_CODE)


# --- RAM ---------------------------------------------------------------------

def forget(name):
    """Unload one module (a full name) if it is loaded; see unload()."""
    if name in sys.modules:
        _drop(name)
        gc.collect()


def unload(keep=()):
    """Unload the runtime's modules that are not named in keep (full names,
    "uota.server"), so the garbage collector can free their code. Only when
    nothing runs their code: a later import loads them afresh, with fresh
    module state. Returns how many were unloaded."""
    n = 0
    for name in list(sys.modules):
        if name.startswith("uota.") and name not in keep:
            _drop(name)
            n += 1
    gc.collect()
    return n


def _drop(name):
    """Remove a module from sys.modules and from its parent package."""
    del sys.modules[name]
    parent, _, short = name.rpartition(".")
    try:
        delattr(sys.modules[parent], short)
    except (KeyError, AttributeError):
        pass
