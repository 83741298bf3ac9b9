#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine (idempotent):
#  - Debian: docker-registry (CNCF distribution, the real OCI registry the tests run on loopback),
#    umoci and skopeo (build and copy images the way users do), git.
#  - PyPI, into .tools/venv: in-toto and securesystemslib, an independent producer of DSSE attestations;
#    sigstore (sigstore-python 4.5), a second producer and an independent verifier of keyless bundles.
#  - npm, into tests/support/sigstore-js/node_modules (`npm ci`, from its package-lock.json): sigstore-js
#    (@sigstore/sign, @sigstore/mock, @sigstore/oci, @sigstore/verify), the producer of keyless
#    Sigstore bundles as GitHub's actions/attest makes them. Needs Node.js >= 20.17 and npm.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# nginx-light + fcgiwrap (git http-backend over HTTPS), sshd, ssh-keygen and gpg: tests/git_transports.rs.
for pair in docker-registry:docker-registry umoci:umoci skopeo:skopeo git:git pkg-config:pkg-config \
    nginx:nginx-light fcgiwrap:fcgiwrap sshd:openssh-server ssh-keygen:openssh-client gpg:gnupg openssl:openssl; do
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

if [ ! -x .tools/venv/bin/python ] || ! .tools/venv/bin/python -c '
import importlib.metadata as m, in_toto, securesystemslib, sigstore
assert m.version("sigstore").startswith("4.5.")' 2>/dev/null; then
  echo "setup: installing in-toto, securesystemslib and sigstore into .tools/venv" >&2
  python3 -m venv .tools/venv
  .tools/venv/bin/pip install -q --disable-pip-version-check 'in-toto==3.*' 'securesystemslib[crypto]==1.*' 'sigstore==4.5.*'
fi

# sigstore-js: reinstalled only when package-lock.json or the Node major version changed (the stamp
# records both), so a second run costs nothing.
js=tests/support/sigstore-js
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "setup: Node.js (>= 20.17) and npm are required for $js (keyless Sigstore bundles);" \
       "install them (Debian 12 ships Node 18, too old: use NodeSource or nvm) and run this again" >&2
  exit 1
fi
if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 17) ? 0 : 1)'; then
  echo "setup: $js needs Node.js >= 20.17 (@sigstore/sign 4.1), found $(node --version)" >&2
  exit 1
fi
stamp="$(sha256sum "$js/package-lock.json" | cut -d' ' -f1) node-$(node -p 'process.versions.node.split(".")[0]')"
if [ "$(cat "$js/node_modules/.tollgate-stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "setup: installing sigstore-js into $js/node_modules (npm ci)" >&2
  npm ci --prefix "$js" --no-audit --no-fund --loglevel=error >&2
  echo "$stamp" > "$js/node_modules/.tollgate-stamp"
fi
