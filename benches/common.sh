# Shared by the end-to-end benchmarks (sourced, not run): builds pgroute, starts a primary
# and two replicas (scripts/cluster.sh) and pgroute on a free port, plus the build named by
# PGROUTE_BASELINE if set, initialises pgbench (scale 10), and stops everything on exit.
# Needs `secs` and `clients` set. Provides: proxy_port/proxy_pid, base_port/base_pid, and
# `tps port pid mode extra-args...` -> "tps cpu_us_per_transaction".
cargo build --release --quiet
eval "$(scripts/cluster.sh start --replicas 2 --owner-pid $$ 2>/dev/null)"
work=$(mktemp -d)
cleanup() {
    [[ -n ${proxy_pid:-} ]] && kill "$proxy_pid" 2>/dev/null || true
    [[ -n ${base_pid:-} ]] && kill "$base_pid" 2>/dev/null || true
    scripts/cluster.sh stop "$PGROUTE_CLUSTER_DIR" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
IFS=, read -r r1 r2 <<<"$PGROUTE_REPLICA_PORTS"
config() { # port [primary-only]
cat <<TOML
[listen]
address = "127.0.0.1:$1"
[pool]
size = 20
[[nodes]]
name = "pg0"
host = "127.0.0.1"
port = $PGROUTE_PRIMARY_PORT
role = "primary"
TOML
[[ ${2:-} == primary-only ]] || cat <<TOML
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
TOML
cat <<TOML
[[users]]
name = "app"
password = "app"
TOML
}

launch_proxy() { # binary config-file port -> pid, once it accepts connections
    # In a session of its own, as a service runs and as PgBouncer's -d runs: with the
    # kernel's autogroup scheduling, a proxy sharing pgbench's session shares its CPU share
    # too, and runnable backends waited up to ~100 ms (p99 2-3x, measured).
    RUST_LOG=warn setsid "$1" --config "$2" >/dev/null 2>&1 </dev/null &
    local pid=$!
    for _ in $(seq 50); do
        (echo >/dev/tcp/127.0.0.1/"$3") 2>/dev/null && break
        sleep 0.1
    done
    echo "$pid"
}

start_proxy() { # binary port [primary-only] -> pid
    config "$2" "${3:-}" >"$work/proxy-$2.toml"
    launch_proxy "$1" "$work/proxy-$2.toml" "$2"
}

proxy_port=$(free_port)
proxy_pid=$(start_proxy target/release/pgroute "$proxy_port")
if [[ -n ${PGROUTE_BASELINE:-} ]]; then
    base_port=$(free_port)
    base_pid=$(start_proxy "$PGROUTE_BASELINE" "$base_port")
fi

export PGPASSWORD=app PGUSER=app PGDATABASE=app
pgbench -h 127.0.0.1 -p "$PGROUTE_PRIMARY_PORT" -i -s 10 -q >/dev/null 2>&1
sleep 1

ticks() { # pid: CPU clock ticks used so far (user + system)
    awk '{print $14 + $15}' "/proc/$1/stat"
}

tps() { # port pid mode extra-args... -> "tps cpu_us_per_transaction"
    local port=$1 pid=$2 mode=$3
    shift 3
    local before=0 after=0 out t
    [[ -n $pid ]] && before=$(ticks "$pid")
    out=$(pgbench -h 127.0.0.1 -p "$port" -M "$mode" -c "$clients" -j 2 -T "$secs" "$@" 2>&1)
    [[ -n $pid ]] && after=$(ticks "$pid")
    t=$(awk '/^tps = / {print $3; exit}' <<<"$out")
    local tx
    tx=$(awk '/^number of transactions actually processed:/ {print $NF; exit}' <<<"$out")
    local cpu
    cpu=$(awk -v a="$after" -v b="$before" -v hz="$(getconf CLK_TCK)" -v n="${tx:-0}" \
        'BEGIN { printf "%.1f", (n > 0 ? (a - b) / hz * 1e6 / n : 0) }')
    echo "$t $cpu"
}

