# uota device runtime: receives over-the-air updates and runs the app.
# boot.py calls uota.boot_guard.boot() and then uota.runtime.main().
