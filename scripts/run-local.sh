#!/usr/bin/env bash
# Runs the agent against $1 (a Redis URL). Only when nothing listens there does it start a throwaway
# redis-server; a Redis that answers but refuses the agent (a wrong password, say) is reported, not replaced.
set -euo pipefail
url="${1:-redis://127.0.0.1:6379/0}"
bin="$(dirname "$0")/../.venv/bin"
if ! found="$("$bin/readiness-agent" check --redis-url "$url" 2>&1)"; then
  case "$found" in
    *"failed: refused"*) ;;  # nothing listens: a throwaway Redis is what the user wants
    *)
      echo "run-local: a Redis answers at that address but the check fails:" >&2
      echo "  $found" >&2
      echo "run-local: fix the URL (make run REDIS_URL=redis://user:password@host:port/0) or stop that server" >&2
      exit 1 ;;
  esac
  dir="$(mktemp -d)"; port=6390
  echo "run-local: nothing listens at that address; starting a throwaway redis-server on 127.0.0.1:$port" >&2
  # Its own session: Ctrl-C reaches the agent only, which drains and exits before the trap stops Redis.
  setsid redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" --daemonize no \
    --logfile "$dir/redis.log" &
  redis_pid=$!
  trap 'kill "$redis_pid" 2>/dev/null; rm -rf "$dir"' EXIT
  url="redis://127.0.0.1:$port/0"
fi
echo "run-local: readiness-agent run --redis-url <url> --listen 127.0.0.1:9180 (Ctrl-C to stop)" >&2
echo "run-local: try  curl -s 'localhost:9180/readyz?verbose'  and  curl -s localhost:9180/status" >&2
"$bin/readiness-agent" run --redis-url "$url" --listen 127.0.0.1:9180
