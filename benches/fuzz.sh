#!/usr/bin/env bash
# Fuzz uota for a bounded time: every cargo-fuzz target in fuzz/ (libFuzzer),
# then the protocol fuzzer against a virtual device (tests/fuzz_device.rs).
# Prints executions and findings per target. See docs/fuzzing.md.
#
# Usage: benches/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
#   SECONDS_PER_TARGET  default 60 (or $FUZZ_SECONDS)
#   TARGET...           default: all of them (`cargo fuzz list`)
#   FUZZ_DEVICE=short   the device fuzzer's default runs (300 + 200 legacy
#                       cases, ~30 s)
#   FUZZ_DEVICE=long    its #[ignore]d runs, 10x the cases (default, ~5 min)
#   FUZZ_DEVICE=0       skip the device fuzzer
#   FUZZ_JOBS=N         fuzz each target in N processes (libFuzzer -fork=N)
#
# cargo-fuzz needs a nightly compiler; on stable this script sets
# RUSTC_BOOTSTRAP=1. It installs cargo-fuzz when it is missing (about a
# minute). New corpus entries go to a scratch folder, so the committed seed
# corpus (fuzz/corpus/<target>/) only changes by hand; crashing inputs land in
# fuzz/artifacts/<target>/. Exits non-zero when anything was found.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-${FUZZ_SECONDS:-60}}
shift || true
device=${FUZZ_DEVICE:-long}
jobs=${FUZZ_JOBS:-1}
export RUSTC_BOOTSTRAP=1

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  timeout 1800 cargo install cargo-fuzz --locked
fi

cd fuzz
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi

echo "==> building ${#targets[@]} targets (release, ASan)"
build_start=$(date +%s)
timeout 3600 cargo fuzz build -O >/dev/null
echo "    built in $(( $(date +%s) - build_start )) s"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
found=0
rows=()
for t in "${targets[@]}"; do
  echo "==> $t for ${secs} s"
  mkdir -p "$work/$t" "artifacts/$t"
  before=$(find "artifacts/$t" -type f | wc -l)
  log="$work/$t.log"
  rc=0
  fork=()
  if [ "$jobs" -gt 1 ]; then fork=(-fork="$jobs"); fi
  timeout $(( secs + 300 )) cargo fuzz run -O "$t" "$work/$t" "corpus/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    "${fork[@]}" >"$log" 2>&1 || rc=$?
  # One process prints its totals as stat:: lines; -fork prints "#<execs>: …".
  execs=$(awk '/^stat::number_of_executed_units/ {n = $2} END {print n + 0}' "$log")
  if [ "$execs" -eq 0 ]; then
    execs=$(grep -o '^#[0-9]*:' "$log" | tail -1 | tr -dc 0-9)
    execs=${execs:-0}
  fi
  rate=$(( execs / (secs > 0 ? secs : 1) ))
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  after=$(find "artifacts/$t" -type f | wc -l)
  findings=$(( after - before ))
  if [ "$rc" -ne 0 ] && [ "$findings" -eq 0 ]; then
    findings=1 # libFuzzer failed without an artifact (e.g. out of memory): look at the log
    cp "$log" "artifacts/$t/run-$(date +%s).log"
  fi
  if [ "$findings" -gt 0 ]; then
    found=1
    grep -E 'panicked at|ERROR: libFuzzer|SUMMARY' "$log" | head -5 || true
    ls -t "artifacts/$t" | head -3 | sed "s|^|    artifacts/$t/|"
  fi
  rows+=("$(printf '%-20s %6s s %12s execs %9s/s  cov %-6s findings %s' \
    "$t" "$secs" "$execs" "$rate" "${cov:-?}" "$findings")")
done
cd ..

device_row="device fuzzer: skipped"
case "$device" in
  0 | no | skip) ;;
  *)
    # Both devices: the plain one and the one with micro-ota's legacy sessions.
    filter=survives_protocol_fuzzing
    extra=()
    if [ "$device" = long ]; then
      filter=survives_long_protocol_fuzzing
      extra=(--ignored)
    fi
    echo "==> device fuzzer ($device)"
    dlog="$work/device.log"
    drc=0
    start=$(date +%s)
    timeout 3600 cargo test --features cli --test fuzz_device -- "${extra[@]}" --nocapture --test-threads=1 \
      "$filter" >"$dlog" 2>&1 || drc=$?
    took=$(( $(date +%s) - start ))
    grep -E '^(device fuzzing|sessions by kind|error replies|errors the device logged|  [0-9]+ x|cases:|FINDING)' "$dlog" || true
    summary=$(grep -E '^cases: ' "$dlog" | paste -sd ';' - || true)
    device_row="device fuzzer ($device, 2 devices): ${summary:-no summary (see below)}; ${took} s"
    if [ "$drc" -ne 0 ]; then
      found=1
      tail -40 "$dlog"
    fi
    ;;
esac

echo
echo "==> summary"
for r in "${rows[@]}"; do echo "$r"; done
echo "$device_row"
exit "$found"
