"""A Celery app with a task named like one of celeriac's built-in Rust tasks."""
from celery import Celery

app = Celery("clash_app")


@app.task(name="shared_tasks.add")
def add(x, y):
    return x + y
