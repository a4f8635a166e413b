#!/usr/bin/env bash
# Multi-node benchmark, one run, side by side: the Socket.IO 4 + Redis adapter peer
# (../shared/bench/peers/socketio-redis, stores nothing) and Confab on PostgreSQL + Redis
# (stores every message), at 2 and 3 nodes, then Confab's durable ingest into PostgreSQL.
# CPU per delivery counts every process of the cluster: the nodes, Redis and PostgreSQL.
# Writes bench-results/cluster-*.jsonl and prints Markdown tables (BENCHMARKS.md).
#
#   scripts/bench-cluster.sh            about 3 minutes after the builds
# Needs what scripts/bench.sh needs, plus PostgreSQL and Redis (scripts/engines.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
ROOT=$PWD
BENCH_SRC=${BENCH_SRC:-$ROOT/../shared/bench}
WORK=${BENCH_WORK:-/tmp/confab-bench-harness}
RESULTS=${RESULTS:-$ROOT/bench-results}
mkdir -p "$RESULTS"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="$RESULTS/cluster-$stamp.jsonl"

if [ ! -x "$WORK/loadgen/loadgen" ] || [ ! -d "$WORK/peers/socketio-redis/node_modules" ]; then
  rm -rf "$WORK" && cp -r "$BENCH_SRC" "$WORK" && chmod -R u+w "$WORK"
  "$WORK/build.sh"
fi
cargo build --release --workspace --features confab/ssr --bins
scripts/engines.sh
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# A Redis of the benchmark's own, so its CPU is only this run's.
redis_port=6391
run_dir=$(mktemp -d)
redis_pid=""
db="confab_bench_${stamp,,}"
pids=()
stop_nodes() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }
cleanup() {
  stop_nodes
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null || true
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" || true
  rm -rf "$run_dir"
}
trap cleanup EXIT
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --pidfile "$run_dir/redis.pid" --logfile "$run_dir/redis.log"
for _ in $(seq 1 50); do [ -s "$run_dir/redis.pid" ] && break; sleep 0.1; done
redis_pid=$(cat "$run_dir/redis.pid")
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE \"$db\""

wait_port() { for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
join_by() { local IFS=,; echo "$*"; }
# Every PostgreSQL process (postmaster, background workers, the nodes' backends).
pg_pids() { pgrep -d, -x postgres || true; }

start_peer() {
  local n=$1 urls=()
  for i in $(seq 1 "$n"); do
    node "$WORK/peers/socketio-redis/server.js" "930$i" "redis://127.0.0.1:$redis_port" >"$run_dir/peer-$i.log" 2>&1 &
    pids+=($!)
    urls+=("ws://127.0.0.1:930$i/socket.io/?EIO=4&transport=websocket&room=bench")
  done
  for i in $(seq 1 "$n"); do wait_port "930$i"; done
  URLS=$(join_by "${urls[@]}")
}

start_confab() {
  local n=$1 urls=()
  for i in $(seq 1 "$n"); do
    "$ROOT/target/release/confab" --addr "127.0.0.1:940$i" --db "postgres://postgres@127.0.0.1:5432/$db" \
      --broker "redis://127.0.0.1:$redis_port" --broker-prefix "bench-$stamp:" --log warn \
      --msg-rate 1000000 --msg-burst 1000000 --max-conns-per-ip 20000 \
      --http-rate 1000000 --http-burst 1000000 --room-create-rate 1000000 --room-create-burst 1000000 \
      >"$run_dir/confab-$i.log" 2>&1 &
    pids+=($!)
    urls+=("ws://127.0.0.1:940$i/ws")
  done
  for i in $(seq 1 "$n"); do wait_port "940$i"; done
  URLS=$(join_by "${urls[@]}")
}

# The load generator, with every process of the cluster counted.
loadgen() {
  local label=$1; shift
  local extra
  extra=$(join_by "${pids[@]:1}" "$redis_pid" $(pg_pids | tr , ' '))
  "$WORK/loadgen/loadgen" --url "$URLS" --server-pid "${pids[0]}" --extra-pids "$extra" --label "$label" "$@" \
    | tee -a "$out"
}

# The warm-up (opening the nodes' PostgreSQL connections) uses other nicks and another
# room: nicks stay held for the session grace after a client leaves.
warm_proto=(--hello '{"type":"hello","nick":"warm{i}"}' --hello '{"type":"join","room":"warm"}'
            --template '{"type":"send","room":"warm","text":"{payload}","client_id":"w{i}-{seq}"}')
peer_proto=(--hello 40 --template '42["chat","bench","{payload}"]')
confab_proto=(--hello '{"type":"hello","nick":"u{i}"}' --hello '{"type":"join","room":"bench"}'
              --template '{"type":"send","room":"bench","text":"{payload}","client_id":"b{i}-{seq}"}')
fanout=(--clients 100 --senders 10 --rate 0 --window 16 --size 64 --warmup 2 --duration 10)
latency=(--clients 1000 --senders 1 --rate 100 --size 64 --warmup 2 --duration 10 --connect-rate 1000)

for n in 2 3; do
  start_peer "$n"; loadgen "fanout-${n}n:socketio-redis" "${peer_proto[@]}" "${fanout[@]}"; stop_nodes
  start_confab "$n"
  # Opens the nodes' PostgreSQL connections before the measured run lists the backends.
  "$WORK/loadgen/loadgen" --url "$URLS" "${warm_proto[@]}" --clients 10 --senders 2 --rate 50 --duration 1 --warmup 0.5 >/dev/null
  loadgen "fanout-${n}n:confab" "${confab_proto[@]}" "${fanout[@]}"
  stop_nodes
done

start_peer 3; loadgen "latency-3n:socketio-redis" "${peer_proto[@]}" "${latency[@]}"; stop_nodes
start_confab 3
"$WORK/loadgen/loadgen" --url "$URLS" "${warm_proto[@]}" --clients 10 --senders 2 --rate 50 --duration 1 --warmup 0.5 >/dev/null
loadgen "latency-3n:confab" "${confab_proto[@]}" "${latency[@]}"

# Durable ingest: many senders over many rooms, spread over the three nodes, each waiting
# for its acknowledgements (a window), so the figure is events stored in PostgreSQL.
extra=$(join_by "${pids[@]:1}" "$redis_pid" $(pg_pids | tr , ' '))
"$ROOT/target/release/confab-bench" ingest --url "$URLS" --clients 192 --rooms 192 --window 64 --warmup 2 --duration 10 \
  --server-pid "${pids[0]}" --extra-pids "$extra" --label "ingest-3n:confab" | tee -a "$out"
stored=$(psql -h 127.0.0.1 -U postgres -d "$db" -tAc "SELECT COUNT(*) FROM events")
echo "events stored in PostgreSQL so far: $stored"
stop_nodes

# The same load on one node on PostgreSQL (no broker): the store's own figure.
"$ROOT/target/release/confab" --addr 127.0.0.1:9401 --db "postgres://postgres@127.0.0.1:5432/$db" --log warn \
  --msg-rate 1000000 --msg-burst 1000000 --max-conns-per-ip 20000 \
  --room-create-rate 1000000 --room-create-burst 1000000 >"$run_dir/confab-single.log" 2>&1 &
pids+=($!)
wait_port 9401
"$ROOT/target/release/confab-bench" ingest --url ws://127.0.0.1:9401/ws --clients 64 --rooms 64 --window 64 --warmup 2 --duration 10 \
  --server-pid "${pids[0]}" --extra-pids "$(join_by $(pg_pids | tr , ' '))" --label "ingest-1n:confab" | tee -a "$out"
stop_nodes

python3 "$WORK/summarize.py" "$out" || true
echo "results: $out"
