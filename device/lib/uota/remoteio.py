# RemoteIO: the app's output for listeners, and calls to handlers the app
# registers (docs/remoteio.md).
#
#   from uota import remoteio
#
#   @remoteio.on("set_led")
#   def set_led(state=False):
#       led.value(state)
#       return {"led": state}
#
# Output: what the app prints goes to listeners through uota.output (loaded
# at boot while capture is on, config remoteioBuffer > 0); write(text) adds
# an entry without printing it.
#
# Calls: the server's `call` request runs a handler with the JSON arguments
# as keyword arguments; the reply carries its JSON result, or the exception's
# type and message. The results of the last RESULTS call ids are kept, so a
# call resent after a link drop (same id) gets its first reply and does not
# run twice — within one boot: the replies carry the boot count, so the host
# can tell when a device restarted between a call and its answer.
import asyncio

from uota import hal

RESULTS = 64
CALL_TIMEOUT_MS = 10000  # an async handler that never returns

_handlers = {}
_results = {}  # call id -> (ok, value) or None while it runs
_order = []  # call ids, oldest first


def on(name):
    """Register the decorated function (sync or async) as the handler of
    calls named name; it gets the call's arguments as keyword arguments."""

    def register(fn):
        _handlers[name] = fn
        return fn

    return register


def handler(name):
    """The handler registered for name (built-ins included), or None."""
    return _handlers.get(name) or _BUILTINS.get(name)


def write(text):
    """Put text into the output ring as one entry, without printing it."""
    from uota import output

    output.write(text)


# --- calls ----------------------------------------------------------------------


def _remember(cid, result):
    if cid not in _results:
        _order.append(cid)
        while len(_order) > RESULTS:
            _results.pop(_order.pop(0), None)
    _results[cid] = result


async def call(cid, name, args):
    """Run the call cid once: (ok, value, duplicate). ok False: value is
    (error code, message, exception type). cid None: run it, remember
    nothing."""
    if cid is not None and cid in _results:
        while _results.get(cid, 1) is None:  # the first one still runs
            await asyncio.sleep_ms(20)
        done = _results.get(cid)
        if done is not None:
            return done[0], done[1], True
    fn = handler(name)
    if fn is None:
        return False, ("unknown_handler", "no handler named %s" % name, ""), False
    if cid is not None:
        _remember(cid, None)
    try:
        r = fn(**args)
        if hasattr(r, "send"):  # a coroutine: an async handler
            r = await asyncio.wait_for_ms(r, CALL_TIMEOUT_MS)
        if _plain(r):
            result = (True, r)
        else:
            result = (False, ("bad_result", "%s returned a %s, which JSON cannot hold" % (name, type(r).__name__), "TypeError"))
    except asyncio.TimeoutError:
        result = (False, ("call_timeout", "%s did not return within %d ms" % (name, CALL_TIMEOUT_MS), "TimeoutError"))
    except Exception as e:
        result = (False, ("call_failed", "%s: %s" % (type(e).__name__, e), type(e).__name__))
    if cid is not None:
        _remember(cid, result)
    return result[0], result[1], False


def _plain(v, depth=0):
    """Whether JSON holds v as it is (MicroPython's json.dumps writes the
    repr of anything else, which no host can parse)."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return True
    if depth > 20:
        return False
    if isinstance(v, (list, tuple)):
        return all(_plain(x, depth + 1) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _plain(x, depth + 1) for k, x in v.items())
    return False


def _version():
    from uota import release

    return release.read_version()


def _info():
    return {
        "version": _version(),
        "platform": hal.platform(),
        "id": hal.unique_id(),
        "mem_free": hal.mem_free(),
        "uptime_ms": hal.uptime_ms(),
        "handlers": sorted(_handlers),
    }


_BUILTINS = {
    "ping": lambda: "pong",
    "uptime_ms": hal.uptime_ms,
    "free_mem": hal.mem_free,
    "version": _version,
    "info": _info,
}
