#!/usr/bin/env bash
# Installs Node.js and the npm packages of tests/integration/node (pg, postgres.js) for the Node driver tests (idempotent).
set -euo pipefail

# Runs without a terminal (CI, make, pytest) and must never stop to ask a question.
export DEBIAN_FRONTEND=noninteractive

NODE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/integration/node"

if [[ $(id -u) -eq 0 ]]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  # -n: fail rather than wait for a password nobody can type (no stdin under make/CI).
  SUDO=(sudo -n)
else
  SUDO=()
fi

need_root() {
  if [[ $(id -u) -ne 0 && ${#SUDO[@]} -eq 0 ]]; then
    echo "install-node-deps: must run as root or with sudo available to install: $*" >&2
    exit 1
  fi
}

# Debian's packages, only for the commands that are missing: a Node.js installed another way (which
# brings its own npm) is kept.
missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

if [[ ${#missing[@]} -gt 0 ]]; then
  need_root "${missing[*]}"
  echo "install-node-deps: installing ${missing[*]}"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}" </dev/null
fi

# npm ci writes node_modules/.package-lock.json last: missing or older than the lock file means the
# packages are absent, half installed or stale. npm ci starts from an empty node_modules each time.
stamp="$NODE_DIR/node_modules/.package-lock.json"
if [[ ! -f "$stamp" || "$NODE_DIR/package-lock.json" -nt "$stamp" ]]; then
  echo "install-node-deps: npm ci in ${NODE_DIR}"
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund </dev/null)
fi

echo "install-node-deps: all dependencies present"
