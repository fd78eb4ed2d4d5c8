#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, the services' tests and the end-to-end tests
# in tests/ (real edge processes and real backends on ephemeral loopback ports).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh redis-server openssl prometheus chromium nghttp2-client nginx python3-grpcio iproute2 ngtcp2-client pebble
cargo test --workspace --all-targets "$@"
