#!/usr/bin/env bash
# End-to-end benchmark: pgbench straight to the primary vs through pgroute, in the same
# run, for -S (select-only) and TPC-B in all three protocol modes. Prints tps and ratios.
#
#   benches/pgbench.sh [seconds per run, default 10] [clients, default 8]
#
# Starts its own cluster (scripts/cluster.sh) and a release build of pgroute; both are
# stopped on exit. Note: "direct" runs everything on the primary, pgroute spreads -S over
# two replicas on the same 2 cores, so the ratio measures the proxy's whole cost.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
clients=${2:-8}

cargo build --release --quiet
eval "$(scripts/cluster.sh start --replicas 2 --owner-pid $$ 2>/dev/null)"
work=$(mktemp -d)
cleanup() {
    [[ -n ${proxy_pid:-} ]] && kill "$proxy_pid" 2>/dev/null || true
    scripts/cluster.sh stop "$PGROUTE_CLUSTER_DIR" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

proxy_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
IFS=, read -r r1 r2 <<<"$PGROUTE_REPLICA_PORTS"
cat >"$work/proxy.toml" <<TOML
[listen]
address = "127.0.0.1:$proxy_port"
[pool]
size = 20
[[nodes]]
name = "pg0"
host = "127.0.0.1"
port = $PGROUTE_PRIMARY_PORT
role = "primary"
[[nodes]]
name = "pg1"
host = "127.0.0.1"
port = $r1
role = "replica"
[[nodes]]
name = "pg2"
host = "127.0.0.1"
port = $r2
role = "replica"
[[users]]
name = "app"
password = "app"
TOML
RUST_LOG=warn target/release/pgroute --config "$work/proxy.toml" &
proxy_pid=$!
for _ in $(seq 50); do
    (echo >/dev/tcp/127.0.0.1/"$proxy_port") 2>/dev/null && break
    sleep 0.1
done

export PGPASSWORD=app PGUSER=app PGDATABASE=app
pgbench -h 127.0.0.1 -p "$PGROUTE_PRIMARY_PORT" -i -s 10 -q >/dev/null 2>&1
sleep 1

tps() { # port mode extra-args...
    local port=$1 mode=$2
    shift 2
    pgbench -h 127.0.0.1 -p "$port" -M "$mode" -c "$clients" -j 2 -T "$secs" "$@" 2>&1 |
        awk '/^tps = / {print $3; exit}'
}

printf '%-22s %12s %12s %7s\n' test direct pgroute ratio
for workload in select-only tpc-b; do
    extra=()
    [[ $workload == select-only ]] && extra=(-S)
    for mode in simple extended prepared; do
        d=$(tps "$PGROUTE_PRIMARY_PORT" "$mode" "${extra[@]}")
        p=$(tps "$proxy_port" "$mode" "${extra[@]}")
        printf '%-22s %12.0f %12.0f %7.2f\n' "$workload $mode" "$d" "$p" "$(awk -v a="$p" -v b="$d" 'BEGIN {print a / b}')"
    done
done
