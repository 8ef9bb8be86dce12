# Entry point of the app.
#
# The uota device runtime imports this module after boot and runs
# `await run()` as a task next to its OTA server, so run() must not block:
# everything it does waits with `await`. The app's code lives in app/.


async def run():
    from app import counter

    await counter.main()
