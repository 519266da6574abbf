"""redis-py side of scripts/bench-locks.sh: uncontended acquire+release cycles per second
of one redis-py Lock on one connection, with a TTL (as the celeriac side uses).

usage: python locks_bench.py URL SECONDS   -> one JSON line {"cycles":..,"secs":..,"per_sec":..}
"""

import json
import sys
import time

import redis


def main(url: str, secs: float) -> None:
    r = redis.Redis.from_url(url)
    lock = r.lock("lockbench-py", timeout=30, blocking=False)
    for _ in range(200):  # warm up: connect, load scripts
        lock.acquire()
        lock.release()
    cycles = 0
    start = time.perf_counter()
    until = start + secs
    while time.perf_counter() < until:
        for _ in range(100):
            if not lock.acquire():
                raise SystemExit("uncontended acquire failed")
            lock.release()
        cycles += 100
    el = time.perf_counter() - start
    print(json.dumps({"cycles": cycles, "secs": round(el, 3), "per_sec": round(cycles / el, 1)}))


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
