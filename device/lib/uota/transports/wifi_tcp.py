# OTA over TCP: bring WiFi up (through hal), then listen on (hal's listen
# address, cfg.port). The server accepts before WiFi has associated, so the
# device is reachable as soon as it gets an address; a watcher reconnects a
# dropped station every 30 s.
import asyncio

from uota import hal, log

WIFI_WAIT_MS = 20000


async def _wait_wifi(ms):
    t0 = hal.ticks_ms()
    while not hal.wifi_connected() and hal.ticks_diff(hal.ticks_ms(), t0) < ms:
        await asyncio.sleep_ms(200)
    return hal.wifi_connected()


async def _keep_wifi(cfg):
    while True:
        await asyncio.sleep(30)
        if not hal.wifi_connected():
            log.warn("wifi down, reconnecting")
            hal.wifi_reconnect(cfg.ssid, cfg.wifi_password)


async def start(cfg, server):
    if hal.has_wifi():
        if not hal.wifi_start(cfg.ssid, cfg.wifi_password, cfg.hostname):
            if not cfg.ssid:
                log.warn("no ssid in /config/ota.json; waiting for an existing connection")
            if not await _wait_wifi(WIFI_WAIT_MS):
                log.warn("wifi not connected yet")
        asyncio.create_task(_keep_wifi(cfg))
    host = hal.listen_host()
    try:
        listener = await asyncio.start_server(server.handle, host, cfg.port, 4)
    except OSError as e:
        hal.listen_failed(e)  # a virtual device on a taken port ends here
        raise
    server.listeners.append(listener)
    log.info("listening on %s:%d (%s)" % (host, cfg.port, hal.wifi_address()))
    # RemoteIO's port serves the same protocol (docs/remoteio.md).
    rport = cfg.remoteio_port
    if rport and rport != cfg.port:
        try:
            server.listeners.append(await asyncio.start_server(server.handle, host, rport, 4))
        except OSError as e:
            log.warn("RemoteIO port %d: %s" % (rport, e))
    return True
