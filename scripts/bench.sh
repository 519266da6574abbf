#!/usr/bin/env bash
# Benchmark: celeriac against Python Celery (pinned in scripts/requirements.txt), side by
# side in one run on one private redis-server, with ratios. Not a test: nothing here fails
# on a slow figure; it reports.
#
#   scripts/bench.sh                  all scenarios (S1..S10), 3 runs each, medians (~20 min)
#   scripts/bench.sh --quick          smaller N, 1 run each unless --runs (~3 min)
#   scripts/bench.sh S2 S4            only these scenarios
#   scripts/bench.sh --runs 5 --n S2=10000 S2
#   scripts/bench.sh --profile --runs 1 S2 S3   also sample the celeriac workers with perf
#                                     (installs linux-perf if missing); flat reports by self
#                                     time in target/bench/profile/*.txt. The profiler costs
#                                     a few percent: quote figures from runs without it.
#
# Scenarios (see bench/driver.py for how each figure is taken):
#   S1 JWQL mode: -c1 --max-tasks-per-child=1 --prefetch-multiplier 1 --acks-late, 500 add
#      tasks (Python Celery: at most 20 tasks or 60 s, one run; it manages < 1 task/s)
#   S2 single slot in-process: -P solo -c1 --prefetch-multiplier 1, 20,000 add tasks
#   S3 saturation, best flags for each, 100,000 add tasks pushed by 4 producer processes
#   S4 latency: idle worker, one task at a time, submit-to-start and submit-to-result, 2,000
#   S5 footprint: idle RSS of the whole worker process tree, launch to first result
#   S6 locks: scripts/bench-locks.sh (celeriac locks vs redis-py), when it is there
#   S7 Python tasks, JWQL mode: the same Python app (tests/py/apps/pytasks.py) served by
#      `celeriac -A pytasks worker` and `celery -A pytasks worker`, 1,000 add
#   S8 Python tasks, kept children (-c1, the app's task_acks_late=True), 5,000 add
#   S9 a Python app whose import takes 1.5 s: launch to first result, and the JWQL-mode rate
#   S10 footprint of the JWQL line serving the Python app (zygote and standbys), RSS and PSS
#
# Prints a table (medians; ratio = celeriac/Celery per column) and writes
# target/bench/bench-<time>.{json,svg} plus latest.{json,svg,txt}; worker logs in
# target/bench/logs/. Only 127.0.0.1 is used; everything started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

driver_args=()
runs=""
quick=""
profile=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --quick) quick=1; driver_args+=(--quick) ;;
    --profile) profile=1; driver_args+=(--profile) ;;
    --runs) runs=${2:?--runs needs a number}; shift ;;
    --runs=*) runs=${1#*=} ;;
    --n) driver_args+=(--n "${2:?--n needs S=COUNT}"); shift ;;
    --n=*) driver_args+=(--n "${1#*=}") ;;
    [sS][1-9]|[sS]10) driver_args+=("$(printf '%s' "$1" | tr s S)") ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -z "$runs" ] && [ -n "$quick" ] && runs=1
[ -n "$runs" ] && driver_args+=(--runs "$runs")

# Long steps run in their own session, in the background, and are waited for: a signal then
# reaches the trap at once, and the trap kills the step's whole process group.
child=""
run_waited() {
  setsid "$@" &
  child=$!
  wait "$child"
  child=""
}

dir=$(mktemp -d)
driver=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  [ -n "$child" ] && kill -KILL -- "-$child" 2>/dev/null || true
  if [ -n "$driver" ] && kill -0 "$driver" 2>/dev/null; then
    kill -TERM "$driver" 2>/dev/null || true     # the driver stops its workers itself
    for _ in $(seq 1 100); do kill -0 "$driver" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$driver" 2>/dev/null || true
  fi
  # Whatever the driver could not stop: every session it started has its pid listed here.
  if [ -f "$dir/pids" ]; then
    while read -r pid; do
      [ -n "$pid" ] && kill -KILL -- "-$pid" "$pid" 2>/dev/null || true
    done < "$dir/pids"
  fi
  stop_private_redis "$dir"
  rm -rf "$dir"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

ensure_redis_server
ensure_venv
if [ -n "$profile" ] && ! command -v perf >/dev/null; then
  step "installing perf (--profile)"
  apt_install linux-perf
fi
PY="$PWD/.venv/bin/python"

step "building celeriac (release)"
run_waited cargo build --quiet --locked --release -p celeriac-worker --bin celeriac
target=${CARGO_TARGET_DIR:-target}
BIN="$(cd "$target/release" && pwd)/celeriac"
OUT="$(mkdir -p "$target/bench" && cd "$target/bench" && pwd)"

port=$(start_private_redis "$dir")
step "private redis-server on 127.0.0.1:$port; results go to $OUT"

# In the background and waited for, so a signal reaches the trap while the driver runs.
"$PY" bench/driver.py --port "$port" --celeriac "$BIN" --out "$OUT" --pids "$dir/pids" \
  ${driver_args[@]+"${driver_args[@]}"} &
driver=$!
wait "$driver"
