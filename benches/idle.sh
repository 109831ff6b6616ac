#!/usr/bin/env bash
# Idle clients: pgroute's memory per idle client connection, and whether pgbench through
# pgroute keeps its throughput while they sit there.
#
#   benches/idle.sh [idle clients, default 10000] [seconds per pgbench run, default 10]
#
# Prints pgroute's RSS before and after opening the clients (from /proc), the KiB per idle
# client, how long opening them took, and pgbench -S tps through pgroute without and with
# them. The idle clients log in as `postgres` (trust, to pgroute and to the test cluster)
# with a raw-protocol client (benches/idle_clients.py), so the client side stays cheap.
set -euo pipefail
cd "$(dirname "$0")/.."
idle=${1:-10000}
secs=${2:-10}
clients=8

# shellcheck source=benches/common.sh
source benches/common.sh

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# common.sh's proxy has no trust user: start one that has, with room for the clients.
port=$(free_port)
{
    config "$port" | sed "s/^\[listen\]$/[listen]\nmax_client_conn = $((idle + 100))/"
    printf '\n[[users]]\nname = "postgres"\nauth = "trust"\n'
} >"$work/idle.toml"
pid=$(launch_proxy target/release/pgroute "$work/idle.toml" "$port")

read -r before_tps _ < <(tps "$port" "$pid" simple -S)
before=$(rss_kib "$pid")
fifo=$work/hold
mkfifo "$fifo"
python3 benches/idle_clients.py "$port" "$idle" postgres app <"$fifo" >"$work/idle.out" 2>&1 &
holder=$!
exec 9>"$fifo"
for _ in $(seq 600); do
    grep -q opened "$work/idle.out" 2>/dev/null && break
    kill -0 "$holder" 2>/dev/null || break
    sleep 0.2
done
cat "$work/idle.out"
sleep 1
after=$(rss_kib "$pid")
read -r during_tps _ < <(tps "$port" "$pid" simple -S)
exec 9>&-
wait "$holder" || true
kill "$pid" 2>/dev/null || true

awk -v b="$before" -v a="$after" -v n="$idle" -v t0="$before_tps" -v t1="$during_tps" 'BEGIN {
    printf "pgroute RSS: %.1f MiB before, %.1f MiB with %d idle clients: %.2f KiB per idle client\n", b/1024, a/1024, n, (a-b)/n
    printf "pgbench -S simple through pgroute: %.0f tps alone, %.0f tps with the idle clients (%.2f)\n", t0, t1, t1/t0
}'
