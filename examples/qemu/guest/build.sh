#!/usr/bin/env bash
# Builds guest.elf (the pagewire test guest) next to this script with only
# binutils.  Deterministic: no build id, no timestamps, stripped.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

as --32 -o "$tmp/guest.o" "$here/guest.S"
ld -m elf_i386 -T "$here/link.ld" -n -s --build-id=none -z noexecstack \
   -o "$tmp/guest.elf" "$tmp/guest.o"
mv "$tmp/guest.elf" "$here/guest.elf"
echo "built $here/guest.elf ($(wc -c < "$here/guest.elf") bytes)"
