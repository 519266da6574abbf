"""A Celery app whose Python tasks celeriac serves unchanged (`celeriac -A pytasks worker`)
and Python Celery serves too, for differential tests: one task per way a task can end."""
import os
import signal
import subprocess
import sys
import time

from celery import Celery
from celery.exceptions import Ignore, Reject, SoftTimeLimitExceeded

# Broker and backend come from $CELERY_BROKER_URL / $CELERY_RESULT_BACKEND, which Celery
# reads before the app's own settings.
app = Celery("pytasks")
app.conf.update(
    task_acks_late=True,
    broker_transport_options={"visibility_timeout": 3600},
)


class CustomError(Exception):
    """An app-defined exception: its class must come back to the client."""


@app.task(name="pytasks.add")
def add(x, y):
    return x + y


@app.task(name="pytasks.echo")
def echo(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs}


@app.task(bind=True, name="pytasks.whoami")
def whoami(self, tag=None):
    r = self.request
    return {
        "id": r.id, "task": r.task, "args": list(r.args or []), "kwargs": r.kwargs,
        "retries": r.retries, "hostname": r.hostname, "delivery_info": r.delivery_info,
        "parent_id": r.parent_id, "root_id": r.root_id, "group": r.group,
        "correlation_id": r.correlation_id, "reply_to": bool(r.reply_to),
        "called_directly": r.called_directly, "eta": r.eta, "expires": r.expires,
        "is_eager": r.is_eager, "tag": tag,
    }


@app.task(bind=True, name="pytasks.retrying", max_retries=3, default_retry_delay=0)
def retrying(self, succeed_at=2):
    if self.request.retries < succeed_at:
        raise self.retry(countdown=0.1, exc=ValueError(f"try {self.request.retries}"))
    return self.request.retries


@app.task(bind=True, name="pytasks.progress")
def progress(self, steps=3):
    for i in range(steps):
        self.update_state(state="PROGRESS", meta={"done": i + 1, "of": steps})
    return steps


@app.task(name="pytasks.custom_failure")
def custom_failure(msg):
    raise CustomError(msg)


@app.task(name="pytasks.key_error")
def key_error():
    return {}["missing"]


@app.task(name="pytasks.soft_catch", soft_time_limit=0.5)
def soft_catch(seconds=5):
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        return "caught"
    return "not interrupted"


@app.task(name="pytasks.sleep")
def sleep(seconds):
    time.sleep(seconds)
    return seconds


@app.task(name="pytasks.crash")
def crash(how="kill"):
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "exit":
        os._exit(3)
    elif how == "segv":
        import ctypes
        ctypes.string_at(0)
    return "survived"


@app.task(name="pytasks.spawn")
def spawn(seconds, pidfile):
    """Starts a subprocess that outlives the task unless the task's process group dies."""
    p = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])
    with open(pidfile, "w") as f:
        f.write(str(p.pid))
    p.wait()
    return "done"


@app.task(name="pytasks.shout")
def shout(text):
    print(f"task says: {text}")
    print(f"task warns: {text}", file=sys.stderr)
    return len(text)


@app.task(name="pytasks.ignored")
def ignored():
    raise Ignore()


@app.task(name="pytasks.rejected")
def rejected():
    raise Reject("no thanks", requeue=False)


@app.task(name="pytasks.unencodable")
def unencodable():
    return object()


@app.task(name="pytasks.tsum")
def tsum(values):
    return sum(values)


@app.task(name="pytasks.hog")
def hog(mib):
    """Allocate and touch `mib` MiB, for the OOM killer to stop."""
    chunks = []
    for _ in range(mib):
        chunk = bytearray(1 << 20)
        chunk[::4096] = b"\x01" * len(chunk[::4096])
        chunks.append(chunk)
    return len(chunks)


@app.task(name="pytasks.pid")
def pid():
    return os.getpid()


# Which copy of this module serves (a pool-restart test rewrites it).
CODE_VERSION = 1


@app.task(name="pytasks.code_version")
def code_version():
    return CODE_VERSION
