#!/usr/bin/env bash
# Formatting and clippy (warnings are errors) for both builds of the crate.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo fmt --check
cargo clippy --all-targets --features ssr -- -D warnings
cargo clippy -p confab-bench --all-targets -- -D warnings
cargo clippy --lib --features hydrate --target wasm32-unknown-unknown -- -D warnings
# Both features at once (as IDEs and docs builds do) must still compile.
cargo check --all-features
