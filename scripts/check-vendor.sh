#!/usr/bin/env bash
# Proves vendor/tungstenite is exactly the crates.io release named in its Cargo.toml plus
# vendor/tungstenite.patch, nothing more and nothing less (see vendor/README.md).
# Needs cargo, crates.io, tar, patch and diff.
#   scripts/check-vendor.sh                        the check (CI runs it)
#   scripts/check-vendor.sh --write-patch          rewrite vendor/tungstenite.patch from the
#                                                  vendored tree, then check
#   scripts/check-vendor.sh --unpack VERSION DIR   put pristine tungstenite VERSION in DIR
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
source scripts/env.sh

vendored=vendor/tungstenite
patch_file=vendor/tungstenite.patch

die() { printf 'check-vendor: %s\n' "$*" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The version in [package] of the vendored Cargo.toml (cargo's normalised one).
vendored_version() {
  awk '/^\[/ { pkg = ($0 == "[package]") }
       pkg && /^version *=/ { gsub(/^version *= *"|".*$/, ""); print; exit }' \
    "$vendored/Cargo.toml"
}

# unpack VERSION DIR: the published tungstenite VERSION, as crates.io serves it, in DIR.
# cargo fetches it (a throwaway project with it as the only dependency, so only crates.io
# is needed); the .crate is unpacked here rather than taken from cargo's registry/src, so
# a local edit there cannot leak in, and its checksum is compared with crates.io's index.
unpack() {
  local version=$1 dest=$2 fetch="$work/fetch-$1"
  [ ! -e "$dest" ] || die "$dest already exists"
  mkdir -p "$fetch/src"
  : > "$fetch/src/lib.rs"
  cat > "$fetch/Cargo.toml" <<EOF
[package]
name = "confab-vendor-check"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
tungstenite = { version = "=$version", default-features = false }

[workspace]
EOF
  # Run from the project root so cargo is the project's pinned toolchain.
  cargo fetch --quiet --manifest-path "$fetch/Cargo.toml" ||
    die "cargo could not fetch tungstenite $version from crates.io"
  local sum
  sum=$(grep -A3 '^name = "tungstenite"$' "$fetch/Cargo.lock" | sed -n 's/^checksum = "\(.*\)"$/\1/p')
  [ -n "$sum" ] || die "no checksum for tungstenite $version in the fetched Cargo.lock"
  local crate found=
  for crate in "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"tungstenite-$version.crate"; do
    if [ -f "$crate" ] && [ "$(sha256sum "$crate" | cut -d' ' -f1)" = "$sum" ]; then
      found=$crate
      break
    fi
  done
  [ -n "$found" ] || die "cargo fetched tungstenite $version, but no .crate in its cache has checksum $sum"
  mkdir -p "$work/unpack-$version"
  tar -xzf "$found" -C "$work/unpack-$version"
  mkdir -p "$(dirname "$dest")"
  mv "$work/unpack-$version/tungstenite-$version" "$dest"
}

if [ "${1:-}" = "--unpack" ]; then
  [ $# -eq 3 ] || die "usage: scripts/check-vendor.sh --unpack VERSION DIR"
  case $3 in /*) dest=$3 ;; *) dest="$OLDPWD/$3" ;; esac
  unpack "$2" "$dest"
  echo "pristine tungstenite $2 in $dest"
  exit 0
fi

command -v patch >/dev/null 2>&1 || die "patch(1) is missing: apt-get install patch (scripts/setup.sh --test installs it)"

version=$(vendored_version)
[ -n "$version" ] || die "no [package] version in $vendored/Cargo.toml"
unpack "$version" "$work/tungstenite-$version"

if [ "${1:-}" = "--write-patch" ]; then
  cp -R "$vendored" "$work/tungstenite"
  status=0
  (cd "$work" && LC_ALL=C diff -ruN "tungstenite-$version" tungstenite) > "$work/diff" || status=$?
  [ "$status" -le 1 ] || die "diff failed"
  rm -rf "$work/tungstenite"
  {
    echo "Confab's patch to tungstenite $version: upstream (crates.io) -> vendor/tungstenite."
    echo "Apply with patch -p1 inside a pristine copy. See vendor/README.md; regenerate with"
    echo "scripts/check-vendor.sh --write-patch, which also checks the result."
    echo
    # Timestamps dropped from the file headers: a checkout's mtimes are noise in review.
    sed -E 's/^((---|\+\+\+) [^\t]+)\t.*$/\1/' "$work/diff"
  } > "$patch_file"
  echo "wrote $patch_file"
elif [ -n "${1:-}" ]; then
  die "unknown argument $1 (see the top of scripts/check-vendor.sh)"
fi

[ -f "$patch_file" ] || die "$patch_file is missing"
patched="$work/tungstenite-$version"
# Exact: no fuzz, no backup files; -E removes files the patch empties (deleted upstream files).
if ! patch --batch --quiet --fuzz=0 --no-backup-if-mismatch -E -p1 -d "$patched" -i "$root/$patch_file"; then
  die "$patch_file does not apply cleanly to pristine tungstenite $version"
fi

if ! diff -r "$patched" "$vendored" >/dev/null; then
  expected="tungstenite-$version+patch"
  {
    echo "check-vendor: $vendored is not tungstenite $version + $patch_file."
    echo "Differences ($expected -> $vendored):"
    LC_ALL=C diff -rq "$patched" "$vendored" | sed "s|$patched|$expected|g" || true
    LC_ALL=C diff -ruN "$patched" "$vendored" | sed "s|$patched|$expected|g" | head -n 200 || true
    echo
    echo "Undo the stray change. If it belongs in Confab's patch instead, run"
    echo "scripts/check-vendor.sh --write-patch, review vendor/tungstenite.patch and"
    echo "describe the change in vendor/README.md."
  } >&2
  exit 1
fi
echo "vendor/tungstenite is tungstenite $version from crates.io + $patch_file"
