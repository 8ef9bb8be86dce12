#!/bin/sh
# Full power-cut matrices: cut the power of a virtual device (littlefs image)
# at EVERY mutating block operation of an update (A -> B) and of an automatic
# rollback (broken C -> B), once before the operation and once in the middle
# of it (a torn write), and check that each device recovers to exactly one
# whole release. See tests/power_cut.rs.
#
#     sh benches/power_cut.sh                  # both matrices
#     sh benches/power_cut.sh full_matrix_update
#
# Needs `micropython` (the unix port) on PATH or in $UOTA_MICROPYTHON.
# UOTA_POWER_CUT_JOBS sets how many devices run at once (default 2).
# Prints, per scenario, W (the operations of an uncut run), the outcomes, the
# time, and "cut points: X, bad outcomes: Y"; exits non-zero on a bad outcome.
set -e
cd "$(dirname "$0")/.."
filter="${1:-full_matrix}"
start=$(date +%s)
status=0
cargo test --release --test power_cut -- --ignored --nocapture --test-threads 1 "$filter" || status=$?
echo "power-cut matrices: $(( $(date +%s) - start )) s in all (build included), exit $status"
exit $status
