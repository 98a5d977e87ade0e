# readiness-agent sidecar image (Cloud Run and GKE run linux/amd64):
#   docker buildx build --platform linux/amd64 -t readiness-agent .
# Build stage: the agent and its dependencies (the `kube` extra included: the readiness gate's Kubernetes
# client) are installed into a virtualenv; the runtime stage copies only that venv, so no wheel, pip cache or
# build tool is left in any layer. Both stages use the same pinned Python, so the venv's interpreter links
# resolve. tests/test_image.py runs the RUN steps below in a clean venv as uid 65532 and lints this file.
FROM python:3.11.16-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY agent ./agent
# The venv has no pip of its own (--without-pip): the base image's pip installs into it (`pip --python`).
RUN python -m venv --without-pip /opt/venv \
    && python -m pip --python /opt/venv/bin/python install --no-cache-dir --disable-pip-version-check ".[kube]"

FROM python:3.11.16-slim-bookworm
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
