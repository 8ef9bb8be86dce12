# The app of the RemoteIO tests (tests/remoteio.rs and
# tests/python/test_remoteio.py): handlers for each kind of call, and a
# `tick N` line printed every PERIOD_MS.
import asyncio
import os
from uota import remoteio

remoteio.CALL_TIMEOUT_MS = 500
PERIOD_MS = 100  # tests/remoteio.rs sets its own
try:
    os.mkdir("/data")
except OSError:
    pass


@remoteio.on("append")
def append(n=0):
    with open("/data/calls.txt", "a") as f:
        f.write("%d\n" % n)
    return n


@remoteio.on("add")
async def add(a=0, b=0):
    await asyncio.sleep_ms(1)
    return a + b


@remoteio.on("boom")
def boom():
    raise ValueError("boom")


@remoteio.on("hang")
async def hang():
    await asyncio.sleep(3600)


@remoteio.on("unjsonable")
def unjsonable():
    return object()


async def run():
    n = 0
    while True:
        print("tick", n)
        n += 1
        await asyncio.sleep_ms(PERIOD_MS)
