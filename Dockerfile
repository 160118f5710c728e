# The pipekit code location image: the gRPC code server that dagster-webserver and dagster-daemon
# load through deploy/workspace.yaml (a Docker Compose service, or a user deployment of Dagster's
# Helm chart), and the image run workers start from (DockerRunLauncher and K8sRunLauncher reuse
# the code server's image). See deploy/README.md.
#
#   docker build -t pipekit-code:1 .                                   # the demo definitions
#   docker build --build-arg DEFS=path/to/your/defs -t pipekit-code:1 .  # yours (inside the context)
#
# Not built in CI (no Docker daemon there); what the code server runs is tested there by
# tests/scaleout/test_stack.py, the same command outside a container.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    PIPEKIT_DEFS=/opt/pipekit/defs

WORKDIR /opt/pipekit
COPY pyproject.toml README.md ./
COPY pipekit_core ./pipekit_core
COPY pipekit_dagster ./pipekit_dagster
# [deploy]: dagster-postgres, for the instance on PostgreSQL (the code server and run workers open it)
RUN pip install --no-cache-dir '.[deploy]' \
    && useradd --system --uid 10001 --home-dir /opt/pipekit pipekit \
    && mkdir -p "$DAGSTER_HOME" "$PIPEKIT_DEFS" \
    && chown pipekit "$DAGSTER_HOME" "$PIPEKIT_DEFS"

# The instance (storage on PostgreSQL through DAGSTER_PG_* variables; run workers write their
# compute logs under DAGSTER_HOME) and the module definitions.
COPY --chown=pipekit deploy/dagster.yaml ${DAGSTER_HOME}/dagster.yaml
ARG DEFS=module_defs
COPY --chown=pipekit ${DEFS} ${PIPEKIT_DEFS}

USER pipekit
EXPOSE 4000
HEALTHCHECK --interval=20s --timeout=10s --start-period=60s --retries=3 \
    CMD ["dagster", "api", "grpc-health-check", "-p", "4000"]
CMD ["dagster", "code-server", "start", "-m", "pipekit_dagster.definitions", "-h", "0.0.0.0", "-p", "4000", "--location-name", "pipekit"]
