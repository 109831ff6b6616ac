#!/usr/bin/env bash
# Workload isolation: a payment-callback workload (short write transactions and a balance
# read, many clients, application_name=callback) alone, then with a heavy backoffice
# report running beside it (a sequential scan and aggregate over pgbench_accounts, several
# clients, application_name=backoffice), in three setups in one run:
#   direct    both straight to the primary;
#   default   through pgroute with default routing (the report's reads spread over both
#             replicas);
#   isolated  through pgroute with the report in an `analytics` node group (pg2 only; pg1
#             serves everything else) and capped at max_concurrent reports at once.
# Prints per setup the callback's tps, p50 and p99 latency (ms, from pgbench's
# per-transaction log) alone and with the report, the ratios (with / alone), and the
# reports finished per second.
#
#   benches/isolation.sh [seconds per run, default 15] [callback clients, default 16]
#                        [report clients, default 4] [max_concurrent, default 2]
#
# Everything (primary, two replicas, pgroute, pgbench) shares this machine's cores: a
# report on a replica still takes CPU from the primary's callbacks, so the cap, not the
# group alone, is what bounds the harm here.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-15}
callback_clients=${2:-16}
report_clients=${3:-4}
cap=${4:-2}
clients=8 # for benches/common.sh's pgbench initialisation

# shellcheck source=benches/common.sh
source benches/common.sh

iso_port=$(free_port)
# benches/common.sh's configuration, with pg2 in the analytics group and the report's rule.
config "$iso_port" | sed 's/^name = "pg2"$/name = "pg2"\ngroups = ["analytics"]/' >"$work/isolated.toml"
cat >>"$work/isolated.toml" <<TOML
[[routing.rules]]
name = "backoffice"
application_name = "backoffice"
route = "replica"
group = "analytics"
max_concurrent = $cap
queue_timeout = "60s"
TOML
RUST_LOG=warn setsid target/release/pgroute --config "$work/isolated.toml" >/dev/null 2>&1 </dev/null &
iso_pid=$!
trap 'kill "$iso_pid" 2>/dev/null || true; cleanup' EXIT
for _ in $(seq 50); do
    (echo >/dev/tcp/127.0.0.1/"$iso_port") 2>/dev/null && break
    sleep 0.1
done

cat >"$work/callback.sql" <<'SQL'
\set aid random(1, 1000000)
\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, :aid, :delta, CURRENT_TIMESTAMP);
END;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
SQL
cat >"$work/report.sql" <<'SQL'
SELECT bid, count(*), sum(abalance), avg(abalance), max(filler) FROM pgbench_accounts GROUP BY bid;
SQL

# The callback workload on `port`: "tps p50 p99".
callbacks() {
    local logs=$work/log.$1
    rm -rf "$logs" && mkdir -p "$logs"
    local out
    out=$(cd "$logs" && PGAPPNAME=callback pgbench -h 127.0.0.1 -p "$1" -n -f "$work/callback.sql" \
        -c "$callback_clients" -j 2 -T "$secs" -l 2>&1)
    local tps pct
    tps=$(awk '/^tps = / {printf "%.0f", $3; exit}' <<<"$out")
    pct=$(cat "$logs"/pgbench_log.* | awk '{print $3}' | sort -n | awk '{a[NR] = $1} END {
        printf "%.2f %.2f", a[int(NR * 0.50) + 1] / 1000, a[int(NR * 0.99) + 1] / 1000 }')
    echo "$tps $pct"
}

# The report workload on `port` for the callback run's length (and a little more): its
# pgbench output goes to `file`. Run in the background.
reports() {
    PGAPPNAME=backoffice pgbench -h 127.0.0.1 -p "$1" -n -f "$work/report.sql" \
        -c "$report_clients" -j 1 -T "$((secs + 2))" >"$2" 2>&1
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }

printf '%-9s | %-24s | %-24s | %-13s | %s\n' setup "callback alone tps p50/p99" "with report tps p50/p99" \
    "tps, p99 x" "reports/s"
for setup in direct default isolated; do
    case $setup in
    direct) port=$PGROUTE_PRIMARY_PORT ;;
    default) port=$proxy_port ;;
    isolated) port=$iso_port ;;
    esac
    read -r at ap50 ap99 <<<"$(callbacks "$port")"
    reports "$port" "$work/report.$setup" &
    rpid=$!
    sleep 1
    read -r wt wp50 wp99 <<<"$(callbacks "$port")"
    wait "$rpid" || true
    rtps=$(awk '/^tps = / {printf "%.2f", $3; exit}' "$work/report.$setup")
    printf '%-9s | %6s %8s/%-8s | %6s %8s/%-8s | %5s, %5s | %s\n' "$setup" "$at" "$ap50" "$ap99" \
        "$wt" "$wp50" "$wp99" "$(ratio "$wt" "$at")" "$(ratio "$wp99" "$ap99")" "${rtps:--}"
done
echo "(tps x: callback tps with the report / alone; p99 x: callback p99 with the report / alone;"
echo " isolated: the report on pg2 only, at most $cap at once; $callback_clients callback clients, $report_clients report clients, ${secs}s per run)"
