#!/usr/bin/env bash
# Failover under a money workload, several times: each run is `tests/failover_money.rs`
# (its own cluster with synchronous replication, clients depositing, withdrawing and
# reading through pgroute, the primary killed mid-run and the most advanced standby
# promoted; then the old primary back as a second primary, then a replica killed).
# Prints each run's figures and their totals.
#
#   benches/failover.sh [runs, default 5]
#
# PGROUTE_FAILOVER_WORKERS (default 16 here, 8 in the test suite) and PGROUTE_FAILOVER_SECS (load before the kill
# and after the promotion, default 3) are passed through.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
export PGROUTE_FAILOVER_WORKERS=${PGROUTE_FAILOVER_WORKERS:-16}
cargo test --test failover_money --no-run >/dev/null 2>&1
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for i in $(seq "$runs"); do
    if ! cargo test --test failover_money -- --nocapture >"$out" 2>&1; then
        grep -E "FAILOVER|panicked|assert" "$out" >&2 || tail -30 "$out" >&2
        echo "run $i failed" >&2
        exit 1
    fi
    echo "run $i:"
    grep '^FAILOVER' "$out" | sed 's/^FAILOVER /  /'
done
