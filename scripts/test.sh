#!/usr/bin/env bash
# Every test: protocol, store, hub and UI-state unit tests; integration tests against the
# real server; Playwright journeys in Chromium. Fails on the first failing suite.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

echo "==> PostgreSQL and Redis on loopback (multi-node tests)"
scripts/engines.sh
# The engines are up: a test that cannot reach them fails rather than skips.
export CONFAB_REQUIRE_ENGINES=1

echo "==> unit and integration tests, criterion benches run once"
cargo test --features ssr --all-targets

echo "==> the protocol suites again, on the PostgreSQL store"
CONFAB_TEST_ENGINE=postgres cargo test --features ssr --test ws_protocol --test conversations --test http_api --test accounts

echo "==> benchmark smoke run"
scripts/bench-smoke.sh

echo "==> end-to-end tests (Playwright, Chromium)"
e2e_dir=$(mktemp -d)
trap 'rm -rf "$e2e_dir"' EXIT
# A fresh database per run; the server cargo-leptos starts reads CONFAB_DB.
# Many sign-ups and sign-ins come from one address in a run: the per-address limit is
# tested by the integration suite, not here.
CONFAB_DB="$e2e_dir/e2e.db" CONFAB_LOG=warn CONFAB_AUTH_RATE=10000 CONFAB_AUTH_BURST=10000 cargo leptos end-to-end
