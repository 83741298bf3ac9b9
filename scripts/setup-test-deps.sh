#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine (idempotent):
#  - Debian: docker-registry (CNCF distribution, the real OCI registry the tests run on loopback),
#    umoci and skopeo (build and copy images the way users do), git.
#  - PyPI, into .tools/venv: in-toto and securesystemslib, an independent producer of DSSE attestations.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pair in docker-registry:docker-registry umoci:umoci skopeo:skopeo git:git pkg-config:pkg-config; do
  bin=${pair%%:*}; pkg=${pair##*:}
  command -v "$bin" >/dev/null 2>&1 || need_apt+=("$pkg")
done
dpkg -s libssl-dev >/dev/null 2>&1 || need_apt+=(libssl-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} from Debian" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .tools/venv/bin/python ] || ! .tools/venv/bin/python -c 'import in_toto, securesystemslib' 2>/dev/null; then
  echo "setup: installing in-toto and securesystemslib into .tools/venv" >&2
  python3 -m venv .tools/venv
  .tools/venv/bin/pip install -q --disable-pip-version-check 'in-toto==3.*' 'securesystemslib[crypto]==1.*'
fi
