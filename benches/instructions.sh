#!/usr/bin/env bash
# Instructions per request of edge binaries, counted by valgrind's callgrind: the edge alone
# behind h2load, a fixed number of requests, user space only. Deterministic where CPU time on
# a shared machine is not (the same binary twice: within 0.1%), so it resolves a change of 1%
# that an A/B of CPU time cannot; it does not see cache misses or the kernel, so a change is
# then confirmed with benches/compare.sh. Writes nothing; prints one line per binary.
#   benches/instructions.sh [--mode h1|h2] [--requests N] [--logs on|off] [--keep DIR]
#                           [--locked [TOP]] [BINARY...]
# --locked also counts the locked read-modify-writes (atomics) per request and names the
# functions that make them: one instruction each in the count, about twenty cycles each.
# Without a binary: target/release/edge (built first).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh valgrind nghttp2-client python3 openssl
cargo build --release -p edge -p services
exec python3 benches/instructions.py "$@"
