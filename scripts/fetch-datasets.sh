#!/usr/bin/env bash
# Fetches Fashion-MNIST (full, idx .gz) from Debian's dataset-fashion-mnist package into
# data/fashion-mnist/ and checks its sha256 sums. Idempotent; registries only.
# Usage: scripts/fetch-datasets.sh [DEST]   (default: data)
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-data}
say() { echo "fetch-datasets: $*" >&2; }
fail() { echo "fetch-datasets: error: $*" >&2; exit 1; }
mkdir -p "$DEST/fashion-mnist"
DEST=$(cd "$DEST" && pwd)
SUMS='b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7  train-images-idx3-ubyte.gz
0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056  train-labels-idx1-ubyte.gz
cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa  t10k-images-idx3-ubyte.gz
8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05  t10k-labels-idx1-ubyte.gz'
if (cd "$DEST/fashion-mnist" && echo "$SUMS" | sha256sum -c --quiet) >/dev/null 2>&1; then
  say "Fashion-MNIST already in $DEST/fashion-mnist (checksums ok)"; exit 0
fi
command -v apt-get >/dev/null || fail "apt-get is missing: this script needs Debian's package tools"
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
PKG=dataset-fashion-mnist=0.0~git20200523.55506a9-1
say "downloading $PKG from Debian"
if ! apt-get download "$PKG" >apt.log 2>&1; then
  say "apt-get download failed; running apt-get update once and retrying"
  if [ "$(id -u)" = 0 ]; then apt-get update -qq >/dev/null 2>&1 || true; else sudo apt-get update -qq >/dev/null 2>&1 || true; fi
  apt-get download "$PKG" >apt.log 2>&1 || { cat apt.log >&2; fail "could not download $PKG"; }
fi
dpkg-deb -x dataset-fashion-mnist_*_all.deb deb
cp deb/usr/share/datasets/fashion-mnist/*-ubyte.gz "$DEST/fashion-mnist/"
(cd "$DEST/fashion-mnist" && echo "$SUMS" | sha256sum -c --quiet) || fail "checksum mismatch in $DEST/fashion-mnist"
say "Fashion-MNIST in $DEST/fashion-mnist (60,000 train + 10,000 test, checksums ok)"
