#!/usr/bin/env python3
"""A TCP relay that behaves like a slower network link: each direction is
limited to a byte rate and delayed by half a round-trip time.

    python3 benches/link_emulator.py --listen 127.0.0.1:9000 --to 127.0.0.1:2018 \
        --rate 1000000 --rtt-ms 5

or, from a benchmark, `LinkEmulator(...).start()` in a background thread.
Loopback only: it refuses addresses outside 127.0.0.0/8 and ::1.
"""

import argparse
import asyncio
import ipaddress
import threading
import time

CHUNK = 1460  # a TCP segment's payload on Ethernet


def _loopback(host):
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"{host} is not a loopback address")


class LinkEmulator:
    """Relay listen -> target; rate in bytes/s (0: unlimited), rtt in seconds."""

    def __init__(self, listen_host, listen_port, target_host, target_port, rate=0, rtt=0.0):
        _loopback(listen_host)
        _loopback(target_host)
        self.listen = (listen_host, listen_port)
        self.target = (target_host, target_port)
        self.rate = rate
        self.rtt = rtt
        self.loop = None
        self.server = None
        self.ready = threading.Event()

    async def _pipe(self, reader, writer):
        # Bytes leave the link at most `rate` per second (serialisation), and
        # arrive half a round trip after they left.
        queue = asyncio.Queue()
        busy_until = time.monotonic()

        async def deliver():
            while True:
                at, data = await queue.get()
                if data is None:
                    break
                delay = at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
            try:
                writer.close()
            except Exception:
                pass

        task = asyncio.ensure_future(deliver())
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                now = time.monotonic()
                start = max(now, busy_until)
                busy_until = start + (len(data) / self.rate if self.rate else 0)
                await queue.put((busy_until + self.rtt / 2, data))
        except (ConnectionError, OSError):
            pass
        await queue.put((0, None))
        await task

    async def _client(self, reader, writer):
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer), return_exceptions=True)

    async def _main(self):
        self.server = await asyncio.start_server(self._client, *self.listen)
        self.listen = self.server.sockets[0].getsockname()[:2]
        self.ready.set()
        async with self.server:
            await self.server.serve_forever()

    def start(self):
        """Run in a daemon thread; returns (host, port) it listens on."""

        def run():
            self.loop = asyncio.new_event_loop()
            try:
                self.loop.run_until_complete(self._main())
            except asyncio.CancelledError:
                pass

        threading.Thread(target=run, daemon=True).start()
        self.ready.wait(10)
        return self.listen

    def stop(self):
        if self.loop is not None and self.server is not None:
            self.loop.call_soon_threadsafe(self.server.close)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True, help="HOST:PORT")
    ap.add_argument("--to", required=True, help="HOST:PORT")
    ap.add_argument("--rate", type=int, default=0, help="bytes per second each way (0: unlimited)")
    ap.add_argument("--rtt-ms", type=float, default=0)
    a = ap.parse_args()
    lh, lp = a.listen.rsplit(":", 1)
    th, tp = a.to.rsplit(":", 1)
    emu = LinkEmulator(lh, int(lp), th, int(tp), a.rate, a.rtt_ms / 1000)
    print("relaying %s:%d -> %s:%s" % (*emu.start(), th, tp), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
