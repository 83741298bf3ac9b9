#!/usr/bin/env bash
# Push-to-promotion latency benchmark (benches/push_to_promotion.rs): webhook vs file watch vs 1 s
# polling, against a real docker-registry and a bare repository on loopback. Stops by itself.
# TOLLGATE_BENCH_BUMPS=N sets the bumps per mode (default 50).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v docker-registry >/dev/null 2>&1 || scripts/setup-test-deps.sh
cargo bench --bench push_to_promotion "$@"
