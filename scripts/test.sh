#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need (Debian's docker-registry,
# umoci, skopeo; in-toto in .tools/venv), then runs every unit and integration test. The integration
# tests start their own docker-registry on 127.0.0.1 and their own git repositories in temp folders.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-test-deps.sh
cargo test --all-targets "$@"
