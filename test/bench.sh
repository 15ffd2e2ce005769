#!/usr/bin/env bash
# esd's benchmark matrix, in one run so that figures can be
# compared as ratios: the disk's fsync rate (fio), the in-process Go
# benchmarks (bare Pebble vs the log), then esctl bench against a fresh esd
# on a temporary store, with esd's peak RSS after each workload.
# Loopback only; every step is bounded in time. DURATION (default 10s).
set -euo pipefail
cd "$(dirname "$0")/.."
D=${DURATION:-10s}
ADDR=127.0.0.1:17400
dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$dir"' EXIT

echo "== disk: fsync rate (fio, 4 KiB writes, fdatasync each)"
if command -v fio >/dev/null; then
  fio --name=fsync --directory="$dir" --rw=write --bs=4k --size=32m --fdatasync=1 --runtime=5 --time_based \
    --output-format=json | python3 -c 'import json,sys; j=json.load(sys.stdin); print("fio_fsyncs_per_sec %.0f" % j["jobs"][0]["write"]["iops"])'
else
  echo "fio not installed (apt-get install fio): skipped"
fi

echo "== in process: bare Pebble vs the log (64 committers, 1 event per commit)"
go test -run '^$' -bench 'PebbleSyncBaseline|LogCommit' -benchtime 3s ./internal/log/ | grep -E '^Benchmark'

echo "== in process: appends with 100 idle + 10 active subscribers vs none (7 interleaved pairs, medians)"
go test -c -o "$dir/server.test" ./internal/server/
for _ in 1 2 3 4 5 6 7; do
  for s in none 100idle10active; do
    (cd internal/server && "$dir/server.test" -test.run '^$' -test.bench "AppendWithSubscribers/$s\$" -test.benchtime 5x) | grep -E '^Benchmark'
  done
done | python3 -c '
import statistics, sys
runs = {}
for line in sys.stdin:
    f = line.split()
    runs.setdefault(f[0].split("/")[1].rsplit("-", 1)[0], []).append(float(f[2]))
m = {k: statistics.median(v) for k, v in runs.items()}
for k, v in runs.items(): print("%s appends/s: %s (median %.0f)" % (k, " ".join("%.0f" % x for x in v), m[k]))
print("with_subscribers_vs_none %.2f" % (m["100idle10active"] / m["none"]))'

echo "== esd"
./bin/esd --data-dir "$dir/data" --listen $ADDR --http-listen 127.0.0.1:17401 --log-level warn &
pid=$!
for _ in $(seq 100); do ./bin/esctl --addr $ADDR server info >/dev/null 2>&1 && break; sleep 0.1; done
rss() { echo "esd_peak_rss_mib $(( $(awk '/VmHWM/ {print $2}' /proc/$pid/status) / 1024 ))"; }
fsyncs() { curl -s http://127.0.0.1:17401/metrics | awk '/^esd_pebble_wal_fsyncs_total/ {print $2}'; }
run() { echo "-- esctl bench $*"; ./bin/esctl --addr $ADDR bench "$@" | grep -E '^(ops|events|successes|conflicts|retries|errors|latency) '; rss; }

run append -c 64 -s 10000 -b 0 -d $D          # the request path without the disk: the ceiling for unary calls here
f0=$(fsyncs); run append -c 64 -s 10000 -d $D; f1=$(fsyncs); echo "esd_wal_fsyncs_in_run $((${f1%.*} - ${f0%.*}))"
f0=$(fsyncs); run append -c 1 -d $D; f1=$(fsyncs); echo "esd_wal_fsyncs_in_run $((${f1%.*} - ${f0%.*}))"
run append -c 16 -b 100 -d $D
run contention -c 64 -k 8 -d $D
run read-all --prepare 1000000 --repeat 3
run catch-up --repeat 3
run read-stream --prepare 100000 --repeat 10
kill -TERM $pid; wait $pid
