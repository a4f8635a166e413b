#!/usr/bin/env bash
# Benchmark smoke run for CI: a few seconds, small numbers, so the tooling cannot rot. It
# prints the figures and checks only that the run worked (delivered something, no gaps,
# no duplicates); timing goals live in BENCHMARKS.md, never in a test.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build --workspace --features confab/ssr --bins
bin="${CARGO_TARGET_DIR:-target}/debug"
tmp=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin/confab" --addr "127.0.0.1:$port" --db "$tmp/smoke.db" --log warn --msg-rate 100000 --msg-burst 100000 \
  --http-rate 100000 --http-burst 100000 --room-create-rate 100000 --room-create-burst 100000 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
for args in "fanout --clients 10 --senders 2" "latency --clients 20 --senders 1 --rate 50" \
            "rooms --rooms 5 --members 3 --rate 5" "ingest --clients 4 --rooms 4" \
            "slow --clients 5 --senders 2" "read-flood --clients 4"; do
  # shellcheck disable=SC2086
  "$bin/confab-bench" $args --url "ws://127.0.0.1:$port/ws" --server-pid "$pid" \
    --warmup 0.3 --duration 1 --label smoke | tee -a "$tmp/smoke.jsonl"
done
python3 - "$tmp/smoke.jsonl" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
bad = [r for r in runs if r["delivered"] == 0 or r["gaps"] or r["duplicates"] or r["connect_failed"]]
for r in bad:
    print("bench smoke failed:", r)
sys.exit(1 if bad else 0)
PY
echo "bench smoke: every scenario ran"
