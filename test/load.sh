#!/usr/bin/env bash
# A short load run: a fresh esd on a temporary store, esctl bench against
# it, then a clean stop. Loopback only; bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
./bin/esd --data-dir "$dir/data" --listen 127.0.0.1:17400 --http-listen 127.0.0.1:17401 --log-level warn &
pid=$!
for _ in $(seq 50); do ./bin/esctl --addr 127.0.0.1:17400 server info >/dev/null 2>&1 && break; sleep 0.1; done
./bin/esctl --addr 127.0.0.1:17400 bench append -c 64 -s 10000 -d ${DURATION:-10s}
./bin/esctl --addr 127.0.0.1:17400 bench append -c 16 -b 100 -d ${DURATION:-10s}
./bin/esctl --addr 127.0.0.1:17400 bench contention -c 64 -k 8 -d ${DURATION:-10s}
kill -TERM $pid
wait $pid
