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

runtime_dir=/tmp/edge
own_config=
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
        --runtime-dir) runtime_dir="${args[i + 1]:-$runtime_dir}" ;;
        --runtime-dir=*) runtime_dir="${args[i]#*=}" ;;
        --config | --config=*) own_config=1 ;;
    esac
done
if [[ -z "$own_config" ]]; then
    echo "edge: http://127.0.0.1:8080  admin: http://127.0.0.1:9180/status" >&2
else
    echo "edge: the listeners of your config; the addresses bound: $runtime_dir/listening.json" >&2
fi
status=0
target/release/edge run "$@" || status=$?

# A graceful binary upgrade (docs/configuration.md) hands over to a successor, whose pid is
# then in the runtime directory's pid file: the services stay up while it runs.
while pid=$(cat "$runtime_dir/edge.pid" 2>/dev/null) && kill -0 "$pid" 2>/dev/null; do
    sleep 1
done
exit "$status"
