#!/usr/bin/env bash
# Soak test (not part of CI): SOAK_TASKS tasks (default 100,000) across SOAK_WORKERS celeriac
# workers (default 4, release build, --acks-late --lease 3) while workers are SIGKILLed and
# SIGTERMed at random and restarted under the same node name, as systemd would. Then waits
# (bounded) for the queue and `unacked` to drain and prints, from the result backend and the
# executions file, how many tasks were lost, executed more than once, and dead-lettered.
# Exits non-zero on any loss: a task that never ran, or ran without a SUCCESS result.
#
# Every task is `shared_tasks.append_line(path, <task id>, seconds)`: each execution appends
# its own id to one file, so executions are counted exactly.
#
#   scripts/soak.sh                      # 100,000 tasks
#   SOAK_TASKS=5000 scripts/soak.sh      # a quick run
#
# Knobs: SOAK_TASKS, SOAK_WORKERS, SOAK_LEASE (s), SOAK_TASK_SECONDS (per task sleep),
# SOAK_WORKER_ARGS (extra worker flags, default "-c2 --prefetch-multiplier 1"),
# SOAK_CHAOS_MS (max pause between two faults, default 1000), SOAK_KILL_PERCENT (share of
# faults that are SIGKILL rather than SIGTERM, default 60), SOAK_TIMEOUT (s, default
# 300 + SOAK_TASKS / 50), SOAK_KEEP=1 to keep the run directory (logs, executions file).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

N=${SOAK_TASKS:-100000}
WORKERS=${SOAK_WORKERS:-4}
LEASE=${SOAK_LEASE:-3}
TASK_SECONDS=${SOAK_TASK_SECONDS:-0}
read -r -a WORKER_ARGS <<< "${SOAK_WORKER_ARGS:--c2 --prefetch-multiplier 1}"
CHAOS_MS=${SOAK_CHAOS_MS:-1000}
KILL_PERCENT=${SOAK_KILL_PERCENT:-60}
TIMEOUT=${SOAK_TIMEOUT:-$((300 + N / 50))}

ensure_redis_server
ensure_venv
PY="$PWD/.venv/bin/python"

step "building celeriac (release)"
cargo build --release --locked --quiet -p celeriac-worker --bin celeriac
BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/celeriac"

DIR=$(mktemp -d -t celeriac-soak.XXXXXX)
declare -a PIDS=()
PRODUCER=
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ -n "$PRODUCER" ] && kill "$PRODUCER" 2>/dev/null || true
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  stop_private_redis "$DIR"
  if [ "${SOAK_KEEP:-}" = 1 ] || [ "$rc" != 0 ]; then
    echo "run directory kept: $DIR" >&2
  else
    rm -rf "$DIR"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=$(start_private_redis "$DIR")
export CELERY_BROKER_URL="redis://127.0.0.1:$PORT/0"
export CELERY_RESULT_BACKEND="$CELERY_BROKER_URL"
RUNS="$DIR/runs.log"
rcli() { redis-cli -p "$PORT" "$@"; }

start_worker() {
  local i=$1
  "$BIN" worker -n "soak-$i@%h" --acks-late --lease "$LEASE" "${WORKER_ARGS[@]}" -lwarning \
    >>"$DIR/worker-$i.log" 2>&1 &
  PIDS[i]=$!
}

step "redis on port $PORT, $WORKERS workers, $N tasks (run directory $DIR)"
for ((i = 0; i < WORKERS; i++)); do start_worker "$i"; done

# The producer: Python Celery's own send_task, so the messages are exactly what JWQL's
# monitors send. Ids are written before each send, so the accounting knows every task.
"$PY" - "$N" "$RUNS" "$TASK_SECONDS" "$DIR/ids.txt" >"$DIR/producer.log" 2>&1 <<'EOF' &
import sys, time, uuid
sys.path.insert(0, "tests/py")
from shared_tasks import app

n, path, seconds, out = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4]
start = time.time()
with open(out, "w") as ids, app.producer_or_acquire() as producer:
    for i in range(n):
        tid = str(uuid.uuid4())
        ids.write(tid + "\n")
        ids.flush()
        app.send_task("shared_tasks.append_line", args=[path, tid, seconds], task_id=tid,
                      producer=producer)
        if (i + 1) % 10000 == 0:
            print(f"sent {i + 1} in {time.time() - start:.1f}s", flush=True)
print(f"sent {n} in {time.time() - start:.1f}s", flush=True)
EOF
PRODUCER=$!

START=$(date +%s)
DEADLINE=$((START + TIMEOUT))
KILLS=0
TERMS=0
producer_done() { ! kill -0 "$PRODUCER" 2>/dev/null; }
drained() {
  [ "$(rcli LLEN celery)" = 0 ] && [ "$(rcli HLEN unacked)" = 0 ]
}

step "chaos: every 0-${CHAOS_MS} ms a random worker is SIGKILLed or SIGTERMed, then restarted"
last_report=$START
while :; do
  now=$(date +%s)
  if ((now >= DEADLINE)); then
    echo "soak: timed out after ${TIMEOUT}s during the chaos phase" >&2
    break
  fi
  if producer_done && [ "$(rcli LLEN celery)" = 0 ]; then break; fi
  sleep "$(awk -v r="$RANDOM" -v m="$CHAOS_MS" 'BEGIN { printf "%.3f", (r / 32767) * m / 1000 }')"
  i=$((RANDOM % WORKERS))
  pid=${PIDS[i]}
  if ((RANDOM % 100 < KILL_PERCENT)); then
    kill -KILL "$pid" 2>/dev/null || true
    KILLS=$((KILLS + 1))
  else
    kill -TERM "$pid" 2>/dev/null || true
    TERMS=$((TERMS + 1))
    # Warm shutdown finishes the running task; bounded, then SIGKILL.
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "soak: worker $i ignored SIGTERM for 30s; SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
      KILLS=$((KILLS + 1))
    fi
  fi
  wait "$pid" 2>/dev/null || true
  start_worker "$i"
  if ((now - last_report >= 10)); then
    last_report=$now
    printf '  %4ds  queued=%s unacked=%s executions=%s  (SIGKILL %d, SIGTERM %d)\n' \
      $((now - START)) "$(rcli LLEN celery)" "$(rcli HLEN unacked)" \
      "$(wc -l <"$RUNS" 2>/dev/null || echo 0)" "$KILLS" "$TERMS"
  fi
done
CHAOS_END=$(date +%s)
if ! producer_done; then
  echo "soak: the producer did not finish; see $DIR/producer.log" >&2
  exit 1
fi
wait "$PRODUCER" || { echo "soak: the producer failed:" >&2; cat "$DIR/producer.log" >&2; exit 1; }
PRODUCER=

step "chaos over after $((CHAOS_END - START))s; waiting for the queue and unacked to drain"
# A killed worker's messages come back when its lease ($LEASE s) lapses; bounded wait.
quiet=0
while ((quiet < 2)); do
  if (($(date +%s) >= DEADLINE + 120)); then
    echo "soak: queue/unacked did not drain: queued=$(rcli LLEN celery) unacked=$(rcli HLEN unacked)" >&2
    break
  fi
  if drained; then quiet=$((quiet + 1)); else quiet=0; fi
  sleep 1
done
END=$(date +%s)
for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
PIDS=()

step "accounting"
"$PY" - "$PORT" "$DIR/ids.txt" "$RUNS" "$KILLS" "$TERMS" "$((END - START))" "${WORKER_ARGS[*]}" <<'EOF'
import base64, collections, json, sys
import redis

port, ids_file, runs_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
kills, terms, secs, slots = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
r = redis.Redis(port=port)
ids = [l.strip() for l in open(ids_file) if l.strip()]
known = set(ids)
runs = collections.Counter(l.strip() for l in open(runs_file) if l.strip())

dead = set()
for raw in r.lrange("celeriac.dead", 0, -1):
    try:
        env = json.loads(base64.b64decode(json.loads(raw)["payload_b64"]))
        dead.add(env["headers"]["id"])
    except Exception:
        dead.add("<undecodable>")

status = {}
for i in range(0, len(ids), 1000):
    chunk = ids[i:i + 1000]
    for tid, meta in zip(chunk, r.mget(["celery-task-meta-" + t for t in chunk])):
        status[tid] = json.loads(meta)["status"] if meta else None

never_ran = [t for t in ids if runs[t] == 0 and t not in dead]
no_result = [t for t in ids if runs[t] > 0 and status[t] != "SUCCESS"]
twice = [t for t in ids if runs[t] > 1]
extra = sum(runs[t] - 1 for t in twice)
strangers = [t for t in runs if t not in known]
lost = len(never_ran) + len(no_result)
# Only a task running when its worker was SIGKILLed may run again: at most one per
# concurrency slot per kill.
conc = 2
parts = slots.split()
for j, a in enumerate(parts):
    if a.startswith("-c") and len(a) > 2:
        conc = int(a[2:])
    elif a in ("-c", "--concurrency") and j + 1 < len(parts):
        conc = int(parts[j + 1])

print(f"submitted:                 {len(ids)}")
print(f"faults injected:           {kills} SIGKILL, {terms} SIGTERM (workers restarted each time)")
print(f"elapsed:                   {secs}s ({len(ids) / max(secs, 1):.0f} tasks/s including chaos)")
print(f"executed exactly once:     {sum(1 for t in ids if runs[t] == 1)}")
print(f"executed more than once:   {len(twice)} ({extra} extra executions; bound {kills * conc} = SIGKILLs x concurrency)")
print(f"dead-lettered:             {len(dead)}")
print(f"lost (never ran):          {len(never_ran)}")
print(f"lost (ran, no SUCCESS):    {len(no_result)}")
print(f"left in queue / unacked:   {r.llen('celery')} / {r.hlen('unacked')}")
if strangers:
    print(f"executions of unknown ids: {len(strangers)}")
for t in (never_ran + no_result)[:10]:
    print(f"  lost: {t} runs={runs[t]} status={status[t]}")
if len(twice) > kills * conc:
    print("WARNING: more duplicates than SIGKILLs could explain")
sys.exit(1 if lost or strangers else 0)
EOF
