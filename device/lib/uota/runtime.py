# The runtime's entry point, called by boot.py; never returns.
#
# 1. load the config, finish an interrupted commit or drop an unfinished push
# 2. start the transports (the OTA server) on an asyncio loop
# 3. mark the boot good (the server is up), then start the app
#
# The app contract: the module named by config "app" (default "main") defines
# run(). `async def run()` becomes an asyncio task beside the OTA server. A
# plain `def run()` runs in a _thread thread; a board without _thread
# (ESP8266) runs it on the event loop after syncAppDelay seconds, which stops
# the OTA server while it runs (make run() async there). An app exception is
# logged and never stops the OTA server.
import asyncio

from uota import hal, log, config, release, boot_guard, settings


def main():
    cfg = config.load()
    log.set_level(cfg.log_level)
    log.info("uota runtime %s on %s" % (settings.RUNTIME_VERSION, hal.platform()))
    try:
        release.recover()
    except Exception as e:
        log.error("could not finish or clean the staging area", e)
    asyncio.run(_main(cfg))


async def _main(cfg):
    from uota import server, transports

    srv = server.Server(cfg)
    srv.start()
    while not await transports.start_all(cfg, srv):
        log.error("no transport started; retrying in 5 s")
        await asyncio.sleep(5)
    boot_guard.mark_good()
    start_app(cfg)
    # On the unix port an app thread's hal.reset() is finished here, in the
    # main thread, where SystemExit ends the process.
    tick = 100 if hal.UNIX else 60000
    while True:
        await asyncio.sleep_ms(tick)
        if hal.reset_requested():
            hal.reset()


def start_app(cfg):
    name = cfg.app
    try:
        mod = __import__(name)
    except Exception as e:
        if isinstance(e, ImportError) and name in str(e):
            log.warn("no app installed (no module %s)" % name)
        else:
            log.error("app %s failed to import" % name, e)
        return
    run = getattr(mod, "run", None)
    if run is None:
        log.warn("app %s has no run()" % name)
        return
    if type(run).__name__ == "generator":  # async def run()
        asyncio.create_task(_run_async(run))
    elif hal.has_threads():
        try:
            hal.start_thread(lambda: _run_sync(run), int(cfg.get("appStack", 8192)))
        except Exception as e:
            log.error("could not start the app thread", e)
    else:
        delay = cfg.sync_app_delay
        log.warn("no _thread: sync run() starts in %d s and blocks OTA while it runs; use async def run()" % delay)
        asyncio.create_task(_run_sync_later(run, delay))


async def _run_async(run):
    try:
        await run()
        log.info("app returned")
    except Exception as e:
        log.error("app crashed", e)


def _run_sync(run):
    try:
        r = run()
        if hasattr(r, "send"):
            log.warn("run() returned a coroutine; declare it `async def run()`")
        else:
            log.info("app returned")
    except Exception as e:
        log.error("app crashed", e)


async def _run_sync_later(run, delay):
    await asyncio.sleep(delay)
    _run_sync(run)
