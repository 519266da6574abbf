#!/usr/bin/env bash
# S6 benchmark: uncontended acquire+release cycles per second of one lock on one
# connection, celeriac (`locks`, release build, blocking API like redis-py's; the async API
# for reference) vs redis-py (in .venv), in one run, next to the two-round-trip limit
# measured with redis-benchmark on the same server:
#   limit = 1 / (1/rps(SET k v PX 30000 NX) + 1/rps(EVAL compare-and-delete))   at -c 1
# i.e. the best any client can do when it waits for the acquire's answer and then for the
# release's, and the same two commands sent by a bare synchronous redis-rs connection
# (`lockbench floor`), which on a loaded VM can beat redis-benchmark's own rate at -c 1.
#
# celeriac is measured two ways:
#   drop     the guard goes out of scope (`{ let _g = lock.acquire()?; ... }`): the release
#            is written at once and its reply read with the next command's, so a cycle is
#            one round trip; Redis runs the release before that next command
#   release  `guard.release()?`, which waits for the reply (and returns redis-py's
#            not-owned error): two round trips, bounded by the limit above
# redis-py is measured as `lock.acquire(); lock.release()`, which is what `with lock:` does.
#
# Rounds alternate between the measurements so background load hits them alike; medians
# are reported, and also the median of the per-round ratios, which is steadier when the
# machine's load drifts during the run (a shared 2-vCPU VM varies by 2x over minutes).
# Starts its own redis-server on a free loopback port, stops it.
#
# usage: scripts/bench-locks.sh [ROUNDS=9] [SECONDS_PER_ROUND=2]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ROUNDS=${1:-9}
SECS=${2:-2}
PY=${CELERIAC_PYTHON:-.venv/bin/python}
[ -x "$PY" ] || { echo "no Python venv at $PY: run scripts/test.sh first (it creates .venv)" >&2; exit 1; }
command -v redis-benchmark >/dev/null || { echo "redis-benchmark not found: apt-get install redis-tools" >&2; exit 1; }

step "building lockbench (release)"
cargo build --quiet --locked --release -p locks --example lockbench
target=${CARGO_TARGET_DIR:-target}
BENCH="$target/release/examples/lockbench"

dir=$(mktemp -d)
port=$(start_private_redis "$dir")
cleanup() { stop_private_redis "$dir"; rm -rf "$dir"; }
trap cleanup EXIT
url="redis://127.0.0.1:$port/0"
release_lua="if redis.call('get',KEYS[1]) == ARGV[1] then return redis.call('del',KEYS[1]) else return 0 end"

rb_rps() { # redis-benchmark at one connection; prints requests/s
  redis-benchmark -p "$port" -c 1 -n "$1" --csv "${@:2}" 2>/dev/null \
    | python3 -c 'import csv, sys; print(list(csv.reader(sys.stdin))[-1][1])'
}

n_set=$(python3 -c "print(int(15000 * $SECS))") n_rel=$(python3 -c "print(int(15000 * $SECS))")
drop_=() rel=() adrop=() arel=() py=() limit=() floor=()
per_sec() { sed 's/.*"per_sec": *\([0-9.]*\).*/\1/'; }
for i in $(seq 1 "$ROUNDS"); do
  d=$("$BENCH" bench "$url" "$SECS" blocking drop | per_sec)
  r=$("$BENCH" bench "$url" "$SECS" blocking release | per_sec)
  ad=$("$BENCH" bench "$url" "$SECS" async drop | per_sec)
  ar=$("$BENCH" bench "$url" "$SECS" async release | per_sec)
  f=$("$BENCH" floor "$url" "$SECS" | per_sec)
  p=$("$PY" tests/py/locks_bench.py "$url" "$SECS" | per_sec)
  # redis-benchmark takes a request count, not a duration: size each run from the previous
  # round's rate so that it, too, lasts about SECONDS. (A short run measures only the first
  # fraction of a second, which on this VM is up to 2x faster than what follows.)
  set_rps=$(rb_rps "$n_set" SET lockbench-rb tok PX 30000 NX)
  rel_rps=$(rb_rps "$n_rel" EVAL "$release_lua" 1 lockbench-rb tok)
  n_set=$(python3 -c "print(max(2000, int($set_rps * $SECS)))")
  n_rel=$(python3 -c "print(max(2000, int($rel_rps * $SECS)))")
  l=$(python3 -c "print(round(1 / (1 / $set_rps + 1 / $rel_rps), 1))")
  printf 'round %d: celeriac drop %s/s, release() %s/s (async %s, %s)  redis-py %s/s  two-RTT limit %s/s (SET NX PX %s/s, release %s/s)  bare client %s/s\n' \
    "$i" "$d" "$r" "$ad" "$ar" "$p" "$l" "$set_rps" "$rel_rps" "$f"
  drop_+=("$d") rel+=("$r") adrop+=("$ad") arel+=("$ar") py+=("$p") limit+=("$l") floor+=("$f")
done

# Contended handoff: holder releases, a waiter in a blocking acquire (own connection) takes
# over; celeriac waiters wake on the release's pub/sub message, redis-py's poll every 0.1 s.
HANDOFFS=$(( ROUNDS * 10 > 30 ? ROUNDS * 10 : 30 ))
h_rust=$("$BENCH" handoff "$url" "$HANDOFFS")
h_py=$("$PY" tests/py/locks_bench.py handoff "$url" "$HANDOFFS")
printf 'handoff: celeriac %s  redis-py %s\n' "$h_rust" "$h_py"

python3 - "${drop_[*]}" "${rel[*]}" "${adrop[*]}" "${arel[*]}" "${py[*]}" "${limit[*]}" "${floor[*]}" "$h_rust" "$h_py" <<'PYEOF'
import json, statistics as st, sys
d, r, ad, ar, py, limit, floor = ([float(x) for x in a.split()] for a in sys.argv[1:8])
h_rust, h_py = json.loads(sys.argv[8]), json.loads(sys.argv[9])
m = st.median
def per_round(a, b):
    return m(x / y for x, y in zip(a, b))
print()
print(f"median cycles/s   celeriac: guard dropped {m(d):,.0f}   release() {m(r):,.0f}"
      f"   (async API: {m(ad):,.0f} / {m(ar):,.0f})")
print(f"                  redis-py {m(py):,.0f}   two-round-trip limit {m(limit):,.0f}"
      f"   bare two-command client {m(floor):,.0f}")
print(f"celeriac / redis-py   dropped {m(d) / m(py):.2f}x   release() {m(r) / m(py):.2f}x   (target >= 2x)")
print(f"celeriac / limit      dropped {100 * m(d) / m(limit):.0f}%   release() {100 * m(r) / m(limit):.0f}%   (target >= 80%)")
print(f"redis-py / limit      {100 * m(py) / m(limit):.0f}%")
print(f"per-round ratio medians   dropped/redis-py {per_round(d, py):.2f}x   release()/redis-py {per_round(r, py):.2f}x"
      f"   release()/limit {100 * per_round(r, limit):.0f}%   release()/bare client {100 * per_round(r, floor):.0f}%")
print(f"contended handoff (release to waiter holding), n={h_rust['n']}:   celeriac p50 {h_rust['p50_ms']:.2f} ms"
      f" p99 {h_rust['p99_ms']:.2f} ms   redis-py p50 {h_py['p50_ms']:.1f} ms p99 {h_py['p99_ms']:.1f} ms"
      f"   ({h_py['p50_ms'] / h_rust['p50_ms']:.0f}x at p50)")
print("JSON " + json.dumps({
    "handoff_celeriac_p50_ms": h_rust["p50_ms"], "handoff_celeriac_p99_ms": h_rust["p99_ms"],
    "handoff_redis_py_p50_ms": h_py["p50_ms"], "handoff_redis_py_p99_ms": h_py["p99_ms"],
    "celeriac_drop": m(d), "celeriac_release": m(r), "celeriac_async_drop": m(ad),
    "celeriac_async_release": m(ar), "redis_py": m(py), "two_rtt_limit": m(limit),
    "bare_client": m(floor), "rounds": len(d),
}))
PYEOF
