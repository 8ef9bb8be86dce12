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


def env(name):
    """An environment variable of the unix port (None on boards)."""
    if _getenv is None:
        return None
    return _getenv(name)


def platform():
    return sys.platform


def mpy_version():
    """sys.implementation._mpy as is: the .mpy version in the low byte, the
    native architecture and sub-version in the bits above."""
    return getattr(sys.implementation, "_mpy", None)


def has_threads():
    return _thread is not None


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
    """Cancel a pending ESP-IDF app rollback, where the board has one."""
    try:
        import esp32

        esp32.Partition.mark_app_valid_cancel_rollback()
    except Exception:
        pass


# --- reset ------------------------------------------------------------------


def reset_requested():
    """True after reset() was called from a thread other than the main one
    (unix port); the runtime's main loop then finishes the reset."""
    return _reset_requested


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
