#!/usr/bin/env bash
# Installs the Debian packages and the locale needed to build, test and run shardgate (idempotent).
set -euo pipefail

# Runs without a terminal (CI, make) and must never stop to ask a question.
export DEBIAN_FRONTEND=noninteractive

PACKAGES=(
  build-essential cmake pkg-config g++ clang-format clang-tidy
  libuv1-dev libpg-query-dev libpq-dev prometheus-cpp-dev libtomlplusplus-dev libssl-dev
  protobuf-compiler libprotobuf-dev libgtest-dev libgmock-dev libbenchmark-dev libspdlog-dev
  libboost-dev libgmp-dev ccache prometheus
  postgresql-15 postgresql-client-15
  python3 python3-psycopg python3-asyncpg python3-pytest
  default-jdk-headless libpostgresql-jdbc-java
  pgbouncer locales procps iproute2 docker-compose openssl
)
LOCALE_NAME="en_US.UTF-8"

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
    echo "install-deps: must run as root or with sudo available to install: $*" >&2
    exit 1
  fi
}

missing=()
for pkg in "${PACKAGES[@]}"; do
  # Status-Abbrev "ii " = wanted install, currently installed; anything else needs (re)installing.
  status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
  if [[ "$status" != ii* ]]; then
    missing+=("$pkg")
  fi
done

if [[ ${#missing[@]} -gt 0 ]]; then
  need_root "${missing[*]}"
  echo "install-deps: installing ${missing[*]}"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}" </dev/null
fi

# locale -a spells UTF-8 as utf8 (and sometimes UTF-8); compare case- and dash-insensitively.
have_locale() {
  locale -a 2>/dev/null | tr '[:upper:]' '[:lower:]' | tr -d '-' | grep -qx 'en_us.utf8'
}

if ! have_locale; then
  need_root "locale ${LOCALE_NAME}"
  echo "install-deps: generating locale ${LOCALE_NAME}"
  if [[ -f /etc/locale.gen ]] && command -v locale-gen >/dev/null 2>&1; then
    # Uncomment the entry (or add it) so later locale-gen runs keep it.
    if grep -qE '^[# ]*en_US\.UTF-8 UTF-8' /etc/locale.gen; then
      "${SUDO[@]}" sed -i -E 's/^[# ]*(en_US\.UTF-8 UTF-8)/\1/' /etc/locale.gen
    else
      echo 'en_US.UTF-8 UTF-8' | "${SUDO[@]}" tee -a /etc/locale.gen >/dev/null
    fi
    "${SUDO[@]}" locale-gen </dev/null
  fi
  if ! have_locale; then
    "${SUDO[@]}" localedef -i en_US -c -f UTF-8 -A /usr/share/locale/locale.alias en_US.UTF-8
  fi
  have_locale || { echo "install-deps: could not generate ${LOCALE_NAME}" >&2; exit 1; }
fi

echo "install-deps: all dependencies present"
