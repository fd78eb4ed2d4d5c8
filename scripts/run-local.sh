#!/usr/bin/env bash
# Runs the edge on its embedded local default with the bundled backend services:
#   edge   http://127.0.0.1:8080  (routes as upstreams.toml, backends on loopback)
#   admin  http://127.0.0.1:9180  (/health, /status)
# Ctrl-C stops both. Extra arguments go to `edge run` (e.g. --config my.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
cargo build --release -p edge -p services

target/release/services all &
services_pid=$!
trap 'kill "$services_pid" 2>/dev/null; wait "$services_pid" 2>/dev/null || true' EXIT INT TERM

echo "edge: http://127.0.0.1:8080  admin: http://127.0.0.1:9180/status" >&2
target/release/edge run "$@"
