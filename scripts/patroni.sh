#!/usr/bin/env bash
# A real Patroni cluster on loopback for the tests: one etcd (Debian etcd-server, v2 API
# for Debian's python3-etcd) and N Patroni members (Debian patroni) running PostgreSQL 15,
# synchronous mode on, on free ports, data in a fresh temporary directory owned by the
# postgres OS user when run as root.
#
#   scripts/patroni.sh start [--members N] [--owner-pid PID]
#       prints PGROUTE_PATRONI_DIR=..., PGROUTE_PATRONI_URLS=http://...,... (REST APIs),
#       PGROUTE_PATRONI_PG_PORTS=p1,p2,... (member i's PostgreSQL), once a leader serves
#       and every replica streams. Users: postgres (trust on loopback), app/app (SCRAM,
#       pg_read_all_stats, owns database app). With an owner, stops when it exits.
#   scripts/patroni.sh stop DIR
#   scripts/patroni.sh kill DIR MEMBER     (kill -9 one member's Patroni and PostgreSQL)
#   scripts/patroni.sh leader DIR          (prints the leader member's index, 0-based)
#   scripts/patroni.sh tag DIR MEMBER TAG true|false   (sets a member's tag, reloads it)
set -euo pipefail

PG_BIN=/usr/lib/postgresql/15/bin
SELF=$(readlink -f "$0")

die() {
    echo "patroni.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '2,/^set -euo/{/^#/{s/^# \{0,1\}//;p}}' "$0" >&2
    exit 2
}

as_pg() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- env LC_ALL=C "$@" 3>&-
    else
        env LC_ALL=C "$@" 3>&-
    fi
}

# free_ports COUNT
# shellcheck source=scripts/lib/ports.sh
source "$(dirname "$SELF")/lib/ports.sh"

install_deps() {
    if ! command -v patroni >/dev/null 2>&1 || ! command -v etcd >/dev/null 2>&1; then
        [[ $(id -u) -eq 0 ]] || die "patroni and etcd are missing (apt-get install patroni etcd-server as root)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends patroni etcd-server >/dev/null 2>&1 || {
            apt-get update >/dev/null 2>&1
            DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends patroni etcd-server >/dev/null
        }
    fi
}

member_yml() { # dir i name rest_port pg_port etcd_port
    local dir=$1 i=$2 name=$3 rest=$4 pg=$5 etcd=$6
    cat <<YML
scope: pgroute
name: $name
log:
  level: WARNING
  dir: $dir/log$i
restapi:
  listen: 127.0.0.1:$rest
  connect_address: 127.0.0.1:$rest
etcd:
  host: 127.0.0.1:$etcd
bootstrap:
  dcs:
    ttl: 20
    loop_wait: 1
    retry_timeout: 5
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    postgresql:
      use_pg_rewind: false
      parameters:
        wal_level: replica
        hot_standby: "on"
        max_wal_senders: 10
        max_replication_slots: 10
        wal_log_hints: "on"
        fsync: "off"
        max_connections: 200
  initdb:
    - encoding: UTF8
    - locale: C
  pg_hba:
    - local all all trust
    - host replication replicator 127.0.0.1/32 trust
    - host all postgres 127.0.0.1/32 trust
    - host all all 127.0.0.1/32 scram-sha-256
  post_bootstrap: $dir/post_bootstrap.sh
postgresql:
  listen: 127.0.0.1:$pg
  connect_address: 127.0.0.1:$pg
  data_dir: $dir/data$i
  bin_dir: $PG_BIN
  pgpass: $dir/pgpass$i
  authentication:
    replication:
      username: replicator
      password: replicator
    superuser:
      username: postgres
      password: postgres
  parameters:
    unix_socket_directories: '$dir'
tags:
  nofailover: false
  noloadbalance: false
  clonefrom: false
  nosync: false
YML
}

cmd_start() {
    local members=3 owner=""
    while [[ $# -gt 0 ]]; do
        case $1 in
        --members) members=$2; shift 2 ;;
        --owner-pid) owner=$2; shift 2 ;;
        *) usage ;;
        esac
    done
    install_deps
    exec 3>&1 1>&2
    local dir
    dir=$(mktemp -d /tmp/pgroute-patroni.XXXXXX)
    chmod 755 "$dir"
    touch "$dir/.pgroute-patroni"
    local -a ports
    mapfile -t ports < <(free_ports $((2 + 2 * members)))
    local etcd_client=${ports[0]} etcd_peer=${ports[1]}
    cat >"$dir/post_bootstrap.sh" <<'SH'
#!/bin/sh
# $1: a connection string to the new primary, as the superuser.
psql "$1" -v ON_ERROR_STOP=1 -q -c "SET password_encryption = 'scram-sha-256'" \
    -c "CREATE ROLE app LOGIN PASSWORD 'app' IN ROLE pg_read_all_stats" \
    -c "CREATE ROLE replicator LOGIN REPLICATION" \
    -c "CREATE DATABASE app OWNER app"
SH
    chmod 755 "$dir/post_bootstrap.sh"
    [[ $(id -u) -eq 0 ]] && chown -R postgres "$dir"
    as_pg etcd --name pgroute-etcd --data-dir "$dir/etcd" --enable-v2=true \
        --listen-client-urls "http://127.0.0.1:$etcd_client" --advertise-client-urls "http://127.0.0.1:$etcd_client" \
        --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
        --initial-cluster "pgroute-etcd=http://127.0.0.1:$etcd_peer" >"$dir/etcd.log" 2>&1 </dev/null 3>&- &
    local urls="" pg_ports="" i
    for ((i = 0; i < members; i++)); do
        local rest=${ports[$((2 + 2 * i))]} pg=${ports[$((3 + 2 * i))]}
        as_pg mkdir -p "$dir/log$i"
        member_yml "$dir" "$i" "member$i" "$rest" "$pg" "$etcd_client" | as_pg tee "$dir/member$i.yml" >/dev/null
        echo "$rest $pg" >"$dir/member$i.ports"
        urls+="${urls:+,}http://127.0.0.1:$rest"
        pg_ports+="${pg_ports:+,}$pg"
    done
    for _ in $(seq 100); do
        curl -fs "http://127.0.0.1:$etcd_client/health" >/dev/null 2>&1 && break
        sleep 0.1
    done
    for ((i = 0; i < members; i++)); do
        as_pg patroni "$dir/member$i.yml" >"$dir/patroni$i.out" 2>&1 </dev/null 3>&- &
        if ((i == 0)); then
            wait_leader "$dir" 60 || { tail -30 "$dir/patroni0.out" "$dir"/log0/* 2>/dev/null; die "no leader"; }
        fi
    done
    wait_streaming "$dir" "$members" 90 || { tail -20 "$dir"/patroni*.out; die "replicas did not start streaming"; }
    if [[ -n $owner ]]; then
        (
            while kill -0 "$owner" 2>/dev/null; do sleep 1; done
            "$SELF" stop "$dir"
        ) </dev/null >/dev/null 2>&1 3>&- &
    fi
    exec 1>&3 3>&-
    echo "PGROUTE_PATRONI_DIR=$dir"
    echo "PGROUTE_PATRONI_URLS=$urls"
    echo "PGROUTE_PATRONI_PG_PORTS=$pg_ports"
}

rest_port() { awk '{print $1}' "$1/member$2.ports"; }

# The cluster as Patroni's REST API of any member reports it.
cluster_json() {
    local dir=$1 f
    for f in "$dir"/member*.ports; do
        curl -fs --max-time 2 "http://127.0.0.1:$(awk '{print $1}' "$f")/cluster" && return 0
    done
    return 1
}

wait_leader() {
    local dir=$1 secs=$2
    for _ in $(seq $((secs * 10))); do
        cluster_json "$dir" 2>/dev/null | python3 -c '
import json, sys
c = json.load(sys.stdin)
sys.exit(0 if any(m["role"] == "leader" and m["state"] == "running" for m in c["members"]) else 1)' 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

wait_streaming() {
    local dir=$1 members=$2 secs=$3
    for _ in $(seq $((secs * 10))); do
        cluster_json "$dir" 2>/dev/null | python3 -c '
import json, sys
c = json.load(sys.stdin)
ms = c["members"]
ok = len(ms) == int(sys.argv[1]) and all(m["role"] == "leader" or m["state"] in ("streaming", "running") and m.get("lag", 1) == 0 for m in ms)
sys.exit(0 if ok else 1)' "$members" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

check_dir() {
    [[ -f $1/.pgroute-patroni ]] || die "$1: not a patroni.sh directory"
}

cmd_stop() {
    local dir=${1:?DIR}
    [[ -d $dir ]] || return 0
    check_dir "$dir"
    pkill -f "patroni $dir/" 2>/dev/null || true
    for _ in $(seq 100); do
        pgrep -f "patroni $dir/" >/dev/null || break
        sleep 0.1
    done
    pkill -9 -f "patroni $dir/" 2>/dev/null || true
    pkill -9 -f -- "-D $dir/data" 2>/dev/null || true
    pkill -f "etcd --name pgroute-etcd --data-dir $dir/etcd" 2>/dev/null || true
    sleep 0.2
    rm -rf "$dir"
}

cmd_kill() {
    local dir=${1:?DIR} i=${2:?MEMBER}
    check_dir "$dir"
    pkill -9 -f "patroni $dir/member$i.yml" 2>/dev/null || true
    pkill -9 -f -- "-D $dir/data$i" 2>/dev/null || true
}

cmd_tag() {
    local dir=${1:?DIR} i=${2:?MEMBER} tag=${3:?TAG} value=${4:?VALUE}
    check_dir "$dir"
    sed -i "s/^  $tag: .*/  $tag: $value/" "$dir/member$i.yml"
    pkill -HUP -f "patroni $dir/member$i.yml"
}

cmd_leader() {
    local dir=${1:?DIR}
    check_dir "$dir"
    cluster_json "$dir" | python3 -c '
import json, sys
c = json.load(sys.stdin)
print(next(m["name"][len("member"):] for m in c["members"] if m["role"] == "leader"))'
}

case ${1:-} in
start) shift; cmd_start "$@" ;;
stop) shift; cmd_stop "$@" ;;
kill) shift; cmd_kill "$@" ;;
leader) shift; cmd_leader "$@" ;;
tag) shift; cmd_tag "$@" ;;
*) usage ;;
esac
