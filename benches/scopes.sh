#!/usr/bin/env bash
# What the default causal scope costs where it should cost nothing: pgbench -S (no
# writes, so no read ever waits) and TPC-B (its reads run inside its transactions)
# through pgroute as shipped (causal_scope = "instance") and through pgroute with
# causal_scope = "none", alternating in one run, 3 rounds per test. Prints tps, the
# ratio default / none per round and overall, and CPU microseconds per transaction.
#
#   benches/scopes.sh [seconds per run, default 10] [clients, default 8]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
clients=${2:-8}

# shellcheck source=benches/common.sh
source benches/common.sh

none_port=$(free_port)
config "$none_port" | sed 's/^\[pool\]$/[routing]\ncausal_scope = "none"\n[pool]/' >"$work/none.toml"
none_pid=$(launch_proxy target/release/pgroute "$work/none.toml" "$none_port")
trap 'kill "$none_pid" 2>/dev/null || true; cleanup' EXIT

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
printf '%-20s %5s %10s %8s %10s %8s %7s\n' test round default 'us/tx' none 'us/tx' ratio
for workload in select-only tpc-b; do
    extra=()
    [[ $workload == select-only ]] && extra=(-S)
    sum_d=0 sum_n=0
    for round in 1 2 3; do
        read -r d dc < <(tps "$proxy_port" "$proxy_pid" extended "${extra[@]}")
        read -r n nc < <(tps "$none_port" "$none_pid" extended "${extra[@]}")
        printf '%-20s %5s %10.0f %8s %10.0f %8s %7s\n' "$workload extended" "$round" "$d" "$dc" "$n" "$nc" "$(ratio "$d" "$n")"
        sum_d=$(awk -v a="$sum_d" -v b="$d" 'BEGIN {print a + b}')
        sum_n=$(awk -v a="$sum_n" -v b="$n" 'BEGIN {print a + b}')
    done
    printf '%-20s %5s %10.0f %8s %10.0f %8s %7s\n' "$workload extended" all "$(ratio "$sum_d" 3)" "" "$(ratio "$sum_n" 3)" "" "$(ratio "$sum_d" "$sum_n")"
done
