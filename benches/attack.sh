#!/usr/bin/env bash
# The edge under slowloris, connection floods, malformed requests, HTTP/2 rapid reset and
# oversized bodies for 60 s, against a normal client's p99 (benches/attack.py); with
# --slow-readers, 500 clients that stop reading, against the edge and nginx side by side.
#   benches/attack.sh [--duration SECONDS] [--baseline SECONDS]
#   benches/attack.sh --slow-readers [--send-timeout SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh python3 openssl curl nginx iproute2
cargo build --release -p edge -p services
exec python3 benches/attack.py "$@"
