#!/usr/bin/env bash
# esd against PostgreSQL on the same write workloads, side by side in one
# run, so that the ratios mean something on a noisy machine: esctl bench
# against esd, and test/pgbench (the same workloads, flags and report)
# against a throwaway PostgreSQL cluster with an events table, taking turns
# (esd, PostgreSQL, esd, PostgreSQL, ...), each run on a fresh store or an
# emptied table. Prints each workload's medians and the ratio esd /
# PostgreSQL. Without PostgreSQL (initdb and pg_ctl under
# /usr/lib/postgresql/*/bin, or PG_BIN) it runs esd alone and says so.
#
# Loopback only (both servers listen on 127.0.0.1, on free ports); every
# command is bounded in time; everything, PostgreSQL included, is stopped
# and removed on exit. DURATION (default 10s) per run, REPEAT (default 2)
# runs per server and workload, ONLY (a regular expression) to run only the
# workloads it matches, as ONLY=contention.
set -euo pipefail
cd "$(dirname "$0")/.."
D=${DURATION:-10s}
REPEAT=${REPEAT:-2}

# LIMIT bounds each command: the run, its warmup, setup and a margin.
case $D in
  *ms) secs=1 ;;
  *s) secs=${D%s} ;;
  *m) secs=$((${D%m} * 60)) ;;
  *) echo "DURATION must be like 10s or 2m, not $D" >&2; exit 2 ;;
esac
[[ $secs =~ ^[0-9]+$ ]] || { echo "DURATION must be like 10s or 2m, not $D" >&2; exit 2; }
LIMIT=$((secs + 90))

dir=$(mktemp -d)
pgdir=
pgbin=
esd_pid=
cleanup() {
  set +e
  [ -n "$esd_pid" ] && { kill "$esd_pid"; wait "$esd_pid"; } 2>/dev/null
  if [ -n "$pgdir" ] && [ -f "$pgdir/data/postmaster.pid" ]; then
    as_pg timeout 60 "$pgbin/pg_ctl" stop -D "$pgdir/data" -m fast -w -t 50 >/dev/null
  fi
  rm -rf "$dir" ${pgdir:+"$pgdir"}
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# PostgreSQL refuses to run as root: as root, run its commands as the
# postgres system user.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

echo "== build"
make -s build
go build -o "$dir/pgbench" ./test/pgbench

echo "== disk: fsync rate (fio, 4 KiB writes, fdatasync each)"
if command -v fio >/dev/null; then
  timeout 60 fio --name=fsync --directory="$dir" --rw=write --bs=4k --size=32m --fdatasync=1 --runtime=5 --time_based \
    --output-format=json | python3 -c 'import json,sys; j=json.load(sys.stdin); print("fio_fsyncs_per_sec %.0f" % j["jobs"][0]["write"]["iops"])'
  rm -f "$dir"/fsync.*
else
  echo "fio not installed (apt-get install fio): skipped"
fi

echo "== PostgreSQL"
if [ -n "${PG_BIN:-}" ]; then
  pgbin=$PG_BIN
else
  pgbin=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1) # the newest; the pattern itself if none
fi
if [ -z "$pgbin" ] || [ ! -x "$pgbin/initdb" ] || [ ! -x "$pgbin/pg_ctl" ]; then
  echo "PostgreSQL not found (no initdb and pg_ctl under /usr/lib/postgresql/*/bin; apt-get install postgresql): comparison skipped, esd only"
  pgbin=
elif [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
  echo "running as root and there is no postgres user to run PostgreSQL as: comparison skipped, esd only"
  pgbin=
else
  pgdir=$(mktemp -d /tmp/esd-pg.XXXXXX) # its own, not under $dir: the postgres user must reach it
  [ "$(id -u)" = 0 ] && chown postgres: "$pgdir"
  pgport=$(free_port)
  as_pg timeout 120 "$pgbin/initdb" -D "$pgdir/data" -U postgres -A trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log"; exit 1; }
  # Defaults otherwise: commits wait for the WAL fsync (fsync and
  # synchronous_commit on, as esd acknowledges an append after fsync).
  cat >>"$pgdir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $pgport
unix_socket_directories = '$pgdir'
fsync = on
synchronous_commit = on
EOF
  as_pg timeout 90 "$pgbin/pg_ctl" start -D "$pgdir/data" -l "$pgdir/log" -w -t 60 >/dev/null ||
    { cat "$pgdir/log"; exit 1; }
  dsn="host=127.0.0.1 port=$pgport user=postgres dbname=postgres sslmode=disable"
  timeout 60 "$dir/pgbench" --dsn "$dsn" setup
  "$pgbin/psql" -X -At "$dsn" -c 'SELECT version()' \
    -c "SELECT string_agg(name || '=' || setting || coalesce(unit, ''), ' ' ORDER BY name) FROM pg_settings
        WHERE name IN ('fsync', 'synchronous_commit', 'wal_sync_method', 'full_page_writes', 'shared_buffers',
                       'max_wal_size', 'commit_delay', 'wal_level', 'max_connections')"
fi

ESD_ADDR=
start_esd() {
  rm -rf "$dir/esd-data"
  ESD_ADDR=127.0.0.1:$(free_port)
  ./bin/esd --data-dir "$dir/esd-data" --listen "$ESD_ADDR" --http-listen "127.0.0.1:$(free_port)" --log-level warn &
  esd_pid=$!
  for _ in $(seq 100); do timeout 5 ./bin/esctl --addr "$ESD_ADDR" server info >/dev/null 2>&1 && return; sleep 0.1; done
  echo "esd did not start" >&2
  exit 1
}
stop_esd() { kill -TERM "$esd_pid"; wait "$esd_pid" || true; esd_pid=; }

# run SERVER N WORKLOAD ARGS...: one run, its JSON report kept in $dir/runs.
mkdir -p "$dir/runs"
run() {
  local server=$1 n=$2 workload=$3
  shift 3
  local out rc=0
  out="$dir/runs/$(echo "$workload $*" | tr ' ' _).$server.$n.json"
  if [ "$server" = esd ]; then
    start_esd
    timeout -k 10 $LIMIT ./bin/esctl --addr "$ESD_ADDR" bench "$workload" "$@" -d "$D" -o json >"$out" || rc=$?
    stop_esd
  else
    # PostgreSQL has no streaming appends: its side of a --streaming
    # workload is the same appends, one transaction a call. Nor conflict
    # deltas: its conflicts read the head only, whatever --delta-events
    # asks of esd.
    local args=() skip=0 a
    for a in "$@"; do
      if [ $skip = 1 ]; then skip=0; continue; fi
      case $a in
        --streaming) ;;
        --inflight | --delta-events) skip=1 ;;
        *) args+=("$a") ;;
      esac
    done
    timeout $LIMIT "$dir/pgbench" --dsn "$dsn" setup
    timeout -k 10 $LIMIT "$dir/pgbench" --dsn "$dsn" "$workload" "${args[@]}" -d "$D" -o json >"$out" || rc=$?
  fi
  python3 - "$out" "$server" "$rc" <<'EOF'
import json, sys
path, server, rc = sys.argv[1:]
try:
    r = json.load(open(path))
except ValueError:
    print("  %-10s failed (exit %s), no report" % (server, rc)); sys.exit(0)
c = "successes_per_sec" in r
print("  %-10s %10.0f %s/s  p50 %7.2f ms  p99 %7.2f ms  errors %d%s" % (
    server, r["successes_per_sec"] if c else r["events_per_sec"], "successes" if c else "events",
    r["p50_ms"], r["p99_ms"], r["errors"],
    "  conflicts %.0f/s" % r["conflicts_per_sec"] if c else ""))
EOF
}

workloads=(
  "append -c 64 -s 10000 -b 1"
  "append -c 64 -s 10000 -b 1 --streaming"
  "append -c 1"
  "append -c 16 -b 100"
  "contention -c 64 -k 8"
  "contention -c 64 -k 8 --delta-events -1"
)
if [ -n "${ONLY:-}" ]; then # a regular expression: run only the workloads it matches
  keep=()
  for w in "${workloads[@]}"; do [[ $w =~ $ONLY ]] && keep+=("$w"); done
  workloads=("${keep[@]}")
fi
servers=(esd)
[ -n "$pgbin" ] && servers+=(postgresql)
for w in "${workloads[@]}"; do
  if [ -n "$pgbin" ]; then echo "== $w ($D each, esd and PostgreSQL taking turns)"; else echo "== $w ($D each, esd only)"; fi
  for n in $(seq "$REPEAT"); do
    for s in "${servers[@]}"; do
      # shellcheck disable=SC2086 # $w is the workload and its flags
      run "$s" "$n" $w
    done
  done
done

echo "== medians of $REPEAT runs (events/s; successes/s for contention)"
python3 - "$dir/runs" "${workloads[@]}" <<'EOF'
import glob, json, os, statistics, sys
runs, workloads = sys.argv[1], sys.argv[2:]
def median(w, server):
    vals = []
    for p in glob.glob(os.path.join(runs, w.replace(" ", "_") + "." + server + ".*.json")):
        try:
            r = json.load(open(p))
        except ValueError:
            continue
        vals.append(r["successes_per_sec"] if "successes_per_sec" in r else r["events_per_sec"])
    return statistics.median(vals) if vals else None
fmt = "%-40s %12s %12s %16s"
print(fmt % ("workload", "esd", "PostgreSQL", "esd/PostgreSQL"))
for w in workloads:
    e, p = median(w, "esd"), median(w, "postgresql")
    print(fmt % (w, "-" if e is None else "%.0f" % e, "-" if p is None else "%.0f" % p,
                 "%.2f" % (e / p) if e and p else "-"))
EOF
