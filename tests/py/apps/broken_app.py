"""A Celery app whose import fails: the worker must say why and consume nothing."""
from celery import Celery

app = Celery("broken_app")
RATIO = 1 / 0
