#!/usr/bin/env bash
# Checks that a plain shell finds the build tools at the versions pinned in scripts/env.sh,
# so `cargo leptos watch/build/end-to-end` work without sourcing env.sh. PATH is cut down
# to a login shell's plus cargo's bin directory, which rustup puts first.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh # for the pinned versions only: its PATH is replaced below

cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$cargo_bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

problems=0
# check NAME WANT GOT WHERE: one line per tool, "ok" or what is wrong.
check() {
  local name=$1 want=$2 got=$3 where=$4
  if [ -z "$where" ]; then
    printf 'MISSING  %-13s not on PATH (want %s)\n' "$name" "$want"
    problems=$((problems + 1))
  elif [ "$got" != "$want" ]; then
    printf 'WRONG    %-13s %s is version %s, want %s\n' "$name" "$where" "${got:-unknown}" "$want"
    problems=$((problems + 1))
  else
    printf 'ok       %-13s %s (%s)\n' "$name" "$got" "$where"
  fi
}

where=$(command -v cargo || true)
if [ -z "$where" ]; then
  echo "MISSING  cargo         not in $cargo_bin: install Rust with rustup first"
  exit 1
fi

# version CMD...: what CMD --version prints, nothing if it fails.
version() { "$@" --version 2>/dev/null || true; }

where=$(command -v cargo-leptos || true)
check cargo-leptos "$CARGO_LEPTOS_VERSION" "$(version cargo leptos | awk '{print $2}')" "$where"

where=$(command -v wasm-bindgen || true)
check wasm-bindgen "$WASM_BINDGEN_VERSION" "$(version wasm-bindgen | awk '{print $2}')" "$where"

# npm's binaryen 132.0.0 prints "wasm-opt version 132 (version_132)".
where=$(command -v wasm-opt || true)
check wasm-opt "${BINARYEN_VERSION%%.*}" "$(version wasm-opt | awk '{print $3}')" "$where"

if [ "$problems" -gt 0 ]; then
  echo "A plain shell (PATH=$PATH) does not find the pinned build tools."
  echo "Run scripts/setup.sh: it installs them and links wasm-opt into $cargo_bin."
  exit 1
fi
