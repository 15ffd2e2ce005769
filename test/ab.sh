#!/usr/bin/env bash
# A/B comparison of two builds of esd on one workload, in one run: builds
# esd at BASE (a git ref, default HEAD~1) and from the work tree, then runs
# the workload against a fresh store of each, PAIRS times (in pairs whose
# order alternates), and prints each run, the medians and the ratio
# new/base, with esd's CPU time per event (user + system, from /proc,
# over the bench including its warmup, divided by the events the writer
# acknowledged): on a shared machine that figure moves much less than
# throughput. Loopback only; each run is bounded by DURATION.
#
#   test/ab.sh                          # append -c 64 -s 10000, HEAD~1 vs work tree
#   BASE=main PAIRS=7 test/ab.sh append -c 16 -b 100
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${BASE:-HEAD~1}
PAIRS=${PAIRS:-5}
D=${DURATION:-10s}
ADDR=127.0.0.1:17410
[ $# -gt 0 ] || set -- append -c 64 -s 10000
tmp=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  git worktree remove --force "$tmp/base" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

git worktree add -q --detach "$tmp/base" "$BASE"
(cd "$tmp/base" && go build -o "$tmp/esd-base" ./cmd/esd)
go build -o "$tmp/esd-new" ./cmd/esd
go build -o "$tmp/esctl" ./cmd/esctl
echo "base $(git rev-parse --short "$BASE"), new: work tree at $(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes'); workload: $*"

cputicks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

one() { # one run of build $1 on workload $2...: prints events/s and esd's CPU µs per event
  local b=$1
  shift
  rm -rf "$tmp/data"
  "$tmp/esd-$b" --data-dir "$tmp/data" --listen $ADDR --http-listen 127.0.0.1:17411 --log-level warn &
  pid=$!
  for _ in $(seq 100); do "$tmp/esctl" --addr $ADDR server info >/dev/null 2>&1 && break; sleep 0.1; done
  local c0 c1 rate events
  c0=$(cputicks $pid)
  rate=$("$tmp/esctl" --addr $ADDR -o json bench "$@" -d "$D" | python3 -c 'import json, sys; print(json.load(sys.stdin)["events_per_sec"])')
  c1=$(cputicks $pid)
  events=$(curl -s http://127.0.0.1:17411/metrics | awk '/^esd_writer_appended_events_total/ {print $2}')
  echo "$rate $(python3 -c "print('%.1f' % (($c1 - $c0) * 1e6 / $(getconf CLK_TCK) / max(float('$events'), 1)))")"
  kill -TERM $pid; wait $pid || true
  pid=
}

for i in $(seq "$PAIRS"); do
  order="base new"
  [ $((i % 2)) = 0 ] && order="new base" # neither build always runs first
  for b in $order; do
    echo "$b $(one $b "$@")"
  done
done | tee "$tmp/runs" >&2
python3 test/ab_summary.py "$tmp/runs" base new event
