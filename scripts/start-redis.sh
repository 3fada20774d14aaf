#!/usr/bin/env bash
# Start (or reuse) a throwaway Redis on loopback for the shared-limits tests and print its URL on stdout:
#
#     export TIERGATE_TEST_REDIS_URL="$(scripts/start-redis.sh)"
#
# Idempotent and fast on a second run: the server listens on 127.0.0.1:$TIERGATE_REDIS_PORT (default 63790),
# keeps nothing on disk (no RDB snapshots, no AOF), logs to $TIERGATE_REDIS_DIR (default /tmp/tiergate-redis);
# nothing else is touched. Installs Debian's redis-server package when it is missing (needs root). Logs go
# to stderr. Tests isolate themselves with a key prefix of their own, so one server serves them all.
set -euo pipefail

DIR="${TIERGATE_REDIS_DIR:-/tmp/tiergate-redis}"
PORT="${TIERGATE_REDIS_PORT:-63790}"

say() { echo "start-redis: $*" >&2; }

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    say "installing redis-server"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends redis-server redis-tools >&2
fi

ping() { redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null | grep -q PONG; }

if ! ping; then
    say "starting Redis on 127.0.0.1:$PORT"
    mkdir -p "$DIR"
    redis-server --bind 127.0.0.1 --port "$PORT" --protected-mode yes --save "" --appendonly no \
        --dir "$DIR" --logfile "$DIR/server.log" --pidfile "$DIR/redis.pid" --daemonize yes >&2
    for _ in $(seq 1 100); do
        ping && break
        sleep 0.05
    done
    ping || { tail -n 20 "$DIR/server.log" >&2; exit 1; }
fi

echo "redis://127.0.0.1:$PORT/0"
