#!/usr/bin/env bash
# Security off vs on: one build of esd, the same workload against a fresh
# store in plain text with no auth file ("plain"), and with security on
# ("secure"): TLS with the certificates of `esctl certs dev`, mTLS (esctl
# presents a client certificate) and an auth file, esctl authenticating
# with a bearer token (which wins over the certificate) whose role grants
# append and read on one prefix of streams, so that every call is checked
# against a per-prefix rule. PAIRS times in pairs whose order alternates.
# Prints each run (events/s or calls/s for -b 0, and esd's CPU time per
# call: user + system from /proc over the bench and its warmup, divided by
# the calls the bench made), the medians and the ratio secure/plain.
# Loopback only; each run is bounded by DURATION.
#
#   test/security-ab.sh                             # append -c 64, 2 pairs of 10s
#   PAIRS=5 test/security-ab.sh append -c 64 -b 0   # the request path without the disk
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS=${PAIRS:-2}
D=${DURATION:-10s}
ADDR=127.0.0.1:17420
[ $# -gt 0 ] || set -- append -c 64
tmp=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

go build -o "$tmp/esd" ./cmd/esd
go build -o "$tmp/esctl" ./cmd/esctl
"$tmp/esctl" certs dev --out "$tmp/tls" >/dev/null
auth=$tmp/tls/auth.json # certs dev's: the client admin may do everything
"$tmp/esctl" token role set bench --file "$auth" --grant 'bench-:read,append' --grant '*:admin' >/dev/null
token=$("$tmp/esctl" token create --file "$auth" --identity bench --roles bench)
echo "esd at $(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes'); workload: $*"

cputicks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

one() { # one run, $1 = plain or secure, then the workload: prints calls/s and esd's CPU µs per call
  local mode=$1 srv=() cli=() scheme=http curlca=()
  shift
  if [ "$mode" = secure ]; then
    srv=(--tls-cert "$tmp/tls/server.pem" --tls-key "$tmp/tls/server-key.pem" --tls-client-ca "$tmp/tls/ca.pem" --auth-file "$auth")
    cli=(--tls-ca "$tmp/tls/ca.pem" --tls-cert "$tmp/tls/admin.pem" --tls-key "$tmp/tls/admin-key.pem" --token "$token")
  fi
  rm -rf "$tmp/data"
  "$tmp/esd" --data-dir "$tmp/data" --listen $ADDR --http-listen 127.0.0.1:17421 --log-level warn "${srv[@]}" &
  pid=$!
  for _ in $(seq 100); do "$tmp/esctl" --addr $ADDR "${cli[@]}" server info >/dev/null 2>&1 && break; sleep 0.1; done
  local c0 c1 out
  c0=$(cputicks $pid)
  out=$("$tmp/esctl" --addr $ADDR "${cli[@]}" -o json bench "$@" -d "$D")
  c1=$(cputicks $pid)
  python3 -c '
import json, sys
d = json.loads(sys.argv[1])
print("%.0f %.1f" % (d["ops_per_sec"], (int(sys.argv[2]) - int(sys.argv[3])) * 1e6 / int(sys.argv[4]) / max(d["ops"], 1)))
' "$out" "$c1" "$c0" "$(getconf CLK_TCK)"
  kill -TERM $pid; wait $pid || true
  pid=
}

for i in $(seq "$PAIRS"); do
  order="plain secure"
  [ $((i % 2)) = 0 ] && order="secure plain" # neither always runs first
  for m in $order; do
    echo "$m $(one $m "$@")"
  done
done | tee "$tmp/runs" >&2
python3 test/ab_summary.py "$tmp/runs" plain secure call
