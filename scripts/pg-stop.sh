#!/usr/bin/env bash
# Stop the private test PostgreSQL server that scripts/pg-start.sh started (its data stays in
# PIPEKIT_TEST_PG_DATA, default /tmp/pipekit-test-pg, so the next start is quick). No-op when it
# is not running.
set -euo pipefail
DATA="${PIPEKIT_TEST_PG_DATA:-/tmp/pipekit-test-pg}"
PGBIN=""
for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do PGBIN="$d"; break; done
[ -n "$PGBIN" ] && [ -f "$DATA/postmaster.pid" ] || exit 0
RUN=()
[ "$(id -u)" = "0" ] && RUN=(runuser -u postgres --)
"${RUN[@]}" "$PGBIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
