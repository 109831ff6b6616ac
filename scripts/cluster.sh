#!/usr/bin/env bash
# Local PostgreSQL 15 streaming-replication cluster for pgroute's integration
# tests and demo: one primary plus N hot-standby replicas on 127.0.0.1.
#
# Usage:
#   scripts/cluster.sh start [--replicas N] [--owner-pid PID] [--base-port P]
#                                                (default N=2, 0..8; with an owner, the
#                                                cluster stops itself when PID exits)
#   scripts/cluster.sh stop DIR                  (idempotent; removes DIR)
#   scripts/cluster.sh psql DIR NODE [psql args...]
#   scripts/cluster.sh node-stop DIR NODE        (stop one node, keep its data)
#   scripts/cluster.sh node-start DIR NODE       (start a node stopped above)
#   scripts/cluster.sh node-kill DIR NODE        (stop one node as a crash would: immediate)
#   scripts/cluster.sh node-rejoin DIR NODE FROM (rebuild NODE as a standby of FROM)
#
# `start` prints exactly these lines on stdout (and writes them to
# DIR/cluster.env); every progress message goes to stderr:
#   PGROUTE_CLUSTER_DIR=/tmp/pgroute-cluster.XXXXXX
#   PGROUTE_PRIMARY_PORT=NNNNN
#   PGROUTE_REPLICA_PORTS=NNNNN,NNNNN          (empty with --replicas 0)
#
# Layout: DIR/node0 is the primary, DIR/node1.. the replicas, DIR/nodeK.log
# their server logs; unix sockets live in DIR itself.
#
# Roles: postgres (superuser; trust over the socket and over 127.0.0.1),
#        app/app (SCRAM-SHA-256), app_md5/app_md5 (MD5); database app, owned
#        by app, where each role's new tables are open to the other two.
#
# PostgreSQL refuses to run as root, so when run as root every server command
# runs as the `postgres` OS user and DIR (under /tmp) is owned by it.
#
# Environment: PGROUTE_PG_BIN overrides the server binary directory
# (default /usr/lib/postgresql/15/bin); PGROUTE_CLUSTER_TIMEOUT the seconds
# to wait for replication to stream (default 60).
set -euo pipefail

PG_BIN=${PGROUTE_PG_BIN:-/usr/lib/postgresql/15/bin}
TIMEOUT=${PGROUTE_CLUSTER_TIMEOUT:-60}
MARKER=.pgroute-cluster
MAX_REPLICAS=8

# Connection settings inherited from the caller must not leak into ours.
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGPASSWORD PGPASSFILE \
    PGSERVICE PGSERVICEFILE PGOPTIONS PGDATA PGSSLMODE PGTARGETSESSIONATTRS \
    PGAPPNAME PGCONNECT_TIMEOUT 2>/dev/null || true

SELF=$(readlink -f "${BASH_SOURCE[0]}")
log() { printf 'cluster.sh: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

usage() {
    sed -n '2,/^set -euo/{/^#/{s/^# \{0,1\}//;p}}' "$0" >&2
    exit 2
}

if [[ $(id -u) -eq 0 ]]; then
    AS_ROOT=1
else
    AS_ROOT=0
fi

# Run a server-side command, as the postgres OS user when we are root.
# LC_ALL=C keeps the server independent of whatever locale the caller has.
# fd 3 (start's saved stdout) is closed so that no server inherits it: a
# postmaster holding the caller's stdout pipe would make a caller that reads
# stdout to EOF (Rust's Command::output) hang until the cluster stops.
as_pg() {
    if [[ $AS_ROOT -eq 1 ]]; then
        if command -v runuser >/dev/null 2>&1; then
            runuser -u postgres -- env LC_ALL=C "$@" 3>&-
        else
            local q
            printf -v q '%q ' env LC_ALL=C "$@"
            su postgres -s /bin/bash -c "$q" 3>&-
        fi
    else
        env LC_ALL=C "$@" 3>&-
    fi
}

psql_bin() {
    if [[ -x $PG_BIN/psql ]]; then
        printf '%s\n' "$PG_BIN/psql"
    else
        command -v psql || die "psql not found"
    fi
}

# free_ports COUNT
# shellcheck source=scripts/lib/ports.sh
source "$(dirname "$(readlink -f "$0")")/lib/ports.sh"

# Set DIR_ABS to DIR as an absolute path; return 1 if DIR does not exist,
# die if it exists but is not a cluster directory (stop runs rm -rf on it).
check_cluster_dir() {
    local dir=$1
    [[ -n $dir ]] || die "missing cluster DIR"
    [[ -d $dir ]] || return 1
    DIR_ABS=$(cd "$dir" && pwd -P)
    if [[ ! -e $DIR_ABS/$MARKER && $(basename "$DIR_ABS") != pgroute-cluster.* ]]; then
        die "$DIR_ABS does not look like a pgroute cluster directory"
    fi
}

node_port() {
    local dir=$1 node=$2 conf
    conf=$dir/node$node/pgroute.conf
    [[ -f $conf ]] || die "no node $node in $dir"
    sed -n "s/^port = \([0-9]*\)$/\1/p" "$conf"
}

write_node_conf() {
    local dir=$1 node=$2 port=$3
    # Written as the postgres user so it stays owned by the data dir's owner.
    printf "port = %s\ncluster_name = 'pgroute_node%s'\n" "$port" "$node" |
        as_pg tee "$dir/node$node/pgroute.conf" >/dev/null
}

# Start node K. With RETRY=1, on "address already in use" pick a new port
# and retry (only while creating the cluster: nobody knows the port yet).
start_node() {
    local dir=$1 node=$2 retry=${3:-0} attempt port
    for attempt in 1 2 3 4 5; do
        port=$(node_port "$dir" "$node")
        log "starting node$node on port $port"
        if as_pg "$PG_BIN/pg_ctl" start -w -t "$TIMEOUT" -D "$dir/node$node" \
            -l "$dir/node$node.log" >&2; then
            return 0
        fi
        if [[ $retry -eq 1 ]] &&
            tail -n 20 "$dir/node$node.log" 2>/dev/null | grep -q 'already in use'; then
            port=$(free_ports 1)
            log "port taken, retrying node$node on port $port (attempt $attempt)"
            write_node_conf "$dir" "$node" "$port"
            continue
        fi
        return 1
    done
    return 1
}

# Stop every node of DIR (ignoring stopped or half-created ones).
stop_nodes() {
    local dir=$1 nodedir pid
    for nodedir in "$dir"/node*/; do
        nodedir=${nodedir%/}
        [[ -f $nodedir/postmaster.pid ]] || continue
        as_pg "$PG_BIN/pg_ctl" stop -D "$nodedir" -m immediate -w -t 30 \
            >/dev/null 2>&1 || true
        # Last resort: the postmaster whose pid file is still there.
        if [[ -f $nodedir/postmaster.pid ]]; then
            pid=$(head -n 1 "$nodedir/postmaster.pid" 2>/dev/null || true)
            if [[ $pid =~ ^[0-9]+$ ]] && [[ -r /proc/$pid/cmdline ]] &&
                tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q postgres; then
                log "killing postmaster $pid of $nodedir"
                kill -KILL "$pid" 2>/dev/null || true
            fi
        fi
    done
}

print_logs() {
    local dir=$1 f
    for f in "$dir"/initdb.log "$dir"/node*.log; do
        [[ -f $f ]] || continue
        log "---- last lines of $f ----"
        tail -n 60 "$f" >&2 || true
    done
}

psql_super() {
    local dir=$1 port=$2
    shift 2
    "$(psql_bin)" -X -q -h "$dir" -p "$port" -U postgres -d postgres "$@"
}

cmd_start() {
    local replicas=2 owner="" base_port=""
    while [[ $# -gt 0 ]]; do
        case $1 in
        --base-port)
            [[ $# -ge 2 ]] || usage
            base_port=$2
            shift 2
            ;;
        --owner-pid)
            [[ $# -ge 2 ]] || usage
            owner=$2
            shift 2
            ;;
        --replicas)
            [[ $# -ge 2 ]] || usage
            replicas=$2
            shift 2
            ;;
        --replicas=*)
            replicas=${1#--replicas=}
            shift
            ;;
        *) usage ;;
        esac
    done
    if [[ ! $replicas =~ ^[0-9]+$ ]] || ((10#$replicas > MAX_REPLICAS)); then
        die "--replicas must be 0..$MAX_REPLICAS"
    fi
    [[ -x $PG_BIN/postgres ]] || die "$PG_BIN/postgres not found (install postgresql-15)"
    if [[ $AS_ROOT -eq 1 ]]; then
        id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' OS user"
    fi

    # Only the final machine-readable lines go to the real stdout (fd 3).
    exec 3>&1 1>&2
    # The caller's cwd may not be enterable by the postgres user.
    cd /

    local started=$SECONDS
    CLUSTER_DIR=$(mktemp -d /tmp/pgroute-cluster.XXXXXX)
    : >"$CLUSTER_DIR/$MARKER"
    trap 'on_start_exit $?' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    chmod 755 "$CLUSTER_DIR"
    if [[ $AS_ROOT -eq 1 ]]; then
        chown -R postgres:postgres "$CLUSTER_DIR"
    fi
    local dir=$CLUSTER_DIR
    log "cluster dir $dir"

    local -a ports
    local retry_ports=1
    if [[ -n $base_port ]]; then
        retry_ports=0
        # Fixed ports (the demo, whose proxy.toml names them): base, base+1, ...
        for ((k = 0; k <= replicas; k++)); do
            ports+=($((base_port + k)))
            if ss -Htln "sport = :$((base_port + k))" 2>/dev/null | grep -q .; then
                die "port $((base_port + k)) is in use (a previous demo still running? scripts/cluster.sh stop DIR)"
            fi
        done
    else
        mapfile -t ports < <(free_ports $((replicas + 1)))
    fi
    [[ ${#ports[@]} -eq $((replicas + 1)) ]] || die "could not pick free ports"

    # ---- primary ----
    log "initdb node0"
    as_pg "$PG_BIN/initdb" -D "$dir/node0" -U postgres --auth-local=trust \
        --auth-host=scram-sha-256 --locale=C --encoding=UTF8 --no-sync \
        >"$dir/initdb.log" 2>&1 || die "initdb failed"
    as_pg tee -a "$dir/node0/postgresql.conf" >/dev/null <<EOF

# ---- pgroute test cluster ----
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
max_connections = 200
shared_buffers = 32MB
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
hot_standby = on
password_encryption = 'scram-sha-256'
fsync = off
full_page_writes = off
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
# per-node port and name
include 'pgroute.conf'
EOF
    write_node_conf "$dir" 0 "${ports[0]}"
    as_pg tee "$dir/node0/pg_hba.conf" >/dev/null <<'EOF'
# TYPE  DATABASE     USER      ADDRESS         METHOD
local   all          all                       trust
host    all          postgres  127.0.0.1/32    trust
host    replication  all       127.0.0.1/32    trust
host    all          app_md5   127.0.0.1/32    md5
host    all          all       127.0.0.1/32    scram-sha-256
EOF
    start_node "$dir" 0 "$retry_ports" || die "primary failed to start"
    local primary_port
    primary_port=$(node_port "$dir" 0)

    log "creating roles and database"
    psql_super "$dir" "$primary_port" -v ON_ERROR_STOP=1 >&2 <<'EOF'
SET password_encryption = 'scram-sha-256';
CREATE ROLE app LOGIN PASSWORD 'app';
SET password_encryption = 'md5';
CREATE ROLE app_md5 LOGIN PASSWORD 'app_md5';
RESET password_encryption;
CREATE DATABASE app OWNER app;
GRANT ALL ON DATABASE app TO app_md5;
-- pgroute's health monitor reads pg_stat_wal_receiver (the replica's timeline)
GRANT pg_read_all_stats TO app, app_md5;
\connect app
ALTER SCHEMA public OWNER TO app;
GRANT ALL ON SCHEMA public TO app_md5;
-- tables made by any of the three roles in db app are usable by the others
ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT ALL ON TABLES TO app, app_md5;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT ALL ON SEQUENCES TO app, app_md5;
ALTER DEFAULT PRIVILEGES FOR ROLE app GRANT ALL ON TABLES TO app_md5;
ALTER DEFAULT PRIVILEGES FOR ROLE app GRANT ALL ON SEQUENCES TO app_md5;
ALTER DEFAULT PRIVILEGES FOR ROLE app_md5 GRANT ALL ON TABLES TO app;
ALTER DEFAULT PRIVILEGES FOR ROLE app_md5 GRANT ALL ON SEQUENCES TO app;
EOF

    # ---- replicas ----
    local k
    for ((k = 1; k <= replicas; k++)); do
        log "pg_basebackup node$k"
        as_pg "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$primary_port" -U postgres \
            -D "$dir/node$k" -R -X stream -c fast --no-sync \
            -C -S "pgroute_node$k" >&2
        write_node_conf "$dir" "$k" "${ports[$k]}"
        start_node "$dir" "$k" "$retry_ports" || die "replica node$k failed to start"
    done

    # ---- wait for streaming ----
    log "waiting for $replicas replica(s) to stream"
    local deadline=$((SECONDS + TIMEOUT)) streaming ready port
    while :; do
        streaming=$(psql_super "$dir" "$primary_port" -At -c \
            "select count(*) from pg_stat_replication where state = 'streaming'" \
            2>/dev/null || echo 0)
        ready=0
        if [[ $streaming -eq $replicas ]]; then
            ready=1
            for ((k = 1; k <= replicas; k++)); do
                port=$(node_port "$dir" "$k")
                if [[ $(psql_super "$dir" "$port" -At -c 'select pg_is_in_recovery()' \
                    2>/dev/null || true) != t ]]; then
                    ready=0
                    break
                fi
            done
        fi
        [[ $ready -eq 1 ]] && break
        if ((SECONDS >= deadline)); then
            die "timed out after ${TIMEOUT}s waiting for replication ($streaming of $replicas streaming)"
        fi
        sleep 0.2
    done

    local replica_ports=""
    for ((k = 1; k <= replicas; k++)); do
        replica_ports+=${replica_ports:+,}$(node_port "$dir" "$k")
    done
    local env_text
    env_text=$(printf 'PGROUTE_CLUSTER_DIR=%s\nPGROUTE_PRIMARY_PORT=%s\nPGROUTE_REPLICA_PORTS=%s' \
        "$dir" "$primary_port" "$replica_ports")
    printf '%s\n' "$env_text" >"$dir/cluster.env"
    log "cluster ready in $((SECONDS - started))s"
    START_OK=1
    if [[ -n $owner ]]; then
        # Stops the cluster when its owner (a test process) exits, however it exits.
        setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; exec "$2" stop "$3"' \
            watcher "$owner" "$SELF" "$dir" </dev/null >/dev/null 2>&1 3>&- &
    fi
    printf '%s\n' "$env_text" >&3
}

# EXIT trap of `start`: on failure, show the logs and tear everything down.
on_start_exit() {
    local rc=$1
    [[ ${START_OK:-0} -eq 1 ]] && return 0
    [[ -n ${CLUSTER_DIR:-} && -d $CLUSTER_DIR ]] || exit "$rc"
    log "start failed (exit $rc); cleaning up $CLUSTER_DIR"
    print_logs "$CLUSTER_DIR"
    stop_nodes "$CLUSTER_DIR"
    rm -rf "$CLUSTER_DIR"
    [[ $rc -eq 0 ]] && rc=1
    exit "$rc"
}

cmd_stop() {
    [[ $# -eq 1 ]] || usage
    local dir
    if ! check_cluster_dir "$1"; then
        log "$1: already gone"
        return 0
    fi
    dir=$DIR_ABS
    cd /
    stop_nodes "$dir"
    rm -rf "$dir"
    log "stopped and removed $dir"
}

cmd_psql() {
    [[ $# -ge 2 ]] || usage
    local dir node port
    check_cluster_dir "$1" || die "$1: no such cluster"
    dir=$DIR_ABS
    node=$2
    shift 2
    port=$(node_port "$dir" "$node")
    exec "$(psql_bin)" -X -h "$dir" -p "$port" -U postgres -d postgres "$@"
}

cmd_node_stop() {
    [[ $# -eq 2 ]] || usage
    local dir
    check_cluster_dir "$1" || die "$1: no such cluster"
    dir=$DIR_ABS
    cd /
    node_port "$dir" "$2" >/dev/null
    as_pg "$PG_BIN/pg_ctl" stop -D "$dir/node$2" -m "${STOP_MODE:-fast}" -w >&2
}

cmd_node_start() {
    [[ $# -eq 2 ]] || usage
    local dir
    check_cluster_dir "$1" || die "$1: no such cluster"
    dir=$DIR_ABS
    cd /
    node_port "$dir" "$2" >/dev/null
    start_node "$dir" "$2" >&2 || {
        print_logs "$dir"
        die "node$2 failed to start"
    }
}

# Rebuilds a node as a standby of another (a deliberate rejoin after a failover): stops
# it, replaces its data with a base backup of SOURCE, keeps its port, starts it.
cmd_node_rejoin() {
    [[ $# -eq 3 ]] || usage
    local dir port source_port
    check_cluster_dir "$1" || die "$1: no such cluster"
    dir=$DIR_ABS
    cd /
    port=$(node_port "$dir" "$2")
    source_port=$(node_port "$dir" "$3")
    as_pg "$PG_BIN/pg_ctl" stop -D "$dir/node$2" -m fast -w >&2 || true
    rm -rf "${dir:?}/node$2"
    as_pg "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$source_port" -U postgres \
        -D "$dir/node$2" -R -X stream -c fast --no-sync >&2 || die "pg_basebackup from node$3 failed"
    # The copy carries FROM's own settings: no replication slot of FROM's upstream.
    echo "primary_slot_name = ''" | as_pg tee -a "$dir/node$2/postgresql.auto.conf" >/dev/null
    write_node_conf "$dir" "$2" "$port"
    start_node "$dir" "$2" >&2 || {
        print_logs "$dir"
        die "node$2 failed to start"
    }
}

[[ $# -ge 1 ]] || usage
command=$1
shift
case $command in
start) cmd_start "$@" ;;
stop) cmd_stop "$@" ;;
psql) cmd_psql "$@" ;;
node-stop) cmd_node_stop "$@" ;;
node-kill) STOP_MODE=immediate cmd_node_stop "$@" ;;
node-start) cmd_node_start "$@" ;;
node-rejoin) cmd_node_rejoin "$@" ;;
-h | --help | help) usage ;;
*) usage ;;
esac
