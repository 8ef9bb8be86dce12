"""The ``uota`` command: ``python -m uota`` and the console script installed by pip."""

import signal
import sys

from uota._uota import run_cli


def main() -> None:
    """Run the ``uota`` command line with ``sys.argv`` and exit with its code."""
    # Behave like the native binary: Ctrl-C ends the command at once
    # (``uota sim`` installs its own handler to stop the device cleanly).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.exit(run_cli(["uota", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
