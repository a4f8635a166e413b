#!/usr/bin/env bash
# Installs what building Confab needs, at pinned versions; a second run installs nothing.
#   scripts/setup.sh          build tools (wasm target, cargo-leptos, wasm-bindgen, wasm-opt)
#   scripts/setup.sh --test   also test tools (Chromium, patch, Playwright's npm packages)
# All of them end up where a plain shell finds them: scripts/check-tools.sh checks that.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  say "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

if [ "$(cargo leptos --version 2>/dev/null | awk '{print $2}')" != "$CARGO_LEPTOS_VERSION" ]; then
  say "installing cargo-leptos $CARGO_LEPTOS_VERSION (about 15 minutes, once)"
  # --ignore-rust-version: one of its locked deps claims a newer rustc than it needs.
  # no_downloads: never try to fetch tools from GitHub; we install them here instead.
  cargo install --locked --ignore-rust-version cargo-leptos --version "$CARGO_LEPTOS_VERSION" --features no_downloads
fi

if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$WASM_BINDGEN_VERSION" ]; then
  say "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION"
  # Not --locked: its lock file names a crate version missing from the registry index.
  cargo install --force wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
fi

if [ "$("$TOOLS_DIR/node_modules/.bin/wasm-opt" --version 2>/dev/null | awk '{print $3}')" != "${BINARYEN_VERSION%%.*}" ]; then
  say "installing wasm-opt (npm binaryen $BINARYEN_VERSION)"
  mkdir -p "$TOOLS_DIR"
  npm install --prefix "$TOOLS_DIR" --no-audit --no-fund --silent "binaryen@$BINARYEN_VERSION"
fi

# cargo-leptos looks wasm-opt up on PATH. A link next to cargo-leptos and wasm-bindgen, in
# cargo's bin directory (on PATH in every shell rustup set up), lets a plain shell find
# npm's wasm-opt without sourcing scripts/env.sh. It replaces any other wasm-opt there.
wasm_opt="$(cd "$TOOLS_DIR" && pwd)/node_modules/.bin/wasm-opt"
wasm_opt_link="${CARGO_HOME:-$HOME/.cargo}/bin/wasm-opt"
if [ "$(readlink "$wasm_opt_link" 2>/dev/null)" != "$wasm_opt" ]; then
  say "linking $wasm_opt_link to npm's wasm-opt"
  mkdir -p "$(dirname "$wasm_opt_link")"
  ln -sfn "$wasm_opt" "$wasm_opt_link"
fi

if [ "${1:-}" = "--test" ]; then
  # Debian packages: Chromium for the browser tests, patch for scripts/check-vendor.sh.
  missing=()
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v patch >/dev/null 2>&1 || missing+=(patch)
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} (Debian) for the tests"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
  if [ ! -d end2end/node_modules/@playwright/test ] || [ end2end/package-lock.json -nt end2end/node_modules/.package-lock.json ]; then
    say "installing Playwright's npm packages (no browser download)"
    (cd end2end && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent)
  fi
  if ! rustup component list --installed | grep -q '^clippy'; then
    rustup component add clippy rustfmt
  fi
fi
