#!/usr/bin/env bash
# Side-by-side benchmark: the reference peers (GoChat in Go, Node ws) and Confab, one after
# the other in one run, driven by the shared Go load generator; then Confab-only scenarios
# (many rooms, durable ingest, joins under a history read flood) with confab-bench. Writes bench-results/*.jsonl and prints
# Markdown tables; then the time to interactive of a room page in Chromium (release build).
# Loopback only; every run is bounded. Takes about 20 minutes.
#
#   scripts/bench.sh                 all scenarios
#   SCENARIOS="fanout latency" scripts/bench.sh
#
# Needs: ../shared/bench (or BENCH_SRC), Go and Node (apt: golang-go
# golang-github-gorilla-websocket-dev nodejs npm), a release build (made here).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
ROOT=$PWD
BENCH_SRC=${BENCH_SRC:-$ROOT/../shared/bench}
WORK=${BENCH_WORK:-/tmp/confab-bench-harness}
RESULTS=${RESULTS:-$ROOT/bench-results}
SCENARIOS=${SCENARIOS:-fanout latency latency5k idle idle19900 slow}
mkdir -p "$RESULTS"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="$RESULTS/run-$stamp.jsonl"

if [ ! -x "$WORK/loadgen/loadgen" ]; then
  rm -rf "$WORK" && cp -r "$BENCH_SRC" "$WORK" && chmod -R u+w "$WORK"
  "$WORK/build.sh"
fi
# One invocation for both binaries, so the server crate is built once with one feature set.
cargo build --release --workspace --features confab/ssr --bins
db_dir=$(mktemp -d)
trap 'rm -rf "$db_dir"' EXIT

# Confab with every limit on, set for a load test from one address.
confab=("$ROOT/target/release/confab" --addr "127.0.0.1:{port}" --db "$db_dir/bench.db" --log warn
        --msg-rate 1000000 --msg-burst 1000000 --max-conns-per-ip 20000
        --http-rate 1000000 --http-burst 1000000 --room-create-rate 1000000 --room-create-burst 1000000)
proto=(--hello '{"type":"hello","nick":"u{i}"}' --hello '{"type":"join","room":"bench"}'
       --template '{"type":"send","room":"bench","text":"{payload}","client_id":"b{i}-{seq}"}')

# Scenarios beyond the harness's own: a name, the harness scenario it varies, and the
# loadgen flags that vary it (appended, so they win).
#   latency5k  the latency scenario with a bigger fan-out: 5,000 clients × 20 msg/s (the
#              same 100,000 deliveries/s)
#   idle19900  idle with 19,900 connections (the descriptor limit here is 20,000)
variant() {
  case "$1" in
    latency5k) echo latency --clients 5000 --rate 20 --connect-rate 2000 ;;
    idle19900) echo idle --clients 19900 ;;
    *) echo "$1" ;;
  esac
}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

for s in $SCENARIOS; do
  read -r -a v <<<"$(variant "$s")"
  base=${v[0]}; flags=("${v[@]:1}")
  LABEL="$s:gochat-go" OUT=$out "$WORK/run.sh" "$base" ${flags[@]+"${flags[@]}" --} "$WORK/peers/gochat-go/gochat-go" -port '{port}'
  LABEL="$s:node-ws" OUT=$out "$WORK/run.sh" "$base" ${flags[@]+"${flags[@]}" --} node "$WORK/peers/node-ws/server.js" '{port}'
  rm -f "$db_dir"/bench.db*
  LABEL="$s:confab" OUT=$out "$WORK/run.sh" "$base" "${proto[@]}" ${flags[@]+"${flags[@]}"} -- "${confab[@]}"
done

# Confab-only scenarios: many rooms, and durable ingest.
bench_confab() {
  local label=$1; shift
  rm -f "$db_dir"/bench.db*
  local port=9177
  "${confab[@]/\{port\}/$port}" & local pid=$!
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  "$ROOT/target/release/confab-bench" "$@" --url "ws://127.0.0.1:$port/ws" --server-pid "$pid" --label "$label" | tee -a "$out"
  kill -TERM "$pid"; wait "$pid" || true
}
if [ -z "${SKIP_CONFAB_ONLY:-}" ]; then
  bench_confab rooms:confab rooms --rooms 1000 --members 10 --rate 1 --connect-rate 2000 --warmup 3 --duration 10
  bench_confab ingest:confab ingest --clients 64 --rooms 64 --window 64 --warmup 2 --duration 10
  bench_confab read-flood:confab read-flood --clients 64 --size 1000 --warmup 2 --duration 10
fi

python3 "$WORK/summarize.py" "$out" || true
echo "results: $out"

# Time to interactive in Chromium against the release build (the WASM of `cargo leptos
# build --release`, as `make run` serves it): printed by end2end/tests/interactive.spec.ts.
if [ -z "${SKIP_INTERACTIVE:-}" ]; then
  cargo leptos build --release
  port=9178
  rm -f "$db_dir"/bench.db*
  LEPTOS_SITE_ROOT=target/site "$ROOT/target/release/confab" --addr "127.0.0.1:$port" --db "$db_dir/bench.db" --log warn &
  pid=$!
  (cd end2end && CONFAB_BASE_URL="http://127.0.0.1:$port" CONFAB_BUILD="release build" \
    npx playwright test tests/interactive.spec.ts) | tee "$RESULTS/interactive-$stamp.txt" || true
  kill -TERM "$pid"; wait "$pid" || true
fi

