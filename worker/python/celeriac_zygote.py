# celeriac's Python side: the zygote that serves a Celery app's own Python tasks.
#
# The `celeriac` worker starts this file (embedded in its binary, run with `python -c`) in
# the app's directory and virtualenv. It imports the app once, as `celery -A APP worker`
# does, builds the tracers as a prefork pool child does (`process_initializer`), reports the
# app's configuration and tasks, and then, single-threaded, forks one child per task (or per
# N tasks with --max-tasks-per-child N) from that pre-imported interpreter. A child runs the
# task through Celery's own tracer, so results, retries, update_state, signals and canvas
# steps are Celery's own bytes; claim, lease, ack, prefetch, events, remote control, revoke
# and time limits stay in the Rust worker.
#
# Wire to the Rust worker: one JSON object per line.
#   stdin  (worker -> zygote): {"run": job, "envelope": {...kombu envelope...}}
#                              {"signal": job, "sig": N}      (to the child's process group)
#   fd PROTO (zygote -> worker): {"ready": {...}} | {"fatal": "...", "traceback": "..."}
#                              {"started": job, "pid": P}
#                              {"done": job, "report": {...}, "exiting": bool}
#                              {"lost": job, "exitcode": N|null, "signal": N|null}
# The zygote's own fd 1 points at fd 2 (the worker's log), so nothing an app prints at import
# or a task prints can corrupt the wire. Only the standard library and the app's own
# requirements (celery) are used: nothing is installed for celeriac.

import json
import os
import selectors
import signal
import sys
import time
import traceback

PROTO = None  # the wire to the worker (a dup of the original stdout)
NODE = "celery@localhost"
MAX_TASKS = 0  # tasks per child; 0 = no limit
STANDBY = int(os.environ.get("CELERIAC_STANDBY_CHILDREN", "2"))  # idle children kept ready


def send(obj):
    data = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
    view = memoryview(data)
    while view:
        n = os.write(PROTO, view)
        view = view[n:]


def parse_args(argv):
    opts = {"app": None, "node": NODE, "loglevel": "WARNING", "logfile": None,
            "max_tasks": None}
    it = iter(argv)
    for a in it:
        if a == "--app":
            opts["app"] = next(it)
        elif a == "--node":
            opts["node"] = next(it)
        elif a == "--loglevel":
            opts["loglevel"] = next(it).upper()
        elif a == "--logfile":
            opts["logfile"] = next(it) or None
        elif a == "--max-tasks":
            opts["max_tasks"] = int(next(it))
    return opts


# --------------------------------------------------------------------------------------
# Loading the app, as `celery -A` and a prefork child do.
# --------------------------------------------------------------------------------------

def load_app(spec, node, loglevel, logfile):
    # `celery -A` imports from the current directory (`import_from_cwd`).
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    from celery.app.utils import find_app
    app = find_app(spec)
    from celery import signals
    from celery.app import trace
    from celery._state import _set_task_join_will_block, set_default_app
    from celery.app.trace import build_tracer

    # The worker's main process: imports (`imports`/`include`), `worker_init`, logging.
    app.loader.init_worker()
    app.log.setup(loglevel, logfile, redirect_stdouts=True, hostname=node)
    # `setup_worker_optimizations` as the Celery worker runs it: fast tracing, the node name
    # as `hostname`, this app as the current and default app.
    trace.setup_worker_optimizations(app, node)
    _set_task_join_will_block(True)
    set_default_app(app)
    app.finalize()
    for name, task in app.tasks.items():
        task.__trace__ = build_tracer(name, task, app.loader, node, app=app)
    signals.worker_init.send(sender=None)
    global REJECT_STORES_FAILURE
    REJECT_STORES_FAILURE = rejects_store_failure()
    warm(app)
    return app


def warm(app):
    """Import and build, once in the zygote, what every child would otherwise import and
    build on its own: the result backend and its client, the broker transport a retry or a
    canvas step publishes with. Nothing connects here (no sockets, no threads before fork)."""
    try:
        backend = app.backend
        client = getattr(backend, "client", None)
        if client is not None and hasattr(client, "ping"):
            # One connection opened and closed here does the client's one-time work (lazy
            # imports, handshake set-up) for every child: a child's own connect then costs
            # a third of what it would. Closed before any fork: no socket is shared.
            client.ping()
            client.connection_pool.disconnect()
    except Exception:
        pass
    try:
        app.amqp
        conn = app.connection_for_write()
        conn.transport  # imports kombu's transport (redis) without connecting
        conn.release()
    except Exception:
        pass
    # Objects that exist now live for the zygote's life: keep the collector from touching
    # them in each child, so their pages stay shared instead of being copied on write.
    import gc
    gc.collect()
    gc.freeze()


def secs(v):
    if v is None:
        return None
    try:
        return float(v.total_seconds())
    except AttributeError:
        return float(v)


def app_report(app):
    """What the worker needs to know of the app: its configuration and its tasks."""
    conf = app.conf
    tasks = {}
    for name, task in sorted(app.tasks.items()):
        tasks[name] = {
            "acks_late": bool(task.acks_late),
            "reject_on_worker_lost": bool(task.reject_on_worker_lost or False),
            "acks_on_failure_or_timeout": bool(task.acks_on_failure_or_timeout),
            "time_limit": secs(task.time_limit),
            "soft_time_limit": secs(task.soft_time_limit),
            "rate_limit": task.rate_limit,
            "ignore_result": bool(task.ignore_result),
            "max_retries": task.max_retries,
            "queue": getattr(task, "queue", None),
        }
    transport = dict(conf.broker_transport_options or {})
    report = {
        "main": app.main,
        "broker_url": conf.broker_url,
        "result_backend": conf.result_backend,
        "task_acks_late": bool(conf.task_acks_late),
        "task_reject_on_worker_lost": bool(conf.task_reject_on_worker_lost or False),
        "task_acks_on_failure_or_timeout": bool(conf.task_acks_on_failure_or_timeout),
        "worker_prefetch_multiplier": conf.worker_prefetch_multiplier,
        "worker_concurrency": conf.worker_concurrency,
        "worker_max_tasks_per_child": conf.worker_max_tasks_per_child,
        "task_time_limit": secs(conf.task_time_limit),
        "task_soft_time_limit": secs(conf.task_soft_time_limit),
        "result_expires": secs(conf.result_expires),
        "result_extended": bool(conf.result_extended),
        "task_track_started": bool(conf.task_track_started),
        "task_default_queue": conf.task_default_queue,
        "worker_send_task_events": bool(conf.worker_send_task_events),
        "broker_transport_options": {k: v for k, v in transport.items()
                                     if isinstance(v, (str, int, float, bool, list, dict))
                                     or v is None},
        "tasks": tasks,
        "python": sys.version.split()[0],
        "celery": __import__("celery").__version__,
        "pid": os.getpid(),
    }
    return report


# --------------------------------------------------------------------------------------
# The child: one task (or MAX_TASKS tasks) through Celery's tracer.
# --------------------------------------------------------------------------------------

IN_TASK = False
REJECT_STORES_FAILURE = True  # set at load: see `rejects_store_failure`
CURRENT = None  # "name[id]" of the task running in this child, for its printed lines


def soft_limit(signum, frame):
    # billiard's `soft_timeout_sighandler`: the exception is raised inside the task. Outside
    # a task (the signal raced the task's end) there is nothing to interrupt.
    if IN_TASK:
        from billiard.exceptions import SoftTimeLimitExceeded
        raise SoftTimeLimitExceeded()


def child_setup(app):
    from celery import signals
    from celery.platforms import set_pdeathsig
    os.setpgid(0, 0)
    set_pdeathsig("SIGKILL")
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGCHLD, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGUSR1, soft_limit)
    # Printed lines (Celery's redirected stdout/stderr) say which task printed them, and the
    # process is named as a pool child is.
    import logging
    import multiprocessing
    multiprocessing.current_process().name = f"ForkPoolWorker-{os.getpid()}"

    class TaskTag(logging.Filter):
        def filter(self, record):
            if CURRENT and record.name == "celery.redirected":
                record.msg = f"{CURRENT}: {record.msg}"
            return True

    for handler in logging.getLogger().handlers:
        handler.addFilter(TaskTag())
    app.loader.init_worker_process()
    signals.worker_process_init.send(sender=NODE)
    # Open the result backend's connection now, while this child stands by, instead of on
    # the task's critical path (redis-py connects lazily).
    try:
        client = getattr(app.backend, "client", None)
        if client is not None and hasattr(client, "ping"):
            client.ping()
    except Exception:
        pass


def request_of(envelope):
    """The request dict Celery's `Request.__init__` builds from a message, and its body."""
    headers = dict(envelope.get("headers") or {})
    properties = envelope.get("properties") or {}
    delivery_info = properties.get("delivery_info") or {}
    headers.update({
        "properties": properties,
        "reply_to": properties.get("reply_to"),
        "correlation_id": properties.get("correlation_id"),
        "hostname": NODE,
        "delivery_info": {
            "exchange": delivery_info.get("exchange"),
            "routing_key": delivery_info.get("routing_key"),
            "priority": properties.get("priority"),
            "redelivered": delivery_info.get("redelivered", False),
        },
    })
    return headers


def run_task(app, envelope):
    """Run one message through Celery's tracer; what the worker needs to settle it."""
    global IN_TASK, CURRENT
    from kombu.serialization import loads
    from celery.app.trace import prepare_accept_content
    from celery.exceptions import Ignore, Reject, Retry
    from celery.utils.serialization import get_pickled_exception
    from billiard.einfo import ExceptionWithTraceback
    from celery import signals
    from kombu.utils.encoding import safe_repr

    request = request_of(envelope)
    name = request["task"]
    task_id = request["id"]
    task = app.tasks[name]
    body = envelope["body"]
    if (envelope.get("properties") or {}).get("body_encoding") == "base64":
        import base64
        body = base64.b64decode(body)
    args, kwargs, embed = loads(
        body, envelope.get("content-type"), envelope.get("content-encoding"),
        accept=prepare_accept_content(app.conf.accept_content),
    )
    request.update({"args": args, "kwargs": kwargs, "hostname": NODE, "is_eager": False},
                   **(embed or {}))
    IN_TASK, CURRENT = True, f"{name}[{task_id}]"
    try:
        R, I, T, Rstr = task.__trace__(task_id, args, kwargs, request)
    finally:
        IN_TASK, CURRENT = False, None
    if not I:
        return {"state": "SUCCESS", "result": Rstr, "runtime": T}
    exc = R.exception
    if isinstance(exc, ExceptionWithTraceback):
        exc = exc.exc
    tb = R.traceback
    if isinstance(exc, (SystemExit, KeyboardInterrupt)):
        code = getattr(exc, "code", None)
        return {"state": "LOST", "exitcode": code if isinstance(code, int) else None,
                "kind": type(exc).__name__}
    if isinstance(exc, Reject):
        if not exc.requeue and REJECT_STORES_FAILURE:
            # `Request.on_failure`: a task that rejects without requeue gets a FAILURE
            # result and the task_failure signal (the parent's work, done here, where the
            # exception and the app are).
            ignored = request.get("ignore_result")
            if ignored is None:
                ignored = task.ignore_result
            task.backend.mark_as_failure(
                task_id, exc, request=_context(request),
                store_result=task.store_errors_even_if_ignored or not ignored)
            signals.task_failure.send(sender=task, task_id=task_id, exception=exc,
                                      args=args, kwargs=kwargs, traceback=tb, einfo=R)
        return {"state": "REJECTED", "requeue": bool(exc.requeue),
                "exception": safe_repr(get_pickled_exception(R.exception)),
                "traceback": tb}
    if isinstance(exc, Ignore):
        return {"state": "IGNORED"}
    if isinstance(exc, Retry):
        return {"state": "RETRY", "exception": safe_repr(exc.exc), "traceback": str(tb)}
    return {"state": "FAILURE", "exception": safe_repr(get_pickled_exception(R.exception)),
            "traceback": tb, "runtime": T}


def rejects_store_failure():
    """Whether this Celery's `Request.on_failure` stores FAILURE for a `Reject` without
    requeue (Celery 5.7 does, celery#4222; 5.5 stores nothing): the parent's part, which the
    child does here, follows the Celery the app runs on."""
    import inspect
    from celery.worker.request import Request
    try:
        src = inspect.getsource(Request.on_failure)
    except (OSError, TypeError):
        import celery
        return tuple(celery.VERSION[:2]) >= (5, 7)
    start = src.find("isinstance(exc, Reject)")
    end = src.find("self.reject(", start)
    return start >= 0 and "mark_as_failure" in src[start:end]


def _context(request):
    from celery.app.task import Context
    return Context(request)


def child_main(app, cmd_r, rep_w):
    """A forked child: serve jobs from `cmd_r`, report each on `rep_w`, exit after MAX_TASKS."""
    child_setup(app)
    served = 0
    rfile = os.fdopen(cmd_r, "rb", buffering=0)
    buf = b""
    while True:
        while b"\n" not in buf:
            chunk = rfile.read(1 << 16)
            if not chunk:
                os._exit(0)  # the zygote closed our pipe: stop
            buf += chunk
        line, buf = buf.split(b"\n", 1)
        job = json.loads(line)
        try:
            report = run_task(app, job["envelope"])
        except SystemExit as exc:
            # The process ends as a billiard child would: its exit code is what the worker
            # reports (`WorkerLostError: Worker exited prematurely: exitcode N`).
            os._exit(exc.code if isinstance(exc.code, int) else 1)
        except Exception as exc:  # the tracer itself failed: report, as Celery's internal error
            report = {"state": "FAILURE", "exception": repr(exc),
                      "traceback": traceback.format_exc(), "internal": True}
        served += 1
        exiting = MAX_TASKS > 0 and served >= MAX_TASKS
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        data = (json.dumps({"job": job["job"], "report": report, "exiting": exiting},
                           separators=(",", ":"), default=str) + "\n").encode()
        view = memoryview(data)
        while view:
            view = view[os.write(rep_w, view):]
        if exiting:
            os._exit(0)


# --------------------------------------------------------------------------------------
# The zygote: fork children, hand them jobs, forward reports, notice deaths.
# --------------------------------------------------------------------------------------

class Child:
    def __init__(self, pid, pidfd, cmd_w, rep_r):
        self.pid = pid
        self.pidfd = pidfd
        self.cmd_w = cmd_w
        self.rep_r = rep_r
        self.buf = b""
        self.job = None      # the job it runs now
        self.exiting = False  # it said it exits after its report


class Zygote:
    def __init__(self, app):
        self.app = app
        self.sel = selectors.DefaultSelector()
        self.children = {}   # pid -> Child
        self.idle = []       # children that may take another job (standby first)
        self.stdin_buf = b""
        self.closing = False
        self.draining = False
        self.spawn_failures = 0
        self.fork_after = 0.0  # monotonic time before which no standby is forked

    def fork(self):
        cmd_r, cmd_w = os.pipe()
        rep_r, rep_w = os.pipe()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        pid = os.fork()
        if pid == 0:
            try:
                os.close(cmd_w)
                os.close(rep_r)
                os.close(0)
                os.close(PROTO)  # only the zygote speaks to the worker
                try:
                    self.sel.close()
                except Exception:
                    pass
                for c in self.children.values():
                    for fd in (c.pidfd, c.cmd_w, c.rep_r):
                        try:
                            os.close(fd)
                        except OSError:
                            pass
                child_main(self.app, cmd_r, rep_w)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(1)
        os.close(cmd_r)
        os.close(rep_w)
        pidfd = os.pidfd_open(pid)
        child = Child(pid, pidfd, cmd_w, rep_r)
        os.set_blocking(rep_r, False)
        self.children[pid] = child
        self.sel.register(rep_r, selectors.EVENT_READ, ("report", child))
        self.sel.register(pidfd, selectors.EVENT_READ, ("exit", child))
        return child

    def standby(self):
        """Keep STANDBY idle children forked ahead, so fork and child set-up (its backend
        connection) are off a task's path even when tasks come back to back."""
        while (not self.closing and len(self.idle) < STANDBY
               and time.monotonic() >= self.fork_after):
            try:
                self.idle.append(self.fork())
            except OSError as exc:
                print(f"celeriac zygote: cannot fork a child: {exc}", file=sys.stderr)
                self.fork_after = time.monotonic() + 1.0  # try again in a second
                return

    def take(self):
        """An idle child that is still alive, else a new one: a standby can have died while
        it waited (an operator's kill, the OOM killer), and handing it a job would turn that
        job into a WorkerLostError it did nothing to earn."""
        import select
        while self.idle:
            child = self.idle.pop(0)
            exited, _, _ = select.select([child.pidfd], [], [], 0)
            if not exited:
                return child
            self.reap(child)
        return self.fork()

    def run(self, job, envelope):
        child = self.take()
        child.job = job
        line = (json.dumps({"job": job, "envelope": envelope}, separators=(",", ":")) + "\n")
        data = memoryview(line.encode())
        try:
            os.set_blocking(child.cmd_w, True)
            while data:
                data = data[os.write(child.cmd_w, data):]
        except OSError:
            pass  # the child died: its exit is noticed and reported as lost
        send({"started": job, "pid": child.pid})

    def signal(self, job, sig):
        for c in self.children.values():
            if c.job == job:
                try:
                    os.killpg(c.pid, sig)
                except (ProcessLookupError, PermissionError):
                    try:
                        os.kill(c.pid, sig)
                    except OSError:
                        pass

    def read_reports(self, child):
        while True:
            try:
                chunk = os.read(child.rep_r, 1 << 16)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                break
            child.buf += chunk
        while b"\n" in child.buf:
            line, child.buf = child.buf.split(b"\n", 1)
            msg = json.loads(line)
            send({"done": msg["job"], "report": msg["report"], "exiting": msg["exiting"]})
            if child.job == msg["job"]:
                child.job = None
            child.exiting = msg["exiting"]
            if not msg["exiting"] and child.pid in self.children:
                if self.closing:
                    try:
                        os.killpg(child.pid, signal.SIGKILL)  # draining: no more jobs
                    except OSError:
                        pass
                else:
                    # First in line: a child that has served is warm; a standby may still
                    # be setting up.
                    self.idle.insert(0, child)

    def reap(self, child):
        self.read_reports(child)
        try:
            _, status = os.waitpid(child.pid, 0)
        except ChildProcessError:
            status = 0
        for fd in (child.rep_r, child.pidfd):
            try:
                self.sel.unregister(fd)
            except (KeyError, ValueError):
                pass
        for fd in (child.rep_r, child.pidfd, child.cmd_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self.children.pop(child.pid, None)
        if child in self.idle:
            self.idle.remove(child)
        if child.job is not None:
            send({"lost": child.job,
                  "exitcode": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                  "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None})
        elif not child.exiting:
            # A standby or idle child died without a job (killed by an operator, the OOM
            # killer, a crash in worker_process_init): replace it, with a pause when that
            # keeps happening, so a broken init cannot spin the zygote. The pause only
            # delays the next standby: reports, jobs and signals are served meanwhile (a
            # job that comes still gets a child, forked for it).
            self.spawn_failures += 1
            if self.spawn_failures > 3:
                self.fork_after = time.monotonic() + min(5.0, 0.1 * self.spawn_failures)
        else:
            self.spawn_failures = 0

    def command(self, line):
        msg = json.loads(line)
        if "run" in msg:
            self.run(msg["run"], msg["envelope"])
        elif "signal" in msg:
            self.signal(msg["signal"], msg["sig"])
        elif msg.get("drain"):
            # A pool restart: a new zygote takes new jobs; finish ours, then exit.
            self.draining = True
            self.closing = True
            for c in list(self.idle):
                try:
                    os.killpg(c.pid, signal.SIGKILL)
                except OSError:
                    pass

    def read_stdin(self):
        chunk = os.read(0, 1 << 20)
        if not chunk:
            return False
        self.stdin_buf += chunk
        while b"\n" in self.stdin_buf:
            line, self.stdin_buf = self.stdin_buf.split(b"\n", 1)
            if line.strip():
                self.command(line)
        return True

    def serve(self):
        self.sel.register(0, selectors.EVENT_READ, ("stdin", None))
        self.standby()
        while True:
            events = self.sel.select(timeout=0)
            if not events:
                # Nothing to forward or start: now is the time to fork standbys, never
                # while a report or a job waits.
                self.standby()
                wait = None
                if len(self.idle) < STANDBY and not self.closing:
                    wait = max(0.0, self.fork_after - time.monotonic())
                events = self.sel.select(timeout=wait)
            for key, _ in events:
                kind, child = key.data
                if kind == "stdin":
                    if not self.read_stdin():
                        return self.close()
                elif kind == "report":
                    self.read_reports(child)
                elif kind == "exit":
                    self.reap(child)
            if self.draining and not self.children:
                return 0

    def close(self):
        # The worker closed our stdin: it is gone or stopping, and has given back or
        # settled whatever still ran. Nothing here outlives it.
        self.closing = True
        for c in list(self.children.values()):
            try:
                os.killpg(c.pid, signal.SIGKILL)
            except OSError:
                pass
        for c in list(self.children.values()):
            try:
                os.waitpid(c.pid, 0)
            except ChildProcessError:
                pass
        return 0


def main(argv):
    global PROTO, NODE, MAX_TASKS
    PROTO = os.dup(1)
    os.dup2(2, 1)  # prints go to the log, never onto the wire
    opts = parse_args(argv)
    NODE = opts["node"]
    MAX_TASKS = opts["max_tasks"]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when we stop
    # SIGTERM to the worker's process group (a terminal, `timeout`, systemd) is the worker's
    # to act on: it finishes the running tasks, then closes our stdin.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        from celery.platforms import set_pdeathsig
        set_pdeathsig("SIGKILL")
        app = load_app(opts["app"], NODE, opts["loglevel"], opts["logfile"])
        if MAX_TASKS is None:  # not given: the app's worker_max_tasks_per_child
            MAX_TASKS = app.conf.worker_max_tasks_per_child or 0
        report = app_report(app)
    except BaseException as exc:
        tb = traceback.format_exc()
        sys.stderr.write(tb)
        sys.stderr.flush()
        send({"fatal": f"{type(exc).__name__}: {exc}", "traceback": tb})
        return 1
    send({"ready": report})
    return Zygote(app).serve()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
