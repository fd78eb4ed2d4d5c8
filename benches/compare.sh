#!/usr/bin/env bash
# Side-by-side load comparison of the edge and nginx (Debian's 1.22) on this machine, same
# backends, same run, alternating A B A B. Writes benches/results/compare-<date>.md.
#   benches/compare.sh [--rounds N] [--duration SECONDS] [--only SCENARIO]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh nginx wrk nghttp2-client python3 openssl
cargo build --release -p edge -p services
exec python3 benches/compare.py "$@"
