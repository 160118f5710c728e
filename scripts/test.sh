#!/usr/bin/env bash
# The test command (README): sets up everything on a fresh machine, then runs the whole suite.
#   bash scripts/test.sh [pytest args...]
# - creates .venv and installs pipekit with its dev extras
# - installs PostgreSQL (Debian package) when missing and we are root, starts a private server
# - runs ruff, mypy (pipekit_core) and pytest (all tests, the reliability suite included)
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'

# PostgreSQL (server and psql) and the sqlite3 CLI (the benchmark baseline's smoke test).
if ! ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1 || ! command -v sqlite3 >/dev/null; then
  if [ "$(id -u)" = "0" ]; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql sqlite3 >/dev/null
  else
    echo "missing: sudo apt-get install -y postgresql sqlite3" >&2
    exit 1
  fi
fi
export PIPEKIT_TEST_PG="$(bash scripts/pg-start.sh)"

.venv/bin/ruff check pipekit_core pipekit_dagster tests bench
.venv/bin/mypy
.venv/bin/pytest "$@"
