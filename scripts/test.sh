#!/usr/bin/env bash
# Install the test dependencies into .venv and run every check: ruff, mypy --strict, pytest.
# Works on a fresh machine (Python 3.11+, a C compiler for llama-cpp-python; pip caches its wheel).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'

.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
