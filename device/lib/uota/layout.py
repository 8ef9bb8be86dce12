# Where the runtime keeps things on flash: every path it owns, in one place
# (docs/device-runtime.md, "Layout on the device"). Names only: this module
# imports nothing and touches no file.
#
# Top-level names, relative as the path rules match them (paths.py):
STAGE_NAME = "ota_stage"
PREV_NAME = "ota_prev"  # every top-level name that starts with it
CONFIG_NAME = "config/ota.json"
SECRETS_NAME = "config/.ota.secrets.json"
# The state files: written through a temporary sibling (NAME.tmp) and a
# rename; no release may write or shadow them.
STATE_FILES = (
    "ota_manifest.txt", "ota_version.json", "ota_boot_state.json", "ota_floor.json",
    "ota_serial_session", "ota_settings.json",
)

# Absolute device paths.
CONFIG = "/config/ota.json"
SECRETS = "/config/.ota.secrets.json"
MANIFEST = "/ota_manifest.txt"  # the active release: "<sha256> <size> <path>" lines
VERSION = "/ota_version.json"  # {"version": "1.2.0"}
BOOT_STATE = "/ota_boot_state.json"  # boot_state.py
FLOOR = "/ota_floor.json"  # {"release": <highest release number accepted>}
SERIAL_SESSION = "/ota_serial_session"  # the next boot serves a serial session
SETTINGS = "/ota_settings.json"  # the guarded config keys in force (config.py)
FSCK = "/.uota_fsck"  # never exists: removing it is the write that finishes a cut rename (boot.py)

# Staging area of a push:
#   <path>              a staged file; it exists only once it has verified
#   .uota_part.<sha>    the file being received (one at a time); renamed to
#                       <path> when its size and sha256 verify
#   .uota_manifest      the pushed manifest, sorted, as received
#   .uota_manifest.in   the manifest of a begin still being received
#   .uota_session       the identity of a resumable session (JSON: version,
#                       mode, runtime, count, manifest = sha256 of its lines)
#   .uota_next          the active manifest the release will install
#   .uota_legacy        a stream_ota session's entries, in arrival order
#   .ready              the commit marker (JSON); it appears by a rename,
#                       the single commit point
STAGE = "/ota_stage"
MARKER = "/ota_stage/.ready"
STAGED_MANIFEST = "/ota_stage/.uota_manifest"
MANIFEST_IN = "/ota_stage/.uota_manifest.in"
NEXT_MANIFEST = "/ota_stage/.uota_next"
SESSION = "/ota_stage/.uota_session"
ARRIVED = "/ota_stage/.uota_legacy"
PART_PREFIX = ".uota_part."

# The previous release, kept while the active one is pending:
#   /ota_prev/<path>    files (and folders) in folders that later commits
#                       replaced or removed (moved here, never copied)
#   /ota_prev.<name>    the same for top-level files and folders: they leave
#                       the root by a rename inside the root folder
#                       (littlefs: a power cut inside a rename across folders
#                       leaves the source folder reading wrong until the next
#                       write, and boot.py must never go missing from the root)
#   /ota_prev_manifest  its manifest
#   /ota_prev_version   its /ota_version.json
#   /ota_prev_settings.json  the guarded-keys snapshot a runtime release replaced
#   /ota_prev_rollback  the rollback marker (lifecycle.py); /ota_prev_rollback2:
#                       its first step is done
PREV = "/ota_prev"
PREV_TOP = "/ota_prev."
PREV_MANIFEST = "/ota_prev_manifest"
PREV_VERSION = "/ota_prev_version"
PREV_SETTINGS = "/ota_prev_settings.json"
ROLLBACK = "/ota_prev_rollback"
ROLLBACK_R1_DONE = "/ota_prev_rollback2"


def stage_path(path):
    """Where the stage keeps the staged file of a release path."""
    return STAGE + "/" + path


def part_path(sha):
    """The partly received file with this sha256."""
    return STAGE + "/" + PART_PREFIX + sha


def prev_path(path):
    """Where the previous release keeps its copy of a release path."""
    return PREV + "/" + path if "/" in path else PREV_TOP + path
