"""A Celery app whose import takes 1.5 s, like an app that imports a heavy pipeline at start
(bench S9): a worker that imports it once per process pays that once, not per task."""
import time

from celery import Celery

time.sleep(1.5)

app = Celery("slow_app")
app.conf.task_acks_late = True


@app.task(name="slow_app.add")
def add(x, y):
    return x + y
