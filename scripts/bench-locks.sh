#!/usr/bin/env bash
# S6 benchmark: uncontended acquire+release cycles per second of one lock on one
# connection, celeriac (`locks`, release build; blocking API like redis-py's, and the async
# API for reference) vs redis-py (in .venv), in one run, next to
# the two-round-trip limit measured with redis-benchmark on the same server:
#   limit = 1 / (1/rps(SET k v PX 30000 NX) + 1/rps(EVAL compare-and-delete))   at -c 1
# i.e. the best any client can do with one acquire and one release per cycle, and the same
# two commands sent by a bare synchronous redis-rs connection (`lockbench floor`), which on
# a loaded VM can beat redis-benchmark's own per-request rate at -c 1.
#
# Rounds alternate between the measurements so background load hits them alike; medians
# are reported, and also the median of the per-round ratios, which is steadier when the
# machine's load drifts during the run (a shared 2-vCPU VM varies by 2x over minutes). Starts its own redis-server on a free loopback port, stops it.
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

rust=() rust_async=() py=() limit=() floor=()
for i in $(seq 1 "$ROUNDS"); do
  r=$("$BENCH" bench "$url" "$SECS" blocking | sed 's/.*"per_sec":\([0-9.]*\).*/\1/')
  a=$("$BENCH" bench "$url" "$SECS" async | sed 's/.*"per_sec":\([0-9.]*\).*/\1/')
  f=$("$BENCH" floor "$url" "$SECS" | sed 's/.*"per_sec":\([0-9.]*\).*/\1/')
  p=$("$PY" tests/py/locks_bench.py "$url" "$SECS" | sed 's/.*"per_sec": \([0-9.]*\).*/\1/')
  n=$(python3 -c "print(int(20000 * $SECS / 3))")
  set_rps=$(rb_rps "$n" SET lockbench-rb tok PX 30000 NX)
  rel_rps=$(rb_rps "$n" EVAL "$release_lua" 1 lockbench-rb tok)
  l=$(python3 -c "print(round(1 / (1 / $set_rps + 1 / $rel_rps), 1))")
  printf 'round %d: celeriac %s/s (async %s/s)  redis-py %s/s  two-RTT limit %s/s (SET NX PX %s/s, release %s/s)  bare client %s/s\n' \
    "$i" "$r" "$a" "$p" "$l" "$set_rps" "$rel_rps" "$f"
  rust+=("$r") rust_async+=("$a") py+=("$p") limit+=("$l") floor+=("$f")
done

python3 - "${rust[*]}" "${py[*]}" "${limit[*]}" "${rust_async[*]}" "${floor[*]}" <<'PYEOF'
import statistics, sys
rust, py, limit, asy, floor = ([float(x) for x in a.split()] for a in sys.argv[1:6])
r, p, l = statistics.median(rust), statistics.median(py), statistics.median(limit)
print()
print(f"median cycles/s   celeriac {r:,.0f}   redis-py {p:,.0f}   two-round-trip limit {l:,.0f}")
print(f"                  celeriac async API {statistics.median(asy):,.0f}   bare two-command client {statistics.median(floor):,.0f}")
print(f"celeriac / redis-py       {r / p:.2f}x   (target >= 2x)")
print(f"celeriac / limit          {100 * r / l:.0f}%   (target >= 80%)")
print(f"redis-py / limit          {100 * p / l:.0f}%")
vs_py = statistics.median(a / b for a, b in zip(rust, py))
vs_limit = statistics.median(a / b for a, b in zip(rust, limit))
vs_floor = statistics.median(a / b for a, b in zip(rust, floor))
print(f"per-round ratio medians   celeriac/redis-py {vs_py:.2f}x   celeriac/limit {100 * vs_limit:.0f}%   celeriac/bare client {100 * vs_floor:.0f}%")
PYEOF
