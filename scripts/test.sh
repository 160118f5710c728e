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
PORT="${PIPEKIT_TEST_PG_PORT:-54329}"
STARTED=0
if ! (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then STARTED=1; fi
export PIPEKIT_TEST_PG="$(bash scripts/pg-start.sh)"
# A server this run started is stopped when it ends (PIPEKIT_KEEP_PG=1 keeps it for repeated runs;
# scripts/pg-stop.sh stops it later). One that was already running is left as it was.
if [ "$STARTED" = "1" ] && [ "${PIPEKIT_KEEP_PG:-0}" != "1" ]; then
  trap 'bash scripts/pg-stop.sh || true' EXIT
fi

.venv/bin/ruff check pipekit_core pipekit_dagster tests bench
.venv/bin/mypy
# Two workers (the machine's two cores; most tests wait on subprocesses and servers), a test file
# per worker at a time (module fixtures are shared within a file). PIPEKIT_TEST_WORKERS=0: one process.
WORKERS="${PIPEKIT_TEST_WORKERS:-2}"
if [ "$WORKERS" = "0" ]; then
  .venv/bin/pytest --durations=15 "$@"
else
  .venv/bin/pytest -n "$WORKERS" --dist loadfile --durations=15 "$@"
fi
