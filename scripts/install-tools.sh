#!/usr/bin/env bash
# Installs the real tools a task needs, only when missing (Debian packages). Idempotent; quiet when present.
#
#   scripts/install-tools.sh run     redis-server (make run starts a throwaway one when none answers)
#   scripts/install-tools.sh test    + redis-cli, promtool (prometheus), npm for helm, cc  (default; make test, CI)
#   scripts/install-tools.sh bench   + redis-cli, wrk and hey (HTTP load), cc              (make bench)
#
# Exit 0 when everything is present afterwards; otherwise it names what is still missing on stderr and exits 1
# (no root and no sudo, no network, or a package the distribution lacks): callers decide whether that is fatal.
set -uo pipefail
profile="${1:-test}"
declare -A package=([redis-server]=redis-server [redis-cli]=redis-tools [promtool]=prometheus [npm]=npm
                    [wrk]=wrk [hey]=hey [cc]=gcc)  # cc builds bench/ping_client.c, the fleet's reference client
case "$profile" in
  run) tools=(redis-server) ;;
  test) tools=(redis-server redis-cli promtool npm cc) ;;  # helm comes from an npm package (scripts/install-helm.sh)
  bench) tools=(redis-server redis-cli wrk hey cc) ;;
  *) echo "install-tools: unknown profile '$profile' (run, test or bench)" >&2; exit 2 ;;
esac
need=()
for tool in "${tools[@]}"; do command -v "$tool" >/dev/null || need+=("${package[$tool]}"); done
if ((${#need[@]})); then
  echo "install-tools: installing ${need[*]}" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null; then SUDO="sudo"; else echo "install-tools: not root and no sudo" >&2; fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; } ||
    echo "install-tools: apt-get could not install ${need[*]}" >&2
fi
# The Debian prometheus package starts a system service on :9090; the tests run their own (test profile only:
# running or benchmarking the agent never touches the machine's services).
if [ "$profile" = test ] && command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null
then
  systemctl stop prometheus || true
fi
missing=()
for tool in "${tools[@]}"; do command -v "$tool" >/dev/null || missing+=("$tool (Debian package ${package[$tool]})"); done
if ((${#missing[@]})); then
  printf 'install-tools: still missing: %s\n' "${missing[*]}" >&2
  exit 1
fi
