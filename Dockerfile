# readiness-agent sidecar image (Cloud Run and GKE run linux/amd64):
#   docker buildx build --platform linux/amd64 -t readiness-agent .
# Build stage: the agent's dependencies (the `kube` extra included: the readiness gate's Kubernetes client) come
# from requirements.lock, every file checked against its sha256 (--require-hashes) and nothing resolved here
# (--no-deps, wheels only); the agent itself is then built offline with the lock's setuptools, which is removed
# again, and `pip check` proves the lock complete. `make lock` regenerates the lock (on linux x86_64 with CPython
# 3.11: a lock is per platform). The runtime stage copies only the venv, so no wheel, pip cache or build tool is
# left in any layer. Both stages use the same base, so the venv's interpreter links resolve. tests/test_image.py
# runs the RUN steps below in a clean venv as uid 65532, checks the lock against pyproject.toml, and lints this file.
#
# The base is pinned by digest (the tag is re-pushed with every Debian or pip update): the multi-platform index of
# python:3.11.16-slim-bookworm built on 2026-09-01, as docker-library/repo-info records it
# (repos/python/remote/3.11.16-slim-bookworm.md; linux/amd64 manifest
# sha256:b1add8a6f2aca6bcfcf0b9c9b522352f7ce0d62a3d556a2f2f32511aa0cca250). This project's machines reach no
# registry, so the digest is NOT verified here. To refresh (and verify) it, run
#   docker buildx imagetools inspect python:3.11.16-slim-bookworm
# and put its "Digest:" line into both FROM lines.
FROM python:3.11.16-slim-bookworm@sha256:c425d915a89a6dcd3183b1797ad9bd8878caff5a417f6371c8df93c8ea8b727f AS build
WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY agent ./agent
# The venv has no pip of its own (--without-pip): the base image's pip installs into it (`pip --python`).
RUN python -m venv --without-pip /opt/venv \
    && python -m pip --python /opt/venv/bin/python install --no-cache-dir --disable-pip-version-check \
        --require-hashes --no-deps --only-binary :all: -r requirements.lock \
    && python -m pip --python /opt/venv/bin/python install --no-cache-dir --disable-pip-version-check \
        --no-deps --no-build-isolation --no-index . \
    && python -m pip --python /opt/venv/bin/python uninstall --yes --disable-pip-version-check setuptools \
    && python -m pip --python /opt/venv/bin/python check --disable-pip-version-check

FROM python:3.11.16-slim-bookworm@sha256:c425d915a89a6dcd3183b1797ad9bd8878caff5a417f6371c8df93c8ea8b727f
# Bytecode was compiled at install time; none is written at run time (read-only root filesystems). Logs are
# unbuffered so the platform sees them at once.
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /opt/venv /opt/venv
RUN useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin agent
USER 65532
EXPOSE 9180
# Kubernetes/Cloud Run probe /livez, /readyz, /startupz themselves; no Docker HEALTHCHECK needed.
ENTRYPOINT ["readiness-agent"]
CMD ["run"]
