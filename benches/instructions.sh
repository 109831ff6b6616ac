#!/usr/bin/env bash
# User-space instructions pgroute executes per transaction, counted by callgrind: exact and
# repeatable where timings on this shared machine drift by 5-15%. pgbench runs through a
# pgroute under valgrind twice (200, then 1200 transactions per client, 8 clients) and the
# difference is divided by the transactions between them, so logins and warm-up cancel out.
# With PGROUTE_BASELINE, the older build is counted the same way and the ratio printed.
# Kernel time is not counted: pair it with benches/ab.sh for CPU time.
#
#   [PGROUTE_BASELINE=/path/to/older/pgroute] benches/instructions.sh [mode, default extended] \
#       [-- pgbench args, e.g. -S]
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-extended}
shift $(($# < 1 ? $# : 1))
[[ ${1:-} == -- ]] && shift
secs=10
clients=8
command -v valgrind >/dev/null || apt-get install -y --no-install-recommends valgrind >/dev/null

# shellcheck source=benches/common.sh
source benches/common.sh

count() { # binary pgbench-args... -> instructions per transaction
    local bin=$1 port dir vpid a b
    shift
    port=$(free_port)
    dir=$(mktemp -d -p "$work")
    config "$port" >"$dir/proxy.toml"
    RUST_LOG=warn valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/cg.out" \
        "$bin" --config "$dir/proxy.toml" >"$dir/log" 2>&1 &
    vpid=$!
    for _ in $(seq 120); do
        (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break
        sleep 0.5
    done
    pgbench -h 127.0.0.1 -p "$port" -M "$mode" -c "$clients" -j 2 -t 200 -n "$@" >/dev/null
    for t in 200 1200; do
        callgrind_control -z "$vpid" >/dev/null
        callgrind_control -i on "$vpid" >/dev/null
        pgbench -h 127.0.0.1 -p "$port" -M "$mode" -c "$clients" -j 2 -t "$t" -n "$@" >/dev/null
        callgrind_control -i off "$vpid" >/dev/null
        callgrind_control -d "t$t" "$vpid" >/dev/null
    done
    kill -INT "$vpid"
    wait "$vpid" 2>/dev/null || true
    a=$(awk '/^totals:/ {print $2}' "$dir/cg.out.1")
    b=$(awk '/^totals:/ {print $2}' "$dir/cg.out.2")
    echo $(((b - a) / (clients * 1000)))
}

new=$(count target/release/pgroute "$@")
echo "new: $new instructions per transaction ($mode ${*:-TPC-B})"
if [[ -n ${PGROUTE_BASELINE:-} ]]; then
    base=$(count "$PGROUTE_BASELINE" "$@")
    echo "base: $base instructions per transaction"
    awk -v n="$new" -v b="$base" 'BEGIN { printf "new/base: %.3f\n", n / b }'
fi
