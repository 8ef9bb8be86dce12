# Transports bring a link up and feed its connections to the OTA server.
# Each module has `async def start(cfg, server) -> bool`.
from uota import log


def _module(name):
    if name == "wifi_tcp":
        from uota.transports import wifi_tcp

        return wifi_tcp
    return None


async def start_all(cfg, server):
    """Start the configured transports; returns the names that started. With
    none started, wifi_tcp is tried so that the device stays reachable."""
    started = []
    for name in cfg.transports:
        mod = _module(name)
        if mod is None:
            log.warn("transport %s is not available in this runtime" % name)
            continue
        try:
            if await mod.start(cfg, server):
                started.append(name)
        except Exception as e:
            log.error("transport %s failed to start" % name, e)
    if not started and "wifi_tcp" not in cfg.transports:
        log.warn("no transport started; falling back to wifi_tcp")
        try:
            if await _module("wifi_tcp").start(cfg, server):
                started.append("wifi_tcp")
        except Exception as e:
            log.error("wifi_tcp failed to start", e)
    return started
