"""A JWQL-shaped Celery app (jwql/shared_tasks/shared_tasks.py in miniature): the broker comes
from a JSON config file (`redis_host`, `redis_port`), the app sets JWQL's five settings, and
a task is guarded by JWQL's `only_one` decorator over redis-py locks. Served unchanged by
`celeriac -A shared_tasks worker -D -E -ldebug -Ofair -c1 --max-tasks-per-child=1
--prefetch-multiplier 1` run in this module's directory, with no `-b`."""
import gc
import json
import os
import time
from functools import wraps

import redis
from celery import Celery
from celery.signals import task_postrun


def get_config():
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "config.json")) as f:
        return json.load(f)


REDIS_HOST = get_config()["redis_host"]
REDIS_PORT = get_config()["redis_port"]
REDIS_URL = "redis://{}:{}".format(REDIS_HOST, REDIS_PORT)
REDIS_CLIENT = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)

celery_app = Celery("shared_tasks", broker=REDIS_URL, backend=REDIS_URL)
celery_app.conf.update(worker_max_tasks_per_child=1)
celery_app.conf.update(worker_prefetch_multiplier=1)
celery_app.conf.update(task_acks_late=True)
celery_app.conf.update(worker_concurrency=1)
celery_app.conf.broker_transport_options = {"visibility_timeout": 14400}


def only_one(function=None, key="", timeout=None):
    """Run the function only if no other process holds the lock `key` (JWQL's decorator)."""
    def _dec(run_func):
        @wraps(run_func)
        def _caller(*args, **kwargs):
            ret_value = None
            have_lock = False
            lock = REDIS_CLIENT.lock(key, timeout=timeout)
            try:
                have_lock = lock.acquire(blocking=False)
                if have_lock:
                    ret_value = run_func(*args, **kwargs)
            finally:
                if have_lock:
                    lock.release()
            return ret_value
        return _caller
    return _dec(function) if function is not None else _dec


@task_postrun.connect
def collect_after_task(**kwargs):
    gc.collect()


@celery_app.task(name="jwql.shared_tasks.shared_tasks.run_calwebb_detector1")
def run_calwebb_detector1(input_file_name, short_name, ext_or_exts, instrument, step_args={}):
    if "fail" in input_file_name:
        raise ValueError("Pipeline Failed")
    time.sleep(0.2)
    return [f"{short_name}_{ext}.fits" for ext in ext_or_exts]


@celery_app.task(name="jwql.shared_tasks.shared_tasks.calwebb_detector1_save_jump")
def calwebb_detector1_save_jump(input_file_name, ramp_fit=True, save_fitopt=True):
    return (f"{input_file_name}_jump.fits", f"{input_file_name}_fitopt.fits", None)


@celery_app.task(name="jwql.shared_tasks.shared_tasks.guarded")
def guarded(key, seconds):
    @only_one(key=key, timeout=30)
    def body():
        time.sleep(seconds)
        return os.getpid()
    return body()
