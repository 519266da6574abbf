"""The client side of the Python-task differential test: send one task for each way a task
can end, wait for each, and print every stored result meta (as Redis holds it) as JSON, with
ids, dates and host names replaced, so two runs — one served by a Python Celery worker, one
by celeriac — can be compared field by field.

usage: python pytasks_client.py   (broker/backend from CELERY_BROKER_URL/_RESULT_BACKEND)
"""
import json
import re
import sys
import time

import redis
from celery import chord

import pytasks

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def normalized(value):
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in ("date_done", "hostname", "worker"):
                v = "<" + k + ">"
            out[k] = normalized(v)
        return out
    if isinstance(value, list):
        return [normalized(v) for v in value]
    if isinstance(value, str):
        return UUID.sub("<uuid>", value)
    return value


def meta(client, task_id):
    raw = client.get(f"celery-task-meta-{task_id}")
    return json.loads(raw) if raw is not None else None


def main():
    app = pytasks.app
    client = redis.Redis.from_url(app.conf.result_backend)
    timeout = 30
    sent = {
        "add": pytasks.add.delay(2, 3),
        "echo_kwargs": pytasks.echo.apply_async((1, "two"), {"three": [3], "four": {"x": None}}),
        "whoami": pytasks.whoami.apply_async(("tag",), priority=5),
        "retrying": pytasks.retrying.delay(2),
        "retry_exhausted": pytasks.retrying.delay(9),
        "progress": pytasks.progress.delay(3),
        "custom_failure": pytasks.custom_failure.delay("boom"),
        "key_error": pytasks.key_error.delay(),
        "type_error": app.send_task("pytasks.add", (1,)),
        "soft_catch": pytasks.soft_catch.delay(5),
        "ignored": pytasks.ignored.delay(),
        "rejected": pytasks.rejected.delay(),
        "unencodable": pytasks.unencodable.delay(),
        "shout": pytasks.shout.delay("hello"),
        "chord": chord([pytasks.add.s(1, 1), pytasks.add.s(2, 2)])(pytasks.tsum.s()),
    }
    out = {}
    for name, result in sent.items():
        deadline = time.time() + timeout
        if name == "ignored":
            # Nothing is stored: give the worker time to have run it, then read.
            time.sleep(1.0)
        else:
            while time.time() < deadline:
                m = meta(client, result.id)
                if m is not None and m["status"] in ("SUCCESS", "FAILURE", "REVOKED"):
                    break
                time.sleep(0.02)
        out[name] = normalized(meta(client, result.id))
    if "chord" in sent:
        parents = sent["chord"].parent
        out["chord_header"] = [normalized(meta(client, r.id)) for r in parents.results]
    json.dump(out, sys.stdout, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
