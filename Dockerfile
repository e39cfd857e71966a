# syntax=docker/dockerfile:1
#
# One image for every Trellis service. The entrypoint picks what to run:
#
#   docker run IMAGE identity | registry | webhooks | logs    python -m services.<name> (gRPC)
#   docker run IMAGE edge                                     python -m services.edge (HTTP, uvicorn)
#   docker run IMAGE console                                  python -m services.console (the web console, HTTP)
#   docker run IMAGE migrate [SERVICE ...]                    trellis migrate [SERVICE ...]
#   docker run IMAGE trellis ARGS...                          the trellis command line
#
# Build:  docker build -t trellis:dev .
# See docs/operators.md for deploying it with deploy/k8s/.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: installs the project and its dependencies into /opt/venv -------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Dependencies first, from pyproject.toml alone, so this layer is reused until they change.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --upgrade pip \
    && pip install -r /tmp/requirements.txt

# Then the project itself (not editable: the source lands in the venv's site-packages).
COPY README.md ./
COPY services ./services
RUN pip install --no-deps . \
    && python -m compileall -q /opt/venv/lib

# --- final: the venv and nothing to build with --------------------------------------------
FROM ${PYTHON_IMAGE} AS final

LABEL org.opencontainers.image.title="trellis" \
      org.opencontainers.image.description="Trellis integration services (identity, registry, webhooks, logs, edge, console)"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TRELLIS_BIND_HOST=0.0.0.0 \
    TRELLIS_DATA_DIR=/tmp/trellis

RUN groupadd --system --gid 10001 trellis \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin trellis

COPY --from=builder /opt/venv /opt/venv
COPY --chmod=0755 deploy/docker/entrypoint.sh /usr/local/bin/trellis-entrypoint

# An empty, read-only working directory: `python -m` puts it first on sys.path.
WORKDIR /srv
USER 10001:10001

EXPOSE 8080 8081 50051 50052 50053 50054

ENTRYPOINT ["/usr/local/bin/trellis-entrypoint"]
CMD ["help"]
