# readiness-agent sidecar image. Build: docker build -t readiness-agent .
# Multi-stage: wheels are built once; the runtime image carries no compiler and runs as non-root.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY agent ./agent
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
# No .pyc writes at run time (read-only root filesystems); logs unbuffered so the platform sees them at once.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl \
    && rm -rf /wheels \
    && useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin agent
USER 65532
EXPOSE 9180
# Kubernetes/Cloud Run probe /livez, /readyz, /startupz themselves; no Docker HEALTHCHECK needed.
ENTRYPOINT ["readiness-agent"]
CMD ["run"]
