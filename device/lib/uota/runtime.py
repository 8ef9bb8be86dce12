# The runtime's entry point, called by boot.py; never returns.
#
# 1. load the config (boot_guard.boot() has already finished an interrupted
#    commit or rollback and counted this boot)
# 2. start the transports (the OTA server) on an asyncio loop
# 3. mark the boot good (the server is up), start the app, the watchdog and,
#    for a pending release, the confirmation timer
#
# The app contract: the module named by config "app" (default "main") defines
# run(). Where there is _thread, the module is imported in the app thread (so
# a micro-ota main.py, which runs its app at import, does not block the OTA
# server); a plain `def run()` then runs in that thread, and `async def run()`
# becomes an asyncio task beside the OTA server (started by the main loop). A
# board without _thread (ESP8266) imports it on the event loop and runs a
# plain run() there after syncAppDelay seconds, which stops the OTA server
# while it runs (make run() async there). An app exception never stops the
# OTA server; while the release is pending it resets the device (one boot
# attempt used, reason "app_crash").
import asyncio

import sys

# boot_state stays loaded: it remembers whether this boot committed a release.
from uota import boot_state, config, hal, log, server, settings, transports

# Requests from app threads, served by the main loop (the unix port has no
# GIL, so the flash is only ever written from the main thread).
_confirm_asked = 0
_confirm_done = 0
_confirm_result = False
_fail_reason = None
_async_run = None  # an async run() the app thread found, for the main loop
_imported = False  # the app thread has imported the app (or found none)
# How long the main loop waits for the app thread's import before serving.
IMPORT_WAIT_MS = 1000
# The app thread's stack on boards (config "appStack"): it compiles the app's
# module too (micro-ota's boot.py gives its app thread the same).
APP_STACK = 16384

def main(recovered=False):
    # The modules an idle device keeps loaded: these, and what they import.
    # Everything else (boot state, pushes, commands, ...) is loaded when a
    # boot step or a connection needs it and unloaded when the device is
    # idle again (Server.idle()).
    resident = tuple(n for n in sys.modules if n.startswith("uota."))
    cfg = config.load()
    log.set_level(cfg.log_level)
    log.info("uota runtime %s on %s" % (settings.RUNTIME_VERSION, hal.platform()))
    if not recovered:
        try:
            from uota import recovery

            recovery.recover()
        except Exception as e:
            log.error("could not finish or clean the staging area", e)
    from uota import boot_guard

    if boot_guard.serial_session():  # armed from the REPL by a host
        from uota.transports import serial_stdio

        serial_stdio.serve_at_boot()  # resets afterwards
    try:
        asyncio.run(_main(cfg, resident))
    except KeyboardInterrupt:
        if hal.watchdog_fired():  # the unix watchdog's SIGINT
            _record_fail("watchdog")
            hal.reset()
        raise


def _record_fail(reason):
    try:
        return boot_state.failed(reason)
    except Exception as e:
        log.error("could not record the failure", e)
        return False


async def _main(cfg, resident):
    srv = server.Server(cfg)
    # RemoteIO's output ring (uota.output) and handlers (uota.remoteio,
    # loaded when the app imports it) are never unloaded.
    srv.resident = resident + ("uota.output", "uota.remoteio")
    if cfg.remoteio_buffer:
        from uota import output

        got = output.capture(cfg.remoteio_buffer)
        if got < cfg.remoteio_buffer:
            log.warn("low on RAM: RemoteIO keeps %d bytes of output (remoteioBuffer %d)" % (got, cfg.remoteio_buffer))
    srv.start()
    while not await transports.start_all(cfg, srv):
        log.error("no transport started; retrying in 5 s")
        await asyncio.sleep(5)
    from uota import boot_guard

    boot_guard.mark_good()
    boot_state.serving = bool(cfg.confirm_after)
    pending = boot_state.is_pending()
    del boot_guard
    if pending:
        log.info("release %s is pending: confirm() it%s" % (_version(), " or wait %s s" % cfg.confirm_after if cfg.confirm_after else ""))
    # The watchdog watches the loop from before the app starts, except on a
    # board without _thread, where a plain run() may have to block the loop
    # on purpose.
    watch = cfg.watchdog and hal.has_threads()
    if watch:
        _start_watchdog(cfg)
    on_loop = start_app(cfg)
    if cfg.watchdog and not watch:
        if on_loop:
            log.warn("no watchdog: the app's run() will block the event loop")
        else:
            _start_watchdog(cfg)
    if pending and cfg.confirm_after:
        asyncio.create_task(_confirm_later(cfg.confirm_after))
    srv.idle()
    # The heartbeat: feeds the watchdog, serves app threads' requests, and
    # on the unix port finishes an app thread's hal.reset() in the main
    # thread, where SystemExit ends the process.
    while True:
        hal.feed()
        await asyncio.sleep_ms(200)
        _serve_app_thread()


def _serve_app_thread():
    """What app threads asked of the main loop: a confirmation, a failure
    to record, an async run() to start, a reset."""
    global _confirm_done, _confirm_result, _fail_reason, _async_run
    if _confirm_asked != _confirm_done:
        n = _confirm_asked
        _confirm_result = _confirm_now()
        _confirm_done = n
    if _fail_reason is not None:
        _record_fail(_fail_reason)
        _fail_reason = None
    if _async_run is not None:
        asyncio.create_task(_run_async(_async_run))
        _async_run = None
    if hal.reset_requested():
        hal.reset()


def _start_watchdog(cfg):
    if not hal.watchdog_start(cfg.watchdog, _watchdog_last_words):
        log.warn("no watchdog on this board")


def _watchdog_last_words():
    # Called from the unix watchdog thread when the main thread did not
    # react to SIGINT; it is about to kill the process.
    _record_fail("watchdog")


async def _confirm_later(seconds):
    await asyncio.sleep(seconds)
    if _pending():
        _confirm_now()


def _pending():
    return boot_state.is_pending()


def _version():
    from uota import release

    return release.read_version()


def _confirm_now():
    try:
        from uota import lifecycle

        return lifecycle.confirm()
    except Exception as e:
        log.error("could not confirm the release", e)
        return False


def confirm():
    """uota.confirm(): see uota/__init__.py."""
    global _confirm_asked
    if hal.in_main_thread():
        return _confirm_now()
    # An app thread: the main loop confirms (it alone writes the flash).
    _confirm_asked += 1
    want = _confirm_asked
    for _ in range(200):
        if _confirm_done - want >= 0:
            return _confirm_result
        hal.sleep_ms(50)
    return False


def app_failed(reason="app_crash"):
    """The app failed. A pending release then resets (the failure uses up
    its boot attempt and is recorded as the reason for a rollback)."""
    global _fail_reason
    if not _pending():
        return
    log.error("pending release %s failed (%s): resetting" % (_version(), reason))
    if hal.in_main_thread() or not hal.UNIX:
        _record_fail(reason)
    else:
        _fail_reason = reason  # the main loop records it, then resets
    hal.reset()


def start_app(cfg):
    """Start the app. True when its run() will block the event loop (a plain
    run() on a board without _thread)."""
    if hal.has_threads():
        # The app's module is imported in the app thread, as micro-ota does:
        # a micro-ota main.py runs its app at import (app.run(), forever).
        try:
            hal.start_thread(lambda: _app_thread(cfg.app), int(cfg.get("appStack", APP_STACK)))
        except Exception as e:
            log.error("could not start the app thread", e)
            return False
        _await_import(IMPORT_WAIT_MS)
        return False
    run = _app_run(cfg.app)
    if run is None:
        return False
    if _is_async(run):
        asyncio.create_task(_run_async(run))
        return False
    delay = cfg.sync_app_delay
    log.warn("no _thread: sync run() starts in %d s and blocks OTA while it runs; use async def run()" % delay)
    asyncio.create_task(_run_sync_later(run, delay))
    return True


def _is_async(run):
    return type(run).__name__ == "generator"  # async def run()


def _app_run(name):
    """Import the app's module; its run(), or None (no app, no run(), or a
    failed import: then app_failed())."""
    try:
        mod = __import__(name)
    except Exception as e:
        if isinstance(e, ImportError) and name in str(e):
            log.warn("no app installed (no module %s)" % name)
        else:
            log.error("app %s failed to import" % name, e)
            app_failed()
        return None
    run = getattr(mod, "run", None)
    if run is None:
        log.warn("app %s has no run()" % name)
    return run


def _app_thread(name):
    """The app thread: import the app (which may never return), then run a
    plain run() here, or hand an async one to the main loop."""
    global _async_run, _imported
    run = _app_run(name)
    if run is not None and _is_async(run):
        _async_run = run  # the main loop starts it
    _imported = True
    if run is not None and not _is_async(run):
        _run_sync(run)


def _await_import(ms):
    """Give the app thread up to ms to import the app, without serving
    anyone meanwhile (connections wait in the listen backlog): an app that
    fails at import, or at once in its async run(), then fails before the
    server answers, as when the main loop imported it, so a host waiting for
    the new release sees the failure rather than a release that seems to run.
    An app that runs at import (micro-ota's) uses the time up; its server
    answers after it."""
    t0 = hal.ticks_ms()
    while not _imported and _fail_reason is None and not hal.reset_requested():
        if hal.ticks_diff(hal.ticks_ms(), t0) >= ms:
            break
        hal.feed()
        hal.sleep_ms(5)
    _serve_app_thread()


async def _run_async(run):
    try:
        await run()
        log.info("app returned")
    except Exception as e:
        log.error("app crashed", e)
        app_failed()


def _run_sync(run):
    try:
        r = run()
        if hasattr(r, "send"):
            log.warn("run() returned a coroutine; declare it `async def run()`")
        else:
            log.info("app returned")
    except Exception as e:
        log.error("app crashed", e)
        app_failed()


async def _run_sync_later(run, delay):
    await asyncio.sleep(delay)
    _run_sync(run)
