#!/usr/bin/env bash
# Installs the real tools the tests and benchmarks use, only when missing: redis-server/redis-cli and
# promtool + prometheus (Debian packages), wrk for load. Idempotent; quiet when everything is present.
set -euo pipefail
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-cli >/dev/null || need+=(redis-tools)
command -v promtool >/dev/null || need+=(prometheus)
command -v wrk >/dev/null || need+=(wrk)
command -v npm >/dev/null || need+=(npm)  # helm comes from an npm package (scripts/install-helm.sh)
if ((${#need[@]})); then
  echo "install-tools: installing ${need[*]}" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The Debian prometheus package starts a system service on :9090; the tests run their own.
if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl stop prometheus || true
fi
