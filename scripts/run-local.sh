#!/usr/bin/env bash
# Runs the agent against $1 (a Redis URL) if it answers, else against a throwaway redis-server started here.
set -euo pipefail
url="${1:-redis://127.0.0.1:6379/0}"
bin="$(dirname "$0")/../.venv/bin"
if ! "$bin/readiness-agent" check --redis-url "$url" >/dev/null 2>&1; then
  dir="$(mktemp -d)"; port=6390
  echo "run-local: nothing usable at $url; starting a throwaway redis-server on 127.0.0.1:$port" >&2
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" --daemonize no \
    --logfile "$dir/redis.log" &
  redis_pid=$!
  trap 'kill "$redis_pid" 2>/dev/null; rm -rf "$dir"' EXIT
  url="redis://127.0.0.1:$port/0"
fi
echo "run-local: readiness-agent run --redis-url $url --listen 127.0.0.1:9180 (Ctrl-C to stop)" >&2
echo "run-local: try  curl -s 'localhost:9180/readyz?verbose'  and  curl -s localhost:9180/status" >&2
"$bin/readiness-agent" run --redis-url "$url" --listen 127.0.0.1:9180
