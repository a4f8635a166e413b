#!/usr/bin/env bash
# Makes sure PostgreSQL and Redis answer on their standard loopback ports, for the
# multi-node tests and scripts/cluster.sh: installs them (Debian packages) when missing and
# starts them when down. A second run changes nothing. The embedded default (SQLite) needs
# neither.
#   PostgreSQL: 127.0.0.1:5432, user postgres. A cluster this script creates trusts
#               loopback connections as any role: for a development or CI machine only,
#               never a shared or production host.
#   Redis:      127.0.0.1:6379.
set -euo pipefail

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "engines.sh: '$*' needs root (or sudo)" >&2; return 1; fi
}
apt_install() {
  say "installing $* (Debian packages)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null \
    || { as_root apt-get update -qq >/dev/null && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null; }
}

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
wait_for() { for _ in $(seq 1 100); do "$1" && return 0; sleep 0.1; done; return 1; }

if ! pg_up; then
  fresh=0
  if ! command -v pg_lsclusters >/dev/null; then
    apt_install postgresql postgresql-client
    fresh=1
  fi
  if [ -z "$(pg_lsclusters -h 2>/dev/null)" ]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -1)
    as_root pg_createcluster "$version" main >/dev/null
    fresh=1
  fi
  read -r version cluster _ < <(pg_lsclusters -h | head -1)
  if [ "$fresh" = 1 ]; then
    # Loopback trust for the tests' throwaway databases, as on the development machine.
    hba="/etc/postgresql/$version/$cluster/pg_hba.conf"
    as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  say "starting PostgreSQL $version/$cluster"
  as_root pg_ctlcluster "$version" "$cluster" start || true
  # A package install may have started it already, before the trust lines: reload.
  [ "$fresh" = 1 ] && as_root pg_ctlcluster "$version" "$cluster" reload || true
  wait_for pg_up || { echo "PostgreSQL did not come up on 127.0.0.1:5432" >&2; exit 1; }
fi

if ! redis_up; then
  command -v redis-server >/dev/null || apt_install redis-server
  say "starting Redis"
  as_root service redis-server start >/dev/null 2>&1 \
    || as_root redis-server --bind 127.0.0.1 --port 6379 --save '' --appendonly no --daemonize yes >/dev/null
  wait_for redis_up || { echo "Redis did not come up on 127.0.0.1:6379" >&2; exit 1; }
fi
