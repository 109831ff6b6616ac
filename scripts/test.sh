#!/usr/bin/env bash
# The whole test suite, from a fresh machine with only Rust installed: installs what the
# tests need (scripts/test-deps.sh: PostgreSQL 15, psql, pgbench, the client drivers;
# as root), then runs every test. Extra arguments go to `cargo test`.
#
#   scripts/test.sh
#   scripts/test.sh --test console     # one test binary
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/test-deps.sh
exec cargo test --all-targets "$@"
