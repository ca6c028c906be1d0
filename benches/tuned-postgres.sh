#!/usr/bin/env bash
# A throwaway PostgreSQL server for the benchmarks, tuned as a production server
# would be (shared_buffers a quarter of a 16+ GiB machine, room for WAL between
# checkpoints), beside the machine's own: 127.0.0.1:5433, data in
# /tmp/paystar-sync-bench-pg. Debian's postgresql package provides the binaries.
#
#   benches/tuned-postgres.sh start   # prints the URL for PAYSTAR_SYNC_BENCH_DATABASE_URL
#   benches/tuned-postgres.sh stop    # stops it and removes its data
set -euo pipefail
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
dir=${PAYSTAR_SYNC_BENCH_PG_DIR:-/tmp/paystar-sync-bench-pg}
port=${PAYSTAR_SYNC_BENCH_PG_PORT:-5433}
as_postgres() { if [ "$(id -un)" = postgres ]; then "$@"; else runuser -u postgres -- "$@"; fi; }

case "${1:-start}" in
start)
  if [ ! -d "$dir" ]; then
    install -d -o postgres -g postgres "$dir"
    as_postgres "$bin/initdb" -D "$dir" -A trust -U postgres >/dev/null
  fi
  as_postgres "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w start -o \
    "-p $port -c listen_addresses=127.0.0.1 -k $dir -c shared_buffers=4GB -c max_wal_size=8GB -c checkpoint_timeout=30min -c effective_cache_size=12GB" >/dev/null
  psql -h 127.0.0.1 -p "$port" -U postgres -Atqc "SELECT 1 FROM pg_database WHERE datname = 'test'" postgres | grep -q 1 \
    || psql -h 127.0.0.1 -p "$port" -U postgres -qc "CREATE DATABASE test" postgres
  echo "postgres://postgres@127.0.0.1:$port/test"
  ;;
stop)
  as_postgres "$bin/pg_ctl" -D "$dir" -m fast -w stop >/dev/null || true
  rm -rf "$dir"
  ;;
*)
  echo "usage: $0 start|stop" >&2
  exit 2
  ;;
esac
