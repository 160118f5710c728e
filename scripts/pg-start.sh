#!/usr/bin/env bash
# Start a private PostgreSQL server for the tests on 127.0.0.1 (password auth, UTC) and print
# the PIPEKIT_TEST_PG URL. Idempotent: a server already answering on the port is reused.
# Needs the Debian package `postgresql` (scripts/test.sh installs it when missing and root).
set -euo pipefail
PORT="${PIPEKIT_TEST_PG_PORT:-54329}"
DATA="${PIPEKIT_TEST_PG_DATA:-/tmp/pipekit-test-pg}"
USER_NAME=pipekit
PASSWORD="${PIPEKIT_TEST_PG_PASSWORD:-pk_test_Secret_7731}"
URL="postgresql://${USER_NAME}:${PASSWORD}@127.0.0.1:${PORT}/postgres"

PGBIN=""
for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do PGBIN="$d"; break; done
if [ -z "$PGBIN" ]; then
  echo "pg-start: PostgreSQL server binaries not found (apt-get install -y postgresql)" >&2
  exit 1
fi

if "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
  echo "$URL"
  exit 0
fi

RUN=()
if [ "$(id -u)" = "0" ]; then
  id postgres >/dev/null 2>&1 || useradd --system --home /var/lib/postgresql postgres
  RUN=(runuser -u postgres --)
fi

if [ ! -f "$DATA/PG_VERSION" ]; then
  rm -rf "$DATA"
  mkdir -p "$DATA"
  [ "$(id -u)" = "0" ] && chown postgres "$DATA"
  PWFILE=$(mktemp)
  printf '%s\n' "$PASSWORD" > "$PWFILE"
  chmod 644 "$PWFILE"
  "${RUN[@]}" "$PGBIN/initdb" -D "$DATA" -U "$USER_NAME" --pwfile="$PWFILE" \
    --auth-host=scram-sha-256 --auth-local=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$PWFILE"
fi

"${RUN[@]}" "$PGBIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 start \
  -o "-p $PORT -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c timezone=UTC" >/dev/null
echo "$URL"
