#!/usr/bin/env bash
# Side-by-side load comparison of the edge, nginx (Debian's 1.22) and HAProxy (Debian's 2.6)
# on this machine, same backends, same run, order rotated each round; the edge is reported
# against the better of nginx and HAProxy. Writes benches/results/compare-<date>.md.
#   benches/compare.sh [--rounds N] [--duration SECONDS] [--only SCENARIO] [--proxies LIST]
#                      [--logs on|off]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh nginx haproxy wrk nghttp2-client python3 openssl
cargo build --release -p edge -p services
exec python3 benches/compare.py "$@"
