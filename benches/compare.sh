#!/usr/bin/env bash
# pgroute against PgBouncer, side by side in one run: pgbench straight to the primary
# (direct), through pgroute (pgr: routing on, -S spreads over the two replicas), through
# pgroute configured with the primary alone (pgr1: routing on, every statement classified,
# the topology PgBouncer sees) and through PgBouncer (transaction pooling, the same pool
# size), alternating, for -S and TPC-B in the simple, extended and prepared modes, at
# several client counts.
#
#   benches/compare.sh [seconds per run, default 10] [client counts, default "8 64 256"]
#
# Prints, per test: tps of each, ratios to direct and to PgBouncer, p50 and p99 latency
# (ms, from pgbench's per-transaction log) and CPU microseconds per transaction of each
# proxy and of all PostgreSQL processes together (from /proc). The replicas run on the
# same two cores as the primary here, so spreading reads buys no capacity: pgr against
# pgr1 shows what three servers sharing the cores cost PostgreSQL.
# Writes the same as CSV to benches/compare-<date>.csv. PgBouncer 1.18 (Debian) is
# installed if missing (as root); it cannot do -M prepared in transaction mode, which
# shows as "fails". Direct runs above the servers' max_connections (200) are skipped.
# -M prepared runs one pgbench thread per client (-j = -c) for every target: pgbench
# prepares with a synchronous PQprepare that blocks its whole thread, so with fewer threads
# than clients a thread waiting for a pool connection stops its other clients, which hold
# the pool's connections in their transactions: a stall that any bounded transaction pool
# shows (pgroute and PgBouncer alike), not a property of the proxy.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
counts=${2:-"8 64 256"}
clients=8 # for benches/common.sh's pgbench initialisation

if ! command -v pgbouncer >/dev/null 2>&1 && [[ ! -x /usr/sbin/pgbouncer ]]; then
    apt-get install -y --no-install-recommends pgbouncer >/dev/null || {
        apt-get update >/dev/null && apt-get install -y --no-install-recommends pgbouncer >/dev/null
    }
fi
PGBOUNCER=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)

# shellcheck source=benches/common.sh
source benches/common.sh

# PgBouncer refuses to run as root: as postgres, from a directory it can read.
bdir=$(mktemp -d)
chmod 755 "$bdir"
bport=$(free_port)
cat >"$bdir/pgbouncer.ini" <<INI
[databases]
app = host=127.0.0.1 port=$PGROUTE_PRIMARY_PORT dbname=app
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bport
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $bdir/userlist.txt
pool_mode = transaction
default_pool_size = 20
max_client_conn = 2000
logfile = $bdir/pgbouncer.log
pidfile = $bdir/pgbouncer.pid
INI
echo '"app" "app"' >"$bdir/userlist.txt"
as_user=()
if [[ $(id -u) -eq 0 ]]; then
    chown -R postgres "$bdir"
    as_user=(runuser -u postgres --)
fi
"${as_user[@]}" "$PGBOUNCER" -d "$bdir/pgbouncer.ini"
for _ in $(seq 50); do
    [[ -s $bdir/pgbouncer.pid ]] && (echo >/dev/tcp/127.0.0.1/"$bport") 2>/dev/null && break
    sleep 0.1
done
bpid=$(cat "$bdir/pgbouncer.pid")
# pgroute with only the primary configured: routing on (every statement classified, the
# rules applied), the same topology PgBouncer sees.
one_port=$(free_port)
one_pid=$(start_proxy target/release/pgroute "$one_port" primary-only)
trap 'kill "$bpid" "$one_pid" 2>/dev/null || true; rm -rf "$bdir"; cleanup' EXIT

pg_ticks() { # CPU ticks of every PostgreSQL process now, and of those that exited (a
    # backend's time joins its postmaster's children's time when it is reaped)
    local sum=0 p
    for p in $(pgrep -x postgres || true); do
        sum=$((sum + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$sum"
}

# One pgbench run: port pid mode count args... -> "tps p50 p99 proxy_us pg_us", or "fails".
run() {
    local port=$1 pid=$2 mode=$3 n=$4
    shift 4
    local logs=$work/log.$port
    rm -rf "$logs" && mkdir -p "$logs"
    local b0=0 b1=0 p0 p1 out
    [[ -n $pid ]] && b0=$(ticks "$pid")
    p0=$(pg_ticks)
    local threads=2
    [[ $mode == prepared ]] && threads=$n
    if ! out=$(cd "$logs" && pgbench -h 127.0.0.1 -p "$port" -M "$mode" -c "$n" -j "$threads" -T "$secs" -l "$@" 2>&1); then
        echo fails
        return
    fi
    [[ -n $pid ]] && b1=$(ticks "$pid")
    p1=$(pg_ticks)
    local tps tx
    tps=$(awk '/^tps = / {print $3; exit}' <<<"$out")
    tx=$(awk '/^number of transactions actually processed:/ {print $NF; exit}' <<<"$out")
    if [[ -z $tps || ${tx:-0} -eq 0 ]]; then
        echo fails
        return
    fi
    local pct
    pct=$(cat "$logs"/pgbench_log.* | awk '{print $3}' | sort -n | awk '{a[NR] = $1} END {
        printf "%.2f %.2f", a[int(NR * 0.50) + 1] / 1000, a[int(NR * 0.99) + 1] / 1000 }')
    awk -v t="$tps" -v pct="$pct" -v a="$b1" -v b="$b0" -v pa="$p1" -v pb="$p0" -v n="$tx" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { printf "%s %s %.1f %.1f\n", t, pct, (a - b) / hz * 1e6 / n, (pa - pb) / hz * 1e6 / n }'
}

num() { [[ $1 =~ ^[0-9]+(\.[0-9]+)?$ ]]; }
ratio() { if num "$1" && num "$2"; then awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; else echo -; fi; }
tps_text() { if num "$1"; then printf '%.0f' "$1"; else printf '%s' "${1:--}"; fi; }

csv=benches/compare-$(date -u +%Y%m%dT%H%M%SZ).csv
echo "test,clients,direct_tps,pgroute_tps,pgroute1_tps,pgbouncer_tps,pgroute_vs_direct,pgroute1_vs_direct,pgbouncer_vs_direct,pgroute_vs_pgbouncer,pgroute1_vs_pgbouncer,direct_p50_ms,direct_p99_ms,pgroute_p50_ms,pgroute_p99_ms,pgroute1_p50_ms,pgroute1_p99_ms,pgbouncer_p50_ms,pgbouncer_p99_ms,pgroute_us_per_tx,pgroute1_us_per_tx,pgbouncer_us_per_tx,pg_us_direct,pg_us_pgroute,pg_us_pgroute1,pg_us_pgbouncer" >"$csv"
fmt='%-20s %3s %6s %6s %6s %6s %5s %5s %5s %5s %5s %12s %12s %12s %12s %5s %5s %5s %19s\n'
# shellcheck disable=SC2059
printf "$fmt" test c direct pgr pgr1 bouncer r/d r1/d b/d r/b r1/b 'direct 50/99' 'pgr 50/99' 'pgr1 50/99' \
    'bouncer 50/99' 'r us' 'r1 us' 'b us' 'PG us d/r/r1/b'
for n in $counts; do
    for workload in select-only tpc-b; do
        extra=()
        [[ $workload == select-only ]] && extra=(-S)
        for mode in simple extended prepared; do
            if ((n <= 190)); then
                d=$(run "$PGROUTE_PRIMARY_PORT" "" "$mode" "$n" "${extra[@]}")
            else
                d=skipped
            fi
            r=$(run "$proxy_port" "$proxy_pid" "$mode" "$n" "${extra[@]}")
            r1=$(run "$one_port" "$one_pid" "$mode" "$n" "${extra[@]}")
            b=$(run "$bport" "$bpid" "$mode" "$n" "${extra[@]}")
            read -r dt dp50 dp99 _ dpg <<<"$d"
            read -r rt rp50 rp99 rus rpg <<<"$r"
            read -r ot op50 op99 ous opg <<<"$r1"
            read -r bt bp50 bp99 bus bpg <<<"$b"
            # shellcheck disable=SC2059
            printf "$fmt" "$workload $mode" "$n" \
                "$(tps_text "$dt")" "$(tps_text "$rt")" "$(tps_text "$ot")" "$(tps_text "$bt")" \
                "$(ratio "$rt" "$dt")" "$(ratio "$ot" "$dt")" "$(ratio "$bt" "$dt")" "$(ratio "$rt" "$bt")" "$(ratio "$ot" "$bt")" \
                "${dp50:--}/${dp99:--}" "${rp50:--}/${rp99:--}" "${op50:--}/${op99:--}" "${bp50:--}/${bp99:--}" \
                "${rus:--}" "${ous:--}" "${bus:--}" "${dpg:--}/${rpg:--}/${opg:--}/${bpg:--}"
            echo "$workload $mode,$n,$dt,$rt,$ot,$bt,$(ratio "$rt" "$dt"),$(ratio "$ot" "$dt"),$(ratio "$bt" "$dt"),$(ratio "$rt" "$bt"),$(ratio "$ot" "$bt"),$dp50,$dp99,$rp50,$rp99,$op50,$op99,$bp50,$bp99,$rus,$ous,$bus,$dpg,$rpg,$opg,$bpg" >>"$csv"
        done
    done
done
echo "CSV: $csv"
