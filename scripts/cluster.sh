#!/usr/bin/env bash
# Confab as three identical nodes behind a load balancer, on this machine:
#   PostgreSQL (durable state) and Redis (fan-out) on their loopback ports, started or
#   installed when missing; nodes on 127.0.0.1:3001-3003; nginx round-robin on :3000 with
#   WebSocket proxying. Open http://127.0.0.1:3000, chat, kill a node
#   (`kill -9 $(cat target/cluster/node-3002.pid)`) and watch the page resume on another.
#   Ctrl-C stops everything. /healthz and /metrics of each node: http://127.0.0.1:300N/.
# Settings: CONFAB_CLUSTER_DB (default postgres://postgres@127.0.0.1:5432/confab),
#   CONFAB_BROKER (default redis://127.0.0.1:6379), CONFAB_CLUSTER_PORT (default 3000).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
db_url="${CONFAB_CLUSTER_DB:-postgres://postgres@127.0.0.1:5432/confab}"
broker="${CONFAB_BROKER:-redis://127.0.0.1:6379}"
port="${CONFAB_CLUSTER_PORT:-3000}"
run_dir="target/cluster"

scripts/setup.sh
scripts/engines.sh
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  say "installing nginx (Debian package)"
  if [ "$(id -u)" = 0 ]; then sudo_=""; else sudo_="sudo"; fi
  $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx-light >/dev/null \
    || { $sudo_ apt-get update -qq && $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx-light >/dev/null; }
fi
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"

say "building the release"
cargo leptos build --release

# The database: created when missing (the nodes migrate it, under an advisory lock).
db_name="${db_url##*/}"; db_name="${db_name%%\?*}"
admin_url="${db_url%/*}/postgres"
if ! psql "$admin_url" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db_name'" | grep -q 1; then
  say "creating database $db_name"
  psql "$admin_url" -qc "CREATE DATABASE \"$db_name\""
fi

mkdir -p "$run_dir"
pids=()
cleanup() {
  say "stopping the cluster"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$run_dir/nginx.pid" ] && kill "$(cat "$run_dir/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

start_node() {
  local p=$1
  ./target/release/confab --addr "127.0.0.1:$p" --db "$db_url" --broker "$broker" \
    --public-url "http://127.0.0.1:$port" --allowed-origins "http://localhost:$port" \
    >>"$run_dir/node-$p.log" 2>&1 &
  echo $! >"$run_dir/node-$p.pid"
  pids+=($!)
}
for p in 3001 3002 3003; do start_node "$p"; done
for p in 3001 3002 3003; do
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$p/healthz" >/dev/null && break; sleep 0.1; done
done

cat >"$run_dir/nginx.conf" <<CONF
worker_processes 1;
pid $PWD/$run_dir/nginx.pid;
error_log $PWD/$run_dir/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $PWD/$run_dir/nginx-body;
  proxy_temp_path $PWD/$run_dir/nginx-proxy;
  fastcgi_temp_path $PWD/$run_dir/nginx-fastcgi;
  uwsgi_temp_path $PWD/$run_dir/nginx-uwsgi;
  scgi_temp_path $PWD/$run_dir/nginx-scgi;
  map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }
  upstream confab {
    # Round-robin; a node that refuses connections is skipped for 2 s.
    server 127.0.0.1:3001 max_fails=1 fail_timeout=2s;
    server 127.0.0.1:3002 max_fails=1 fail_timeout=2s;
    server 127.0.0.1:3003 max_fails=1 fail_timeout=2s;
  }
  server {
    listen 127.0.0.1:$port;
    location / {
      proxy_pass http://confab;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection \$connection_upgrade;
      proxy_set_header Host \$http_host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_read_timeout 1h;
      proxy_next_upstream error timeout http_502;
    }
  }
}
CONF
"$nginx_bin" -p "$PWD/$run_dir" -c "$PWD/$run_dir/nginx.conf"
say "Confab cluster on http://127.0.0.1:$port (nodes 3001-3003, logs in $run_dir/)"
wait "${pids[@]}"
