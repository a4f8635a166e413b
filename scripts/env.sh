# Sourced by the other scripts: where the pinned tools live, and PATH set to find them first.
# Versions are pinned here and nowhere else.
CARGO_LEPTOS_VERSION=0.3.11
WASM_BINDGEN_VERSION=0.2.130   # must equal the wasm-bindgen crate pinned in Cargo.toml
BINARYEN_VERSION=132.0.0       # npm's binaryen: Debian's 108 breaks release WASM
TOOLS_DIR="${CONFAB_TOOLS_DIR:-$HOME/.cache/confab-tools}"
export PATH="$TOOLS_DIR/node_modules/.bin:${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
