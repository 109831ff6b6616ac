#!/usr/bin/env bash
# End-to-end benchmark: pgbench straight to the primary vs through pgroute, in the same
# run, for -S (select-only) and TPC-B in all three protocol modes. Prints tps and ratios.
#
#   benches/pgbench.sh [seconds per run, default 10] [clients, default 8]
#   PGROUTE_BASELINE=/path/to/older/pgroute benches/pgbench.sh   # also that build, same run
#
# For each proxy it prints tps, the ratio to direct, and its CPU time per transaction
# (from /proc, user + system), which the shared cores' noise affects far less than tps.
#
# Starts its own cluster (scripts/cluster.sh) and a release build of pgroute; both are
# stopped on exit. Note: "direct" runs everything on the primary, pgroute spreads -S over
# two replicas on the same 2 cores, so the ratio measures the proxy's whole cost.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
clients=${2:-8}

# shellcheck source=benches/common.sh
source benches/common.sh

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

if [[ -n ${PGROUTE_BASELINE:-} ]]; then
    printf '%-22s %10s %10s %7s %8s %10s %7s %8s %9s\n' test direct pgroute ratio 'us/tx' baseline ratio 'us/tx' new/base
else
    printf '%-22s %10s %10s %7s %8s\n' test direct pgroute ratio 'us/tx'
fi
for workload in select-only tpc-b; do
    extra=()
    [[ $workload == select-only ]] && extra=(-S)
    for mode in simple extended prepared; do
        read -r d _ < <(tps "$PGROUTE_PRIMARY_PORT" "" "$mode" "${extra[@]}")
        read -r p pc < <(tps "$proxy_port" "$proxy_pid" "$mode" "${extra[@]}")
        if [[ -n ${PGROUTE_BASELINE:-} ]]; then
            read -r b bc < <(tps "$base_port" "$base_pid" "$mode" "${extra[@]}")
            printf '%-22s %10.0f %10.0f %7s %8s %10.0f %7s %8s %9s\n' "$workload $mode" "$d" "$p" "$(ratio "$p" "$d")" \
                "$pc" "$b" "$(ratio "$b" "$d")" "$bc" "$(ratio "$p" "$b")"
        else
            printf '%-22s %10.0f %10.0f %7s %8s\n' "$workload $mode" "$d" "$p" "$(ratio "$p" "$d")" "$pc"
        fi
    done
done
