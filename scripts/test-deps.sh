#!/usr/bin/env bash
# Installs what the test suite needs beyond Rust: PostgreSQL 15 (server, psql, pgbench),
# the client drivers the compatibility tests run (psycopg 3, asyncpg, node-postgres,
# pgjdbc), and Patroni with etcd (tests/patroni.rs). Installs only what is missing; safe
# to run again. Run as root (apt-get).
#
#   scripts/test-deps.sh              # everything the tests need
#   scripts/test-deps.sh --postgres   # only PostgreSQL 15 (what the demo needs)
set -euo pipefail
cd "$(dirname "$0")/.."

PG_BIN=/usr/lib/postgresql/15/bin
apt_missing=()
apt_install() { # the Debian packages in apt_missing, if any
    [[ ${#apt_missing[@]} -gt 0 ]] || return 0
    mapfile -t apt_missing < <(printf '%s\n' "${apt_missing[@]}" | sort -u)
    echo "apt: installing ${apt_missing[*]}"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${apt_missing[@]}"
}
[[ -x $PG_BIN/postgres && -x $PG_BIN/pg_basebackup ]] || apt_missing+=(postgresql-15)
command -v psql >/dev/null 2>&1 || apt_missing+=(postgresql-client-15)
command -v pgbench >/dev/null 2>&1 || [[ -x $PG_BIN/pgbench ]] || apt_missing+=(postgresql-15)
if [[ ${1:-} == --postgres ]]; then
    apt_install
    exit 0
fi
command -v python3 >/dev/null 2>&1 || apt_missing+=(python3 python3-pip)
command -v node >/dev/null 2>&1 || apt_missing+=(nodejs npm)
command -v javac >/dev/null 2>&1 || apt_missing+=(default-jdk-headless)
[[ -f /usr/share/java/postgresql.jar ]] || apt_missing+=(libpostgresql-jdbc-java)
# tests/patroni.rs: a real Patroni cluster on one etcd (scripts/patroni.sh).
command -v patroni >/dev/null 2>&1 || apt_missing+=(patroni)
command -v etcd >/dev/null 2>&1 || apt_missing+=(etcd-server)
apt_install

if ! python3 -c 'import psycopg, asyncpg' 2>/dev/null; then
    echo "pip: installing psycopg, asyncpg"
    python3 -m pip install --quiet "psycopg[binary]" asyncpg
fi

if [[ ! -d tests/drivers/node/node_modules/pg ]]; then
    echo "npm: installing node-postgres"
    (cd tests/drivers/node && npm install --silent --no-audit --no-fund)
fi
