#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on loopback for the tests, the same in CI and on a laptop.
#
#   scripts/ci_postgres.sh install        # as root: PostgreSQL from Debian's packages (~20 s)
#   eval "$(scripts/ci_postgres.sh start)" # initdb + start on 127.0.0.1 and a free port;
#                                          # prints `export OPENROUTER_ARCHIVE_TEST_PG=...`
#   scripts/ci_postgres.sh stop DIR        # stop the cluster and remove DIR (printed by start)
#
# The cluster runs as an unprivileged user (`postgres` when started by root, else the caller),
# in a temporary folder, with fsync off: it holds nothing but test data. Loopback connections
# need the password (scram-sha-256), so the tests see password handling as users do.
set -euo pipefail

bindir() {
    local dir
    for dir in /usr/lib/postgresql/*/bin; do
        [ -x "$dir/initdb" ] && { echo "$dir"; return; }
    done
    command -v initdb >/dev/null && { dirname "$(command -v initdb)"; return; }
    echo "ci_postgres: no PostgreSQL server installed (run: sudo $0 install)" >&2
    exit 1
}

as_owner() {  # run "$@" as the cluster's unprivileged owner
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-}" in
install)
    if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
        apt-get update -q >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2
    fi
    ;;
start)
    bin=$(bindir)
    dir=$(mktemp -d /tmp/openrouter-archive-pg.XXXXXX)
    chmod 755 "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
    as_owner sh -c "umask 077 && echo '$password' > '$dir/pwfile'"
    as_owner "$bin/initdb" -D "$dir/data" -U archive_admin --pwfile="$dir/pwfile" -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 --no-sync --no-instructions >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    as_owner sh -c "cat >> '$dir/data/postgresql.conf'" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
CONF
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >&2 \
        || { cat "$dir/server.log" >&2; exit 1; }
    echo "export OPENROUTER_ARCHIVE_TEST_PG='postgresql+psycopg://archive_admin:$password@127.0.0.1:$port/postgres'"
    echo "export OPENROUTER_ARCHIVE_TEST_PG_DIR='$dir'"
    ;;
stop)
    dir=${2:?usage: $0 stop DIR}
    as_owner "$(bindir)/pg_ctl" -D "$dir/data" -m immediate stop >&2 || true
    rm -rf "$dir"
    ;;
*)
    echo "usage: $0 install | start | stop DIR" >&2
    exit 2
    ;;
esac
