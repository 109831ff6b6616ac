#!/usr/bin/env bash
# One client never slows the others (issue 22): a steady `pgbench -S` load through pgroute
# (8 clients, default configuration) alone, then beside each attack of benches/hostile.py
# in turn; prints the steady load's tps and p99 latency (ms, from pgbench's
# per-transaction log) without and with the attack, their ratios, and pgroute's resident
# memory after the attack. Goal: tps >= 0.8x and p99 <= 2x under every attack.
#
#   benches/hostile.sh [seconds per run, default 10] [attack ...]
#
# PGROUTE_HOSTILE_BIN runs another pgroute build instead (a build of 228a125 shows the
# bench can fail: under `freeze` its steady load stops; pgbench is cut off after 3x the
# run's length and counts 0 tps).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
shift || true
attacks=("$@")
[[ ${#attacks[@]} -gt 0 ]] || attacks=(freeze unknown-users slow-logins no-reader quadratic churn)
clients=8

# shellcheck source=benches/common.sh
source benches/common.sh

h_port=$(free_port)
{
    config "$h_port"
    printf '\n[[users]]\nname = "postgres"\nauth = "trust"\n'
} >"$work/hostile.toml"
RUST_LOG=warn setsid "${PGROUTE_HOSTILE_BIN:-target/release/pgroute}" --config "$work/hostile.toml" \
    >/dev/null 2>&1 </dev/null &
h_pid=$!
trap 'kill "$h_pid" 2>/dev/null || true; cleanup' EXIT
for _ in $(seq 50); do
    (echo >/dev/tcp/127.0.0.1/"$h_port") 2>/dev/null && break
    sleep 0.1
done

# The steady load: "tps p99".
steady() {
    local logs=$work/log.$RANDOM
    mkdir -p "$logs"
    local out
    out=$(cd "$logs" && timeout "$((secs * 3))" pgbench -h 127.0.0.1 -p "$h_port" -n -S -c 8 -j 2 -T "$secs" -l 2>&1) || true
    local tps p99
    tps=$(awk '/^tps = / {printf "%.0f", $3; exit}' <<<"$out")
    p99=$(cat "$logs"/pgbench_log.* 2>/dev/null | awk '{print $3}' | sort -n | awk '{a[NR] = $1} END {
        if (NR == 0) print "-"; else printf "%.2f", a[int(NR * 0.99) + 1] / 1000 }')
    echo "${tps:-0} ${p99:--}"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0 && a != "-") printf "%.2f", a / b; else print "-" }'; }

printf '%-14s | %-18s | %-18s | %-6s | %-6s | %s\n' attack "alone tps, p99 ms" "with tps, p99 ms" "tps x" "p99 x" "RSS MiB"
for attack in "${attacks[@]}"; do
    read -r at ap99 <<<"$(steady)"
    python3 benches/hostile.py "$attack" "$h_port" "$((secs + 2))" &
    apid=$!
    sleep 1
    read -r wt wp99 <<<"$(steady)"
    kill "$apid" 2>/dev/null || true
    wait "$apid" 2>/dev/null || true
    rss=$(awk '/^VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$h_pid/status" 2>/dev/null || echo -)
    printf '%-14s | %7s, %-9s | %7s, %-9s | %-6s | %-6s | %s\n' "$attack" "$at" "$ap99" "$wt" "$wp99" \
        "$(ratio "$wt" "$at")" "$(ratio "$wp99" "$ap99")" "$rss"
    sleep 2
done
echo "(pgbench -S, 8 clients, ${secs}s per run, through pgroute with two replicas; the attack runs beside the second run)"
