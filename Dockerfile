# syntax=docker/dockerfile:1
# budgetd: one node per container. Build: docker build -t budgetd:0.1.0 .
# Run (configs/k8s/ and docs/operations.md show the whole layout):
#   docker run -v budgetd-data:/var/lib/budgetd -v /etc/budgetd:/etc/budgetd:ro \
#     -p 8080:8080 -p 10.1.0.11:7080:7080 budgetd:0.1.0
#
# Base image: python 3.11.11 on Debian 12 (bookworm), slim; pinned by tag AND digest, so a
# rebuild gets the same bytes. The tag says what it is, the digest is what is pulled.
#   python:3.11.11-slim-bookworm
#   sha256:081075da77b2b55c23c088251026fb69a7b2bf92471e491ff5fd75c192fd38e5
# To move to a newer patch release: docker buildx imagetools inspect python:3.11.X-slim-bookworm
# and replace both (the tag and the index digest it prints), then rebuild and run the tests.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm@sha256:081075da77b2b55c23c088251026fb69a7b2bf92471e491ff5fd75c192fd38e5

# ---------------------------------------------------------------------------------------------
# build: a wheel of this repository, installed with its pinned dependencies into /opt/budgetd.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml constraints.txt ./
COPY budgetd ./budgetd
COPY client ./client
COPY jepsen-lite ./jepsen-lite
# No dev extra: the image holds budgetd and what it runs on, nothing to test or lint with.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/budgetd \
 && /opt/budgetd/bin/pip install --constraint constraints.txt /wheels/budgetd-*.whl \
 && /opt/budgetd/bin/budgetd --help >/dev/null

# ---------------------------------------------------------------------------------------------
# runtime: the same base, the venv, an unprivileged user and nothing else.
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="budgetd" \
      org.opencontainers.image.description="Raft-replicated budget and pacing store for real-time ad bidders" \
      org.opencontainers.image.version="0.1.0"
# uid/gid 10001: no clash with a host user; the data volume belongs to it.
RUN groupadd --system --gid 10001 budgetd \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/budgetd --no-create-home \
      --shell /usr/sbin/nologin budgetd \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/budgetd \
 && install -d -m 0755 /etc/budgetd
COPY --from=build /opt/budgetd /opt/budgetd
ENV PATH=/opt/budgetd/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BUDGETD_HEALTH_URL=http://127.0.0.1:8080/healthz
USER 10001:10001
WORKDIR /var/lib/budgetd
# The Raft journal, snapshot and meta file: must outlive the container.
VOLUME ["/var/lib/budgetd"]
# 8080: HTTP API (bidders, operators, probes). 7080: Raft, for the other members only.
EXPOSE 8080 7080
# No curl in slim: the image's own python. Point BUDGETD_HEALTH_URL at the node's http_bind
# when it does not listen on 127.0.0.1:8080.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['BUDGETD_HEALTH_URL'], timeout=2)"]
ENTRYPOINT ["budgetd"]
CMD ["run", "--config", "/etc/budgetd/budgetd.toml"]
