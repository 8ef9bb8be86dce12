# uota device runtime: receives over-the-air updates and runs the app.
# boot.py calls uota.boot_guard.boot() and then uota.runtime.main().
#
# RAM: a module is loaded when it is first needed and unloaded again when
# the device is idle (hal.unload()), so that an idle device holds only
# the modules that serve a connection and run the app (docs/device-runtime.md,
# "RAM").
#
# For apps:
#   from uota import confirm, pending
#   confirm()   the running release works: keep it (it is no longer rolled
#               back) and delete the previous one. Returns True when the
#               running release is confirmed (also when it already was).
#   pending()   True while the running release awaits confirmation.


def confirm():
    from uota import runtime

    return runtime.confirm()


def pending():
    from uota import boot_state

    return boot_state.is_pending()

