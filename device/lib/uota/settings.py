# Settings baked in when uota renders the runtime for a build.
# Keys of /config/ota.json ("port", "sessionTimeout", "transports", "legacy")
# override them at run time.
RUNTIME_VERSION = "{{runtime_version}}"
PORT = {{port}}
MAX_FRAME = {{max_frame}}
SESSION_TIMEOUT = {{session_timeout}}
TRANSPORTS = {{transports}}
