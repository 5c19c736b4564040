#!/usr/bin/env bash
# A throwaway Postgres 15 cluster on a free loopback port, for the tests
# and benchmarks that need one:
#   scripts/pg.sh start DIR   initdb into DIR, start it, print its URL
#   scripts/pg.sh stop DIR    stop it (DIR can then be removed)
#   scripts/pg.sh restart DIR stop and start it again on the same port
#   scripts/pg.sh freeze DIR  SIGSTOP the server and its backends: a database
#                             that takes connections and never answers
#   scripts/pg.sh thaw DIR    SIGCONT them
# Postgres refuses to run as root, so as root it runs as the `postgres` user.
set -euo pipefail
# The newest Postgres installed (Debian puts each version under its own folder).
BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
cmd=${1:?start|stop|restart}
dir=$(realpath -m "${2:?a folder for the cluster}")

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

case "$cmd" in
  start)
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres "$dir"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_pg "$BIN/initdb" -D "$dir/data" -A trust -U postgres --no-sync >/dev/null
    echo "$port" > "$dir/port"
    [ "$(id -u)" -eq 0 ] && chown postgres "$dir/port"
    as_pg "$BIN/pg_ctl" -D "$dir/data" -l "$dir/log" -w -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" start >/dev/null
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    ;;
  stop)
    as_pg "$BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    ;;
  restart)
    port=$(cat "$dir/port")
    as_pg "$BIN/pg_ctl" -D "$dir/data" -l "$dir/log" -m fast -w -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" restart >/dev/null
    ;;
  freeze|thaw)
    signal=STOP; [ "$cmd" = thaw ] && signal=CONT
    pid=$(head -n 1 "$dir/data/postmaster.pid")
    kill "-$signal" "$pid"
    pkill "-$signal" -P "$pid" || true
    ;;
  *)
    echo "usage: scripts/pg.sh start|stop|restart|freeze|thaw DIR" >&2
    exit 2
    ;;
esac
