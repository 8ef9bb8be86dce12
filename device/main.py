# Placeholder app, installed until a project pushes its own main.py.
#
# The uota runtime imports this module and calls run(). Your main.py may
# define `def run()` (started in a thread where the board has _thread) or
# `async def run()` (started as an asyncio task beside the OTA server).


def run():
    print("[app] no app installed")
