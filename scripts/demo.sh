#!/usr/bin/env bash
# The demo command (README): install pipekit into .venv and run the shipped SQLite demo.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
export PATH="$PWD/.venv/bin:$PATH"
unset PIPEKIT_DEFS PIPEKIT_DB PIPEKIT_CONFIG
pipekit demo-data            # module_defs/data/demo_erp.db: the demo's source
pipekit init
pipekit validate
pipekit plan orders
pipekit run --group demo     # first run: creates the tables
pipekit demo-data            # the ERP changes: 5% of orders updated, 1% new
pipekit run --group demo     # incremental: only the changes move
pipekit history
echo
echo "Now in Dagster:  .venv/bin/dagster dev   (then open http://127.0.0.1:3000)"
echo "or:              .venv/bin/dagster job execute -m pipekit_dagster.definitions -j demo_job"
