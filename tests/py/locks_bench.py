"""redis-py side of scripts/bench-locks.sh: uncontended acquire+release cycles per second
of one redis-py Lock on one connection, with a TTL (as the celeriac side uses).

usage: python locks_bench.py URL SECONDS   -> one JSON line {"cycles":..,"secs":..,"per_sec":..}
       python locks_bench.py handoff URL N -> contended handoff latency, one JSON line
                                              {"n":..,"p50_ms":..,"p99_ms":..}: one thread holds
                                              the lock 20-120 ms while another waits in a blocking
                                              acquire (own connection, redis-py's default
                                              0.1 s polling); time from the holder's release()
                                              to the waiter's acquire() returning
"""

import json
import queue
import sys
import threading
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


def handoff(url: str, n: int) -> None:
    name = "lockbench-handoff-py"
    go: "queue.Queue[bool]" = queue.Queue()
    got: "queue.Queue[float]" = queue.Queue()

    def waiter() -> None:
        lock = redis.Redis.from_url(url).lock(name, timeout=30, blocking_timeout=10)
        while go.get():
            if not lock.acquire():
                raise SystemExit("not handed over within 10 s")
            got.put(time.perf_counter())
            lock.release()

    t = threading.Thread(target=waiter)
    t.start()
    lock = redis.Redis.from_url(url).lock(name, timeout=30, blocking_timeout=10)
    lat = []
    for i in range(n + 5):
        lock.acquire()
        go.put(True)
        # Let the waiter make its first attempt and start waiting; hold 20-120 ms, varied
        # (same sequence as lockbench) so the release lands at every phase of the polling.
        time.sleep((20 + (i * 37) % 100) / 1000)
        released = time.perf_counter()
        lock.release()
        t1 = got.get(timeout=15)
        if i >= 5:
            lat.append((t1 - released) * 1000)
    go.put(False)
    t.join()
    lat.sort()
    q = lambda p: lat[round((len(lat) - 1) * p)]  # noqa: E731
    print(json.dumps({"n": n, "p50_ms": round(q(0.5), 3), "p99_ms": round(q(0.99), 3)}))


if __name__ == "__main__":
    if sys.argv[1] == "handoff":
        handoff(sys.argv[2], int(sys.argv[3]))
    else:
        main(sys.argv[1], float(sys.argv[2]))
