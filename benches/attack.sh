#!/usr/bin/env bash
# The edge under slowloris, connection floods, malformed requests, HTTP/2 rapid reset and
# oversized bodies for 60 s, against a normal client's p99 (benches/attack.py).
#   benches/attack.sh [--duration SECONDS] [--baseline SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh python3 openssl curl
cargo build --release -p edge -p services
exec python3 benches/attack.py "$@"
