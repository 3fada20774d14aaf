#!/usr/bin/env bash
# Start (or reuse) a throwaway PostgreSQL on loopback for the ledger tests and print its URL on stdout:
#
#     export TIERGATE_TEST_POSTGRES_URL="$(scripts/start-postgres.sh)"
#
# Idempotent and fast on a second run: the cluster lives in $TIERGATE_PG_DIR (default /tmp/tiergate-pg),
# listens on 127.0.0.1:$TIERGATE_PG_PORT (default 54329) with trust auth, fsync off; nothing else is touched.
# Installs Debian's postgresql package when no server binaries are found (needs root). Logs go to stderr.
set -euo pipefail

DIR="${TIERGATE_PG_DIR:-/tmp/tiergate-pg}"
PORT="${TIERGATE_PG_PORT:-54329}"
DB="tiergate_test"

say() { echo "start-postgres: $*" >&2; }

bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

BIN="$(bindir)"
if [[ -z "$BIN" || ! -x "$BIN/initdb" ]]; then
    say "installing postgresql"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends postgresql >&2
    BIN="$(bindir)"
fi

# initdb and postgres refuse to run as root: run them as the 'postgres' user then.
as_owner() {
    if [[ "$(id -u)" == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

if [[ ! -f "$DIR/PG_VERSION" ]]; then
    say "creating a cluster in $DIR"
    mkdir -p "$DIR"
    [[ "$(id -u)" == 0 ]] && chown postgres:postgres "$DIR"
    chmod 700 "$DIR"
    as_owner "$BIN/initdb" -D "$DIR" -U postgres -A trust -E UTF8 --no-sync >"$DIR.initdb.log" 2>&1 \
        || { cat "$DIR.initdb.log" >&2; exit 1; }
fi

if ! as_owner "$BIN/pg_ctl" -D "$DIR" status >/dev/null 2>&1; then
    say "starting PostgreSQL on 127.0.0.1:$PORT"
    as_owner "$BIN/pg_ctl" -D "$DIR" -l "$DIR/server.log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        >&2 || { tail -n 20 "$DIR/server.log" >&2; exit 1; }
fi

PSQL=("$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA)
for _ in $(seq 1 50); do
    "${PSQL[@]}" -c "select 1" >/dev/null 2>&1 && break
    sleep 0.1
done
if [[ "$("${PSQL[@]}" -c "select 1 from pg_database where datname = '$DB'")" != "1" ]]; then
    "${PSQL[@]}" -c "create database $DB" >&2
fi

echo "postgresql+asyncpg://postgres@127.0.0.1:$PORT/$DB"
