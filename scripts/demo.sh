#!/usr/bin/env bash
# The demo: a local PostgreSQL 15 primary and two streaming replicas on ports 15432-15434
# (the ones proxy.toml names), and pgroute in front of them on 127.0.0.1:6432.
#
#   scripts/demo.sh            # Ctrl-C stops pgroute and the cluster
#   psql "host=127.0.0.1 port=6432 user=app password=app dbname=app"
set -euo pipefail
cd "$(dirname "$0")/.."

# PostgreSQL 15 from Debian if it is missing (as root; otherwise the cluster script says
# what to install).
if [[ ! -x /usr/lib/postgresql/15/bin/postgres && $(id -u) == 0 ]]; then
    scripts/test-deps.sh --postgres
fi
cargo build --release
env_lines=$(scripts/cluster.sh start --replicas 2 --base-port 15432 --owner-pid $$)
eval "$env_lines"
trap 'scripts/cluster.sh stop "$PGROUTE_CLUSTER_DIR" 2>/dev/null' EXIT
echo "cluster: primary 127.0.0.1:$PGROUTE_PRIMARY_PORT, replicas $PGROUTE_REPLICA_PORTS ($PGROUTE_CLUSTER_DIR)"
echo "pgroute: psql \"host=127.0.0.1 port=6432 user=app password=app dbname=app\""
export PGROUTE_APP_MD5_PASSWORD=${PGROUTE_APP_MD5_PASSWORD:-app_md5}
RUST_LOG=${RUST_LOG:-info} target/release/pgroute --config proxy.toml
