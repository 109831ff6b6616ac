#!/usr/bin/env bash
# Two pgroute builds compared on one workload, interleaved so that drift on a noisy machine
# (autovacuum, table growth, other load) falls on both: rounds of baseline, new, new,
# baseline. Prints each run, then the mean tps and proxy CPU per transaction of each build
# and their ratios.
#
#   PGROUTE_BASELINE=/path/to/older/pgroute benches/ab.sh [mode, default prepared] \
#       [seconds per run, default 10] [rounds, default 3] [-- pgbench args, e.g. -S]
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PGROUTE_BASELINE:?set PGROUTE_BASELINE to the pgroute binary to compare with}"
mode=${1:-prepared}
secs=${2:-10}
rounds=${3:-3}
shift $(($# < 3 ? $# : 3))
[[ ${1:-} == -- ]] && shift
clients=8

# shellcheck source=benches/common.sh
source benches/common.sh

results=()
one() { # name port pid pgbench-args...
    local name=$1 port=$2 pid=$3 t c
    shift 3
    read -r t c < <(tps "$port" "$pid" "$mode" "$@")
    printf '%-5s tps %8.0f  us/tx %7s\n' "$name" "$t" "$c"
    results+=("$name $t $c")
}
extra=("$@")
for _ in $(seq "$rounds"); do
    one base "$base_port" "$base_pid" "${extra[@]}"
    one new "$proxy_port" "$proxy_pid" "${extra[@]}"
    one new "$proxy_port" "$proxy_pid" "${extra[@]}"
    one base "$base_port" "$base_pid" "${extra[@]}"
done
printf '%s\n' "${results[@]}" | awk '
    { n[$1]++; t[$1] += $2; c[$1] += $3 }
    END {
        printf "mean  base: tps %.0f us/tx %.1f   new: tps %.0f us/tx %.1f\n", t["base"]/n["base"], c["base"]/n["base"], t["new"]/n["new"], c["new"]/n["new"]
        printf "new/base: tps %.2f  cpu per transaction %.2f\n", (t["new"]/n["new"]) / (t["base"]/n["base"]), (c["new"]/n["new"]) / (c["base"]/n["base"])
    }'
