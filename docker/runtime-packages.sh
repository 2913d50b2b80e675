#!/usr/bin/env bash
# Prints the Debian packages that provide the shared libraries a binary needs (one per line), so the
# Docker runtime stage installs exactly those and follows new link dependencies without edits.
set -euo pipefail

if [[ $# -ne 1 || ! -x "$1" ]]; then
  echo "usage: $0 BINARY   (prints the Debian runtime packages BINARY links against)" >&2
  exit 2
fi

# dpkg -S knows a file under the path its package shipped it at; with merged /usr, ldd may report
# /lib/... for a file dpkg registered as /usr/lib/... (or the reverse), so try both spellings.
owner_of() {
  local lib=$1 candidates=("$1") real
  real=$(readlink -f "$lib")
  candidates+=("$real")
  for p in "$lib" "$real"; do
    case $p in
      /usr/lib/*) candidates+=("${p#/usr}") ;;
      /lib/*) candidates+=("/usr$p") ;;
    esac
  done
  local c out
  for c in "${candidates[@]}"; do
    if out=$(dpkg -S "$c" 2>/dev/null); then
      # "libuv1:amd64: /usr/lib/x86_64-linux-gnu/libuv.so.1" -> "libuv1"
      echo "${out%%:*}"
      return 0
    fi
  done
  return 1
}

libs=$(ldd "$1")
if grep -q 'not found' <<<"$libs"; then
  echo "runtime-packages: unresolved libraries:" >&2
  grep 'not found' <<<"$libs" >&2
  exit 1
fi

packages=()
# Lines look like "libuv.so.1 => /lib/x86_64-linux-gnu/libuv.so.1 (0x...)"; the vdso and the
# dynamic loader have no "=> path" and come with libc6 anyway.
while read -r path; do
  if ! pkg=$(owner_of "$path"); then
    echo "runtime-packages: no Debian package owns $path" >&2
    exit 1
  fi
  packages+=("$pkg")
done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 }' <<<"$libs")

printf '%s\n' "${packages[@]}" | sort -u
