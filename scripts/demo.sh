#!/usr/bin/env bash
# The main job, end to end: build celeriac, find or start a Redis, start a worker, submit 100
# tasks from Python Celery and 100 from the Rust client, print their results and the
# throughput; then serve a Python Celery app's own tasks (tests/py/apps/pytasks.py) with
# `celeriac -A pytasks worker` and do the same; then stop everything this script started.
#
# Uses the Redis at $CELERY_BROKER_URL when one answers there; otherwise starts a private
# redis-server on a free loopback port (installing Debian's redis-server when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

N=${DEMO_TASKS:-100}
WORKDIR=$(mktemp -d)
WORKER_PID=
PY_WORKER_PID=
cleanup() {
  [ -n "$WORKER_PID" ] && kill -TERM "$WORKER_PID" 2>/dev/null && wait "$WORKER_PID" 2>/dev/null || true
  [ -n "$PY_WORKER_PID" ] && kill -TERM "$PY_WORKER_PID" 2>/dev/null && wait "$PY_WORKER_PID" 2>/dev/null || true
  stop_private_redis "$WORKDIR"
  rm -rf "$WORKDIR"
}
trap cleanup EXIT

step "building celeriac (release)"
cargo build --locked --release -q -p celeriac-worker --bin celeriac
cargo build --locked --release -q -p celeriac --example submit
ensure_venv

ensure_redis_server
if [ -n "${CELERY_BROKER_URL:-}" ] && redis-cli -u "$CELERY_BROKER_URL" ping 2>/dev/null | grep -q PONG; then
  step "using the Redis at $(python3 -c 'import re,sys; print(re.sub(r"//([^@/]*):[^@/]*@", r"//\1:********@", sys.argv[1]))' "$CELERY_BROKER_URL")"
else
  port=$(start_private_redis "$WORKDIR")
  export CELERY_BROKER_URL="redis://127.0.0.1:$port/0"
  step "started a private redis-server on 127.0.0.1:$port"
fi
export CELERY_RESULT_BACKEND=${CELERY_RESULT_BACKEND:-$CELERY_BROKER_URL}

step "starting a celeriac worker (JWQL command line)"
target/release/celeriac -A shared_tasks worker -E -linfo -Ofair -c1 --max-tasks-per-child=1 \
  --prefetch-multiplier 1 --acks-late -n "demo@%h" >"$WORKDIR/worker.log" 2>&1 &
WORKER_PID=$!
for _ in $(seq 1 100); do grep -q "ready." "$WORKDIR/worker.log" && break; sleep 0.05; done
grep -q "ready." "$WORKDIR/worker.log" || { cat "$WORKDIR/worker.log"; echo "worker did not start" >&2; exit 1; }

step "Python Celery client: $N x shared_tasks.add, then .get()"
PYTHONPATH=tests/py .venv/bin/python - "$N" <<'PY'
import sys, time
from shared_tasks import add, fail, pid
n = int(sys.argv[1])
t0 = time.time()
results = [add.delay(i, 1) for i in range(n)]
values = [r.get(timeout=60) for r in results]
dt = time.time() - t0
assert values == [i + 1 for i in range(n)], "wrong results"
for i in (0, 1, 2, n - 1):
    print(f"  python add({i}, 1) = {values[i]}")
try:
    fail.delay("boom").get(timeout=10)
except ValueError as e:
    print(f"  python fail('boom') raised ValueError({e})")
pids = {pid.delay().get(timeout=10) for _ in range(3)}
print(f"  python pid() x3 ran in {len(pids)} different processes (one task per child)")
print(f"python client: {n}/{n} results in {dt:.3f}s ({n / dt:.0f} tasks/s)")
PY

step "Rust client: $N x shared_tasks.add, then get()"
target/release/examples/submit "$N"

step "stopping the worker (warm shutdown)"
kill -TERM "$WORKER_PID"; wait "$WORKER_PID" || true; WORKER_PID=

step "a Python Celery app's own tasks: celeriac -A pytasks worker (JWQL command line), in the app's directory"
(cd tests/py/apps && CELERIAC_PYTHON="$PWD/../../../.venv/bin/python" \
  exec ../../../target/release/celeriac -A pytasks worker -E -linfo -Ofair -c1 \
    --max-tasks-per-child=1 --prefetch-multiplier 1 -n "demo-py@%h") >"$WORKDIR/py-worker.log" 2>&1 &
PY_WORKER_PID=$!
for _ in $(seq 1 200); do grep -q "ready." "$WORKDIR/py-worker.log" && break; sleep 0.05; done
grep -q "ready." "$WORKDIR/py-worker.log" || { cat "$WORKDIR/py-worker.log"; echo "worker did not start" >&2; exit 1; }
grep -m1 "imported the Python app" "$WORKDIR/py-worker.log" | sed 's/^/  /' || true

step "Python Celery client: $N x pytasks.add (a Python task, one forked child each), then .get()"
(cd tests/py/apps && PYTHONPATH=. ../../../.venv/bin/python - "$N") <<'PY'
import sys, time
import pytasks
n = int(sys.argv[1])
t0 = time.time()
results = [pytasks.add.delay(i, 1) for i in range(n)]
values = [r.get(timeout=60) for r in results]
dt = time.time() - t0
assert values == [i + 1 for i in range(n)], "wrong results"
for i in (0, 1, n - 1):
    print(f"  python task add({i}, 1) = {values[i]}")
try:
    pytasks.custom_failure.delay("boom").get(timeout=10)
except pytasks.CustomError as e:
    print(f"  python task custom_failure('boom') raised pytasks.CustomError({e})")
print(f"  python task retrying(2) = {pytasks.retrying.delay(2).get(timeout=20)} (after 2 retries)")
pids = {pytasks.pid.delay().get(timeout=10) for _ in range(3)}
print(f"  python task pid() x3 ran in {len(pids)} different processes (one child per task)")
print(f"python tasks: {n}/{n} results in {dt:.3f}s ({n / dt:.0f} tasks/s)")
PY

step "stopping the Python-app worker (warm shutdown)"
kill -TERM "$PY_WORKER_PID"; wait "$PY_WORKER_PID" || true; PY_WORKER_PID=
echo "done."
