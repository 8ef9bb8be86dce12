# A tiny leveled logger. Nothing in a hot path logs above DEBUG.
import sys

ERROR = 1
WARN = 2
INFO = 3
DEBUG = 4

level = INFO
# While the console carries OTA frames (transports/serial_stdio.py) nothing
# may be printed on it.
_quiet = False


def quiet(on):
    global _quiet
    _quiet = on


def set_level(n):
    global level
    try:
        level = int(n)
    except (TypeError, ValueError):
        pass


def _out(tag, msg):
    if not _quiet:
        print("[uota]", tag, msg)


def error(msg, exc=None):
    if level >= ERROR:
        _out("E", msg)
        if exc is not None and not _quiet:
            sys.print_exception(exc)


def warn(msg):
    if level >= WARN:
        _out("W", msg)


def info(msg):
    if level >= INFO:
        _out("I", msg)


def debug(msg):
    if level >= DEBUG:
        _out("D", msg)
