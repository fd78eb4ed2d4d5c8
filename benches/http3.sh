#!/usr/bin/env bash
# HTTP/3 side by side: the edge over HTTP/3, the edge over HTTP/2, and Caddy (Debian's, which
# serves HTTP/3) over both, same backend, same run. Writes benches/results/http3-<date>.md.
#   benches/http3.sh [--rounds N] [--duration SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh caddy nghttp2-client python3 openssl
cargo build --release -p edge -p services
cargo build --release -p edge --example h3load
exec python3 benches/http3.py "$@"
