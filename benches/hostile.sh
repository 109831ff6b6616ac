#!/usr/bin/env bash
# One client never slows the others (issue 22): a steady `pgbench -S` load through pgroute
# (8 clients, default configuration) alone, then with each attack of benches/hostile.py
# beside it (starting a second after the load, which is connected by then), then with the
# same attack aimed at a second pgroute on the same machine that serves nothing else (the
# control: what the attack's CPU alone costs the load on these shared cores). Prints the
# load's tps and p99 latency (ms, from pgbench's per-transaction log) each way, the ratios
# to the load alone, and pgroute's resident memory after the attack.
# Goal: tps >= 0.8x and p99 <= 2x under every attack.
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
c_port=$(free_port)
sed "s/127.0.0.1:$h_port/127.0.0.1:$c_port/" "$work/hostile.toml" >"$work/control.toml"
binary=${PGROUTE_HOSTILE_BIN:-target/release/pgroute}
RUST_LOG=warn setsid "$binary" --config "$work/hostile.toml" >/dev/null 2>&1 </dev/null &
h_pid=$!
RUST_LOG=warn setsid "$binary" --config "$work/control.toml" >/dev/null 2>&1 </dev/null &
c_pid=$!
trap 'kill "$h_pid" "$c_pid" 2>/dev/null || true; cleanup' EXIT
for port in "$h_port" "$c_port"; do
    for _ in $(seq 50); do
        (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break
        sleep 0.1
    done
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

# The load with `attack` aimed at `port` from a second in: "tps p99".
beside() {
    (sleep 1 && python3 benches/hostile.py "$1" "$2" "$secs") &
    local apid=$!
    steady
    wait "$apid" 2>/dev/null || true
}

printf '%-14s | %-16s | %-16s | %-16s | %-11s | %-11s | %s\n' attack "alone tps, p99" "with tps, p99" \
    "control tps, p99" "with: tps x" "with: p99 x" "control: tps x, p99 x; RSS MiB"
for attack in "${attacks[@]}"; do
    read -r at ap99 <<<"$(steady)"
    read -r wt wp99 <<<"$(beside "$attack" "$h_port")"
    rss=$(awk '/^VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$h_pid/status" 2>/dev/null || echo -)
    sleep 2
    read -r ct cp99 <<<"$(beside "$attack" "$c_port")"
    printf '%-14s | %6s, %-8s | %6s, %-8s | %6s, %-8s | %-11s | %-11s | %s, %s; %s\n' "$attack" "$at" "$ap99" \
        "$wt" "$wp99" "$ct" "$cp99" "$(ratio "$wt" "$at")" "$(ratio "$wp99" "$ap99")" \
        "$(ratio "$ct" "$at")" "$(ratio "$cp99" "$ap99")" "$rss"
    sleep 2
done
echo "(pgbench -S, 8 clients, ${secs}s per run, through pgroute with two replicas; the attack runs from the run's"
echo " second second; control: the same attack against another pgroute on this machine; p99 in ms)"
