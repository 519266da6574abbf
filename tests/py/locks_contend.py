"""Contention worker for the locks tests: the Python twin of `lockbench contend`.

N acquisitions of one redis-py lock; inside each, a deliberately non-atomic GET/SET
increment of NAME:counter, and an INCR/DECR of NAME:inside whose value on entry must be 1
(anything else means two holders overlapped, counted in NAME:overlaps).

usage: python -m locks_contend URL NAME N
"""

import sys

import redis


def main(url: str, name: str, n: int) -> None:
    r = redis.Redis.from_url(url)
    # Same TTL as the Rust side; 1 ms polling so the test measures exclusion, not sleeps.
    lock = r.lock(name, timeout=10, sleep=0.001, blocking_timeout=120)
    counter, inside, overlaps = f"{name}:counter", f"{name}:inside", f"{name}:overlaps"
    for _ in range(n):
        if not lock.acquire():
            raise SystemExit("not acquired within 120 s")
        try:
            if r.incr(inside) != 1:
                r.incr(overlaps)
            v = int(r.get(counter) or 0)
            r.set(counter, v + 1)
            r.decr(inside)
        finally:
            lock.release()
    print(f"done {n}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
