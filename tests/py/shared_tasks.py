"""The Python twin of celeriac's `shared_tasks` crate.

Monitors import this module to send tasks (`add.delay(2, 3)`), and a Python Celery worker
can serve it (`celery -A shared_tasks worker`), so tests can put Python and celeriac on
either end of the same Redis. Configuration comes from the environment:
CELERY_BROKER_URL, CELERY_RESULT_BACKEND, CELERIAC_ACKS_LATE, CELERIAC_VISIBILITY_TIMEOUT.
"""
import os
import time

from celery import Celery

BROKER = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
BACKEND = os.environ.get("CELERY_RESULT_BACKEND", BROKER)

app = Celery("shared_tasks", broker=BROKER, backend=BACKEND)
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
if os.environ.get("CELERIAC_ACKS_LATE"):
    app.conf.task_acks_late = True
if os.environ.get("CELERIAC_VISIBILITY_TIMEOUT"):
    app.conf.broker_transport_options = {
        "visibility_timeout": float(os.environ["CELERIAC_VISIBILITY_TIMEOUT"])
    }
if os.environ.get("CELERIAC_RESULT_EXTENDED"):
    app.conf.result_extended = True


@app.task(name="shared_tasks.add")
def add(x, y):
    return x + y


@app.task(name="shared_tasks.echo")
def echo(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs}


@app.task(name="shared_tasks.fail")
def fail(message):
    raise ValueError(message)


@app.task(name="shared_tasks.sleep")
def sleep(seconds):
    time.sleep(seconds)
    return seconds


@app.task(name="shared_tasks.pid")
def pid():
    return os.getpid()


@app.task(name="shared_tasks.crash")
def crash():
    os.abort()


@app.task(name="shared_tasks.alloc")
def alloc(mib):
    block = bytearray(int(mib * 1024 * 1024))
    for i in range(0, len(block), 4096):
        block[i] = 1
    globals().setdefault("_leak", []).append(block)
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@app.task(name="shared_tasks.retry_until", bind=True, max_retries=None)
def retry_until(self, n):
    if self.request.retries < n:
        raise self.retry(exc=KeyError("again"), countdown=0.1, max_retries=n)
    return self.request.retries


@app.task(name="shared_tasks.progress", bind=True)
def progress(self, steps, seconds=0.05):
    for i in range(1, steps + 1):
        time.sleep(seconds)
        self.update_state(state="PROGRESS", meta={"current": i, "total": steps})
    return steps


@app.task(name="shared_tasks.spin")
def spin(seconds):
    end = time.time() + seconds
    while time.time() < end:
        pass
    return seconds


@app.task(name="shared_tasks.nope")
def nope():
    """Registered only in Python: a celeriac worker answers NotRegistered."""
    return None


@app.task(name="shared_tasks.append_line")
def append_line(path, line, seconds=0):
    if seconds:
        time.sleep(seconds)
    with open(path, "a") as f:
        f.write(line + "\n")
    return line


@app.task(name="shared_tasks.locked_sleep")
def locked_sleep(key, seconds):
    """Sleep under the redis-py lock `key`, as JWQL's only_one does; "skipped" when busy."""
    import redis

    lock = redis.Redis.from_url(BROKER).lock(key, timeout=30)
    if not lock.acquire(blocking=False):
        return "skipped"
    try:
        time.sleep(seconds)
        return "ran"
    finally:
        lock.release()
