"""Benchmark driver: runs each scenario against a celeriac worker and a Python Celery worker,
alternately, on one private redis-server, and reports medians and celeriac/Celery ratios.

Run by scripts/bench.sh with the venv interpreter (it needs celery and redis-py):

    driver.py --port PORT --celeriac BIN --out DIR [--quick] [--runs N] [--profile] [S1 S2 ...]

Every message a producer pushes is a real Celery 5.7 message: one is produced by
`app.send_task` and captured off the queue, and copies of it get fresh task ids and
arguments (`[i, i]`, so every result can be checked). Pushing copies with pipelined LPUSH
keeps the producer from being the bottleneck (Celery's own `send_task` manages ~1k/s here).

What each column means:
- rate: tasks/s. S1/S2 pre-fill the queue before the worker starts and count from the first
  completion to the last (`date_done` in the stored results), so start-up is excluded; S3 counts
  from the moment 4 producer processes start pushing to the last completion.
- p50/p99: for S1-S3 the gap between consecutive completions; for S4 submit-to-start (the
  worker's `task-started` event timestamp minus the time just before LPUSH) and
  submit-to-result (until the result's PUBLISH reaches a subscribed client).
- peak RSS: the worker's whole process tree (main process plus every descendant), sampled
  every 50 ms from /proc; S5 reports the idle tree instead.
- start-up: launch of the worker process to the first stored result (a task waits in the
  queue at launch).

Only 127.0.0.1 is contacted. Every wait is bounded; workers and producers run in their own
sessions and are killed (whole process group and every descendant seen) on exit or signal.
"""

from __future__ import annotations

import argparse
import base64
import copy
import datetime as dt
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid

import redis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYDIR = os.path.join(ROOT, "tests", "py")
APPDIR = os.path.join(PYDIR, "apps")  # Python Celery apps both workers serve (S7-S9)
META = "celery-task-meta-"
QUEUE = "celery"
IMPLS = ("celeriac", "celery")

# ---------------------------------------------------------------------------------------
# Scenarios. Flags can be overridden with BENCH_<S>_CELERIAC_FLAGS / BENCH_<S>_CELERY_FLAGS.

JWQL = "-c1 --max-tasks-per-child=1 --prefetch-multiplier 1 -Ofair"
SOLO = "-P solo -c1 --prefetch-multiplier 1"

SCENARIOS = {
    "S1": dict(
        title="S1 JWQL mode (child per task, late ack)",
        kind="throughput",
        n=500, quick_n=100,
        # Celery in this mode runs < 1 task/s: measure at most this many tasks / seconds.
        celery_cap=(20, 60.0), quick_celery_cap=(6, 25.0),
        flags={"celeriac": f"-P prefork {JWQL} --acks-late", "celery": f"-P prefork {JWQL}"},
        env={"CELERIAC_ACKS_LATE": "1"},
    ),
    "S2": dict(
        title="S2 single slot in-process",
        kind="throughput",
        n=20000, quick_n=2000,
        flags={"celeriac": SOLO, "celery": SOLO},
    ),
    "S3": dict(
        title="S3 saturation, 4 producers",
        kind="saturation",
        n=100000, quick_n=10000, producers=4,
        flags={
            # Best measured on a 2-core VM with the producers and Redis on the same cores:
            # celeriac threads -c8/-c16 beat -c2/-c4 and solo; Celery solo matched or beat
            # prefork -c2, threads -c2/-c4 and larger prefetch (all 0.8k-1.4k/s).
            "celeriac": "-P threads -c8 --prefetch-multiplier 64",
            "celery": "-P solo -c1 --prefetch-multiplier 1",
        },
    ),
    "S4": dict(
        title="S4 latency, idle worker, one at a time",
        kind="latency",
        n=2000, quick_n=200,
        flags={"celeriac": f"{SOLO} -E", "celery": f"{SOLO} -E"},
    ),
    "S5": dict(
        title="S5 footprint, JWQL line",
        kind="footprint",
        n=1, quick_n=1,
        flags={"celeriac": f"-P prefork {JWQL} --acks-late", "celery": f"-P prefork {JWQL}"},
        env={"CELERIAC_ACKS_LATE": "1"},
    ),
    # Python tasks: the same Python app (tests/py/apps/pytasks.py, `task_acks_late=True`)
    # served by `celeriac -A pytasks worker` (a zygote forking a child per task) and by
    # `celery -A pytasks worker`.
    "S7": dict(
        title="S7 Python add, JWQL mode (child per task)",
        kind="throughput",
        n=1000, quick_n=200,
        celery_cap=(20, 60.0), quick_celery_cap=(6, 25.0),
        app="pytasks", task="pytasks.add",
        flags={"celeriac": JWQL, "celery": f"-P prefork {JWQL}"},
    ),
    "S8": dict(
        title="S8 Python add, kept children (-c1)",
        kind="throughput",
        n=5000, quick_n=1000,
        celery_cap=(1000, 60.0), quick_celery_cap=(300, 25.0),
        app="pytasks", task="pytasks.add",
        flags={"celeriac": "-c1 --prefetch-multiplier 1 -Ofair",
               "celery": "-P prefork -c1 --prefetch-multiplier 1 -Ofair"},
    ),
    # An app whose import takes 1.5 s (tests/py/apps/slow_app.py): launch to first result
    # against the import time, and the JWQL-mode rate once imported.
    "S9": dict(
        title="S9 Python app importing for 1.5 s, JWQL mode",
        kind="throughput",
        n=500, quick_n=100,
        celery_cap=(10, 60.0), quick_celery_cap=(4, 25.0),
        app="slow_app", task="slow_app.add",
        flags={"celeriac": JWQL, "celery": f"-P prefork {JWQL}"},
        # The target is launch to first result <= the app's import + 200 ms: the import is
        # measured here, not assumed (it is the 1.5 s sleep plus importing Celery itself).
        measure_import=True,
    ),
    "S10": dict(
        title="S10 footprint, JWQL line, Python app",
        kind="footprint",
        n=1, quick_n=1,
        app="pytasks", task="pytasks.add",
        flags={"celeriac": JWQL, "celery": f"-P prefork {JWQL}"},
    ),
}
ALL = ["S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8", "S9", "S10"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    k = min(len(s) - 1, max(0, int(round(p / 100.0 * (len(s) - 1)))))
    return s[k]


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def parse_date(s: str) -> float:
    return dt.datetime.fromisoformat(s).timestamp()


# ---------------------------------------------------------------------------------------
# Process bookkeeping: everything we start, so it can all be killed.

class Registry:
    """Pids of the sessions we started, mirrored to a file that scripts/bench.sh's trap reads."""

    def __init__(self, path: str):
        self.path = path
        self.pids: set[int] = set()
        self.lock = threading.Lock()

    def _write(self):
        with open(self.path, "w") as f:
            f.write("".join(f"{p}\n" for p in sorted(self.pids)))

    def add(self, pid: int):
        with self.lock:
            self.pids.add(pid)
            self._write()

    def remove(self, pid: int):
        with self.lock:
            self.pids.discard(pid)
            self._write()


def start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    out.extend(int(x) for x in f.read().split())
            except OSError:
                pass
    except OSError:
        pass
    return out


def tree(pid: int) -> list[int]:
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        todo.extend(children(p))
    return seen


def zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def proc_kib(pid: int, file: str, field: str) -> int:
    """The kB figure of `field` in /proc/PID/FILE (0 once the process is gone)."""
    try:
        with open(f"/proc/{pid}/{file}") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kib(pid: int) -> int:
    return proc_kib(pid, "status", "VmRSS:")


def pss_kib(pid: int) -> int:
    """Proportional set size: shared pages (a forked child's copy-on-write pages, libraries)
    split between the processes sharing them, so a tree's sum counts them once."""
    return proc_kib(pid, "smaps_rollup", "Pss:")


class Worker:
    """One worker process (celeriac or Python Celery) in its own session."""

    def __init__(self, impl: str, flags: str, name: str, ctx: "Ctx", env_extra=None, app=None):
        self.impl, self.ctx, self.name = impl, ctx, name
        url = ctx.url
        if app is not None:
            # A Python app's own tasks: both workers import it from its directory.
            exe = ctx.celeriac if impl == "celeriac" else os.path.join(
                os.path.dirname(sys.executable), "celery")
            self.cmd = [exe, "-A", app, "worker", *flags.split(), "-l", "warning", "-n", name]
            if impl == "celery":
                self.cmd += ["--without-mingle", "--without-gossip"]
            self.cwd = APPDIR
        elif impl == "celeriac":
            self.cmd = [ctx.celeriac, "-b", url, "worker", *flags.split(),
                        "-l", "warning", "-n", name]
            self.cwd = ROOT
        else:
            self.cmd = [os.path.join(os.path.dirname(sys.executable), "celery"),
                        "-A", "shared_tasks", "worker", *flags.split(), "-l", "warning",
                        "--without-mingle", "--without-gossip", "-n", name]
            self.cwd = PYDIR
        self.env = dict(os.environ, CELERY_BROKER_URL=url, CELERY_RESULT_BACKEND=url,
                        PYTHONDONTWRITEBYTECODE="1")
        self.env.pop("CELERIAC_ACKS_LATE", None)
        self.env["CELERIAC_PYTHON"] = sys.executable
        self.env.update(env_extra or {})
        self.proc = None
        self.known: dict[int, int | None] = {}  # pid -> start time, every process seen
        self.peak_tree = 0
        self.peak_main = 0
        self._stop_sampling = threading.Event()
        self._sampler = None
        self.log_path = os.path.join(ctx.out, "logs", f"{name}.log")

    def start(self):
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        logf = open(self.log_path, "wb")
        self.t_launch = time.time()
        self.proc = subprocess.Popen(self.cmd, cwd=self.cwd, env=self.env,
                                     stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                     start_new_session=True)
        logf.close()
        self.ctx.registry.add(self.proc.pid)
        self.ctx.active.append(self)
        self.perf = None
        if self.impl == "celeriac" and self.ctx.profile:
            self.start_profile()
        return self

    def start_profile(self):
        """`--profile`: sample the celeriac worker's CPU (every thread, user and kernel) with
        perf at 999 Hz until it exits; `finish_profile` writes the flat report."""
        d = os.path.join(self.ctx.out, "profile")
        os.makedirs(d, exist_ok=True)
        self.perf_data = os.path.join(d, self.name.split("@")[0] + ".data")
        self.perf = subprocess.Popen(
            ["perf", "record", "-q", "-e", "cpu-clock", "-F", "999", "-p", str(self.proc.pid),
             "-o", self.perf_data], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        self.ctx.registry.add(self.perf.pid)

    def finish_profile(self):
        """perf stops by itself when the worker exits; then keep the symbols that took at
        least 0.5% of the samples, by self time, as text next to the data."""
        try:
            self.perf.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(self.perf.pid, signal.SIGINT)
            self.perf.wait(30)
        self.ctx.registry.remove(self.perf.pid)
        report = self.perf_data[:-len(".data")] + ".txt"
        out = subprocess.run(["perf", "report", "-i", self.perf_data, "--stdio", "--no-children",
                              "-F", "overhead,dso,sym", "--percent-limit", "0.5"],
                             capture_output=True, text=True, timeout=300).stdout
        rows = [line.rstrip() for line in out.splitlines()
                if line.strip() and not line.startswith("#")]
        by_dso: dict[str, float] = {}
        for row in rows:
            parts = row.split()
            if len(parts) >= 2 and parts[0].endswith("%"):
                by_dso[parts[1]] = by_dso.get(parts[1], 0.0) + float(parts[0][:-1])
        with open(report, "w") as f:
            f.write(f"# {self.name}: perf cpu-clock samples at 999 Hz, self time per symbol, "
                    f"symbols >= 0.5%\n# listed, by object: "
                    + ", ".join(f"{k} {v:.1f}%" for k, v in sorted(by_dso.items(),
                                                                    key=lambda kv: -kv[1]))
                    + "\n# overhead  object  symbol\n")
            f.writelines(row + "\n" for row in rows)
        log(f"  profile of {self.name}: {os.path.relpath(report, ROOT)}")

    def sample(self) -> tuple[int, int]:
        pids = tree(self.proc.pid)
        for p in pids:
            if p not in self.known:
                self.known[p] = start_time(p)
        total = sum(rss_kib(p) for p in pids)
        main = rss_kib(self.proc.pid)
        self.peak_tree = max(self.peak_tree, total)
        self.peak_main = max(self.peak_main, main)
        return total, main

    def start_sampling(self, interval=0.05):
        def loop():
            while not self._stop_sampling.wait(interval):
                if self.proc.poll() is not None:
                    return
                self.sample()
        self._sampler = threading.Thread(target=loop, daemon=True)
        self._sampler.start()

    def stop_sampling(self):
        self._stop_sampling.set()
        if self._sampler:
            self._sampler.join(5)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace=20.0):
        if self.proc is None:
            return
        self.stop_sampling()
        if self.proc.poll() is None:
            for p in tree(self.proc.pid):
                self.known.setdefault(p, start_time(p))
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                log(f"  {self.name}: no exit {grace:.0f}s after SIGTERM, killing its group")
        kill_group(self.proc.pid)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        # Descendants in their own process groups (celeriac's task children) that outlived it.
        for p, st in self.known.items():
            if p != self.proc.pid and st is not None and start_time(p) == st:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.ctx.registry.remove(self.proc.pid)
        if self in self.ctx.active:
            self.ctx.active.remove(self)
        if self.perf is not None:
            self.finish_profile()
            self.perf = None

    def log_tail(self, n=15) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""


def kill_group(pid: int):
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------------------------------
# Messages


class Template:
    """A real Celery message for shared_tasks.add (from `add.apply_async`), re-stamped with new
    ids and arguments."""

    def __init__(self, raw: dict):
        self.raw = raw
        body = json.loads(base64.b64decode(raw["body"]))
        self.embed = body[2]

    @classmethod
    def capture(cls, r: redis.Redis) -> "Template":
        sys.path.insert(0, PYDIR)
        sys.dont_write_bytecode = True  # no __pycache__ in the source tree
        import shared_tasks  # noqa: E402  (configured from CELERY_BROKER_URL)

        r.delete(QUEUE)
        # What a monitor sends with `add.delay(1, 2)`.
        shared_tasks.add.apply_async(args=[1, 2])
        raw = r.rpop(QUEUE)
        if raw is None:
            raise SystemExit("could not capture a Celery message off the queue")
        shared_tasks.app.close()
        return cls(json.loads(raw))

    def make(self, task_id: str, args: list, task: str | None = None) -> bytes:
        m = dict(self.raw)
        h = dict(m["headers"])
        h["id"] = h["root_id"] = task_id
        if task is not None:
            h["task"] = task
        h["argsrepr"] = repr(args)
        p = copy.deepcopy(m["properties"])
        p["correlation_id"] = task_id
        p["delivery_tag"] = str(uuid.uuid4())
        m["headers"], m["properties"] = h, p
        m["body"] = base64.b64encode(json.dumps([args, {}, self.embed]).encode()).decode()
        return json.dumps(m).encode()


def task_id(tag: int, i: int) -> str:
    return f"{tag:08x}-0000-4000-8000-{i:012x}"


def push(r: redis.Redis, msgs: list[bytes], batch=500):
    for k in range(0, len(msgs), batch):
        r.lpush(QUEUE, *msgs[k:k + batch])


def wait_results(r: redis.Redis, ids: list[str], deadline: float, alive=None) -> int:
    """Wait until every id has a stored result (or the deadline, or the worker died).
    Returns how many of the leading ids are known done (for progress only)."""
    k = 0
    while k < len(ids) and time.time() < deadline:
        chunk = ids[k:k + 1000]
        if r.exists(*[META + i for i in chunk]) == len(chunk):
            k += len(chunk)
            continue
        if alive is not None and not alive():
            break
        time.sleep(0.05)
    return k


def collect(r: redis.Redis, ids: list[str], expect) -> dict:
    """Read every stored result: completion times, and a check of status and value."""
    done, bad = [], 0
    for k in range(0, len(ids), 2000):
        chunk = ids[k:k + 2000]
        for i, raw in zip(range(k, k + len(chunk)), r.mget([META + x for x in chunk])):
            if raw is None:
                continue
            m = json.loads(raw)
            if m.get("status") != "SUCCESS" or m.get("result") != expect(i):
                bad += 1
            if m.get("date_done"):
                done.append(parse_date(m["date_done"]))
    done.sort()
    return {"done": done, "bad": bad}


# ---------------------------------------------------------------------------------------
# Context


class Ctx:
    def __init__(self, args):
        self.port = args.port
        self.url = f"redis://127.0.0.1:{args.port}/0"
        os.environ["CELERY_BROKER_URL"] = self.url
        os.environ["CELERY_RESULT_BACKEND"] = self.url
        self.celeriac = args.celeriac
        self.out = args.out
        self.quick = args.quick
        self.runs = args.runs
        self.profile = args.profile
        self.r = redis.Redis(host="127.0.0.1", port=args.port, db=0)
        self.registry = Registry(args.pids or os.path.join(args.out, "pids"))
        self.active: list[Worker] = []
        self.producers: list[subprocess.Popen] = []
        self.tag = int(time.time()) & 0xFFFFFF
        self.template = Template.capture(self.r)
        self.template_path = os.path.join(args.out, "template.json")
        with open(self.template_path, "w") as f:
            json.dump(self.template.raw, f)

    def next_tag(self) -> int:
        self.tag += 1
        return self.tag

    def fresh(self):
        self.r.flushdb()

    def flags(self, sc_name: str, impl: str) -> str:
        env = os.environ.get(f"BENCH_{sc_name}_{impl.upper()}_FLAGS")
        return env if env else SCENARIOS[sc_name]["flags"][impl]

    def cleanup(self):
        for p in list(self.producers):
            kill_group(p.pid)
            self.registry.remove(p.pid)
        for w in list(self.active):
            try:
                w.stop(grace=3.0)
            except Exception as e:  # noqa: BLE001 - cleanup must go on
                log(f"cleanup of {w.name}: {e}")


# ---------------------------------------------------------------------------------------
# Scenario runs. Each returns a dict of figures for one run.


def run_throughput(ctx: Ctx, sc_name: str, impl: str, run: int) -> dict:
    sc = SCENARIOS[sc_name]
    n = sc["quick_n"] if ctx.quick else sc["n"]
    cap_s = None
    if impl == "celery" and "celery_cap" in sc:
        cap_n, cap_s = sc["quick_celery_cap"] if ctx.quick else sc["celery_cap"]
        n = min(n, cap_n)
    ctx.fresh()
    tag = ctx.next_tag()
    ids = [task_id(tag, i) for i in range(n)]
    push(ctx.r, [ctx.template.make(ids[i], [i, i], sc.get("task")) for i in range(n)])
    w = Worker(impl, ctx.flags(sc_name, impl), f"{sc_name.lower()}-{impl}-{run}@bench", ctx,
               sc.get("env"), app=sc.get("app"))
    w.start()
    w.start_sampling()
    # Generous bound for the full count; a capped run stops at its cap after the first result.
    deadline = time.time() + max(120.0, n / 100.0)
    if cap_s is not None:
        first = wait_results(ctx.r, ids[:1], time.time() + 60.0, w.alive)
        deadline = time.time() + cap_s if first else time.time()
    wait_results(ctx.r, ids, deadline, w.alive)
    died = not w.alive()
    w.stop()
    res = collect(ctx.r, ids, lambda i: 2 * i)
    out = finish_throughput(ctx, w, res, n, t0=None, died=died, capped=cap_s is not None)
    if cap_s is not None:
        out["cap"] = f"{n} tasks or {cap_s:.0f} s"
    return out


def finish_throughput(ctx, w, res, n, t0, died, capped=False) -> dict:
    done = res["done"]
    out = {"n": n, "completed": len(done), "bad": res["bad"], "capped": capped,
           "peak_rss_kib": w.peak_tree, "peak_main_rss_kib": w.peak_main}
    if died:
        out["note"] = "worker exited during the run"
        log(f"  {w.name} exited early; log tail:\n{w.log_tail()}")
    if len(done) < n and not capped:
        log(f"  {w.name}: only {len(done)}/{n} results before the deadline")
    if t0 is None:
        out["startup_s"] = done[0] - w.t_launch if done else None
        span = done[-1] - done[0] if len(done) > 1 else None
        out["rate"] = (len(done) - 1) / span if span else None
    else:
        span = done[-1] - t0 if done else None
        out["rate"] = len(done) / span if span else None
    out["span_s"] = span
    gaps = [(b - a) * 1000 for a, b in zip(done, done[1:])]
    out["p50_ms"], out["p99_ms"] = pct(gaps, 50), pct(gaps, 99)
    out["max_gap_ms"] = max(gaps) if gaps else None
    return out


def warm_up(ctx: Ctx, w: Worker, tag: int, count=1, timeout=60.0) -> float | None:
    """Push `count` tasks and wait for them; returns launch-to-first-result seconds."""
    ids = [task_id(tag, 0xFFF000 + i) for i in range(count)]
    push(ctx.r, [ctx.template.make(x, [1, 2]) for x in ids])
    wait_results(ctx.r, ids, time.time() + timeout, w.alive)
    raw = ctx.r.get(META + ids[0])
    if raw is None:
        return None
    return parse_date(json.loads(raw)["date_done"]) - w.t_launch


def producer_main(args):
    """`driver.py produce`: build messages, say ready, wait for go, push, report."""
    with open(args.template) as f:
        tpl = Template(json.load(f))
    r = redis.Redis(host="127.0.0.1", port=args.port, db=0)
    msgs = [tpl.make(task_id(args.tag, i), [i, i]) for i in range(args.start, args.start + args.count)]
    r.ping()
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    t_first = time.time()
    push(r, msgs, batch=args.batch)
    print(json.dumps({"t_first": t_first, "t_last": time.time()}), flush=True)


def run_saturation(ctx: Ctx, sc_name: str, impl: str, run: int) -> dict:
    sc = SCENARIOS[sc_name]
    n = sc["quick_n"] if ctx.quick else sc["n"]
    k = sc["producers"]
    ctx.fresh()
    tag = ctx.next_tag()
    ids = [task_id(tag, i) for i in range(n)]
    w = Worker(impl, ctx.flags(sc_name, impl), f"{sc_name.lower()}-{impl}-{run}@bench", ctx)
    w.start()
    startup = warm_up(ctx, w, tag)
    if startup is None:
        w.stop()
        log(f"  {w.name} never answered; log tail:\n{w.log_tail()}")
        return {"n": n, "completed": 0, "note": "worker never answered"}
    per = [n // k + (1 if j < n % k else 0) for j in range(k)]
    starts = [sum(per[:j]) for j in range(k)]
    procs = []
    for j in range(k):
        p = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "produce", "--port", str(ctx.port),
             "--template", ctx.template_path, "--tag", str(tag), "--start", str(starts[j]),
             "--count", str(per[j]), "--batch", "100"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
        ctx.registry.add(p.pid)
        ctx.producers.append(p)
        procs.append(p)
    try:
        for p in procs:
            if not wait_line(p, "ready", 120.0):
                raise RuntimeError("a producer did not get ready")
        w.start_sampling()
        t0 = time.time()
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        pushed = []
        for p in procs:
            line = read_line(p, 300.0)
            if line:
                pushed.append(json.loads(line))
        deadline = time.time() + max(120.0, n / 200.0)
        wait_results(ctx.r, ids, deadline, w.alive)
    finally:
        for p in procs:
            kill_group(p.pid)
            p.wait(5)
            ctx.registry.remove(p.pid)
            ctx.producers.remove(p)
    died = not w.alive()
    w.stop()
    res = collect(ctx.r, ids, lambda i: 2 * i)
    out = finish_throughput(ctx, w, res, n, t0=t0, died=died)
    out["startup_s"] = startup
    if pushed:
        out["push_s"] = max(x["t_last"] for x in pushed) - t0
    return out


def read_line(p: subprocess.Popen, timeout: float) -> str | None:
    box = []
    t = threading.Thread(target=lambda: box.append(p.stdout.readline()), daemon=True)
    t.start()
    t.join(timeout)
    return box[0].strip() if box and box[0] else None


def wait_line(p, want, timeout) -> bool:
    return read_line(p, timeout) == want


def run_latency(ctx: Ctx, sc_name: str, impl: str, run: int) -> dict:
    sc = SCENARIOS[sc_name]
    n = sc["quick_n"] if ctx.quick else sc["n"]
    ctx.fresh()
    tag = ctx.next_tag()
    sub = ctx.r.pubsub(ignore_subscribe_messages=True)
    sub.psubscribe(META + "*", "/0.celeryev/task.*")
    w = Worker(impl, ctx.flags(sc_name, impl), f"{sc_name.lower()}-{impl}-{run}@bench", ctx)
    w.start()
    startup = warm_up(ctx, w, tag, count=20)
    if startup is None:
        w.stop()
        sub.close()
        log(f"  {w.name} never answered; log tail:\n{w.log_tail()}")
        return {"n": n, "completed": 0, "note": "worker never answered"}
    w.start_sampling()
    started: dict[str, float] = {}
    arrived: dict[str, float] = {}

    def handle(msg):
        now = time.time()
        ch = msg["channel"].decode()
        if ch.startswith(META):
            arrived.setdefault(ch[len(META):], now)
            return
        try:
            env = json.loads(msg["data"])
            body = json.loads(base64.b64decode(env["body"]))
        except (ValueError, KeyError, TypeError):
            return
        for ev in body if isinstance(body, list) else [body]:
            if isinstance(ev, dict) and ev.get("type") == "task-started":
                started.setdefault(ev.get("uuid"), float(ev["timestamp"]))

    def drain(until: float, want: str | None):
        while time.time() < until:
            m = sub.get_message(timeout=max(0.0, until - time.time()))
            if m is not None and m["type"] == "pmessage":
                handle(m)
            if want is not None and want in arrived:
                return True
        return False

    drain(time.time() + 0.3, None)  # swallow the warm-up's events
    submitted: dict[str, float] = {}
    ids = [task_id(tag, i) for i in range(n)]
    msgs = [ctx.template.make(ids[i], [i, i]) for i in range(n)]
    lost = 0
    for i in range(n):
        time.sleep(0.002)  # let the worker go idle
        t0 = time.time()
        ctx.r.lpush(QUEUE, msgs[i])
        submitted[ids[i]] = t0
        if not drain(t0 + 10.0, ids[i]):
            lost += 1
            if not w.alive():
                break
    drain(time.time() + 1.0, None)  # late (buffered) task-started events
    sub.close()
    w.stop()
    res = collect(ctx.r, ids, lambda i: 2 * i)
    to_start = [(started[x] - t) * 1000 for x, t in submitted.items() if x in started]
    to_result = [(arrived[x] - t) * 1000 for x, t in submitted.items() if x in arrived]
    return {
        "n": n, "completed": len(res["done"]), "bad": res["bad"], "timeouts": lost,
        "start_events": len(to_start),
        "start_p50_ms": pct(to_start, 50), "start_p99_ms": pct(to_start, 99),
        "result_p50_ms": pct(to_result, 50), "result_p99_ms": pct(to_result, 99),
        "peak_rss_kib": w.peak_tree, "peak_main_rss_kib": w.peak_main, "startup_s": startup,
    }


def run_footprint(ctx: Ctx, sc_name: str, impl: str, run: int) -> dict:
    sc = SCENARIOS[sc_name]
    ctx.fresh()
    tag = ctx.next_tag()
    tid = task_id(tag, 0)
    ctx.r.lpush(QUEUE, ctx.template.make(tid, [20, 22], sc.get("task")))
    w = Worker(impl, ctx.flags(sc_name, impl), f"{sc_name.lower()}-{impl}-{run}@bench", ctx,
               sc.get("env"), app=sc.get("app"))
    w.start()
    wait_results(ctx.r, [tid], time.time() + 60.0, w.alive)
    raw = ctx.r.get(META + tid)
    if raw is None:
        w.stop()
        log(f"  {w.name} never answered; log tail:\n{w.log_tail()}")
        return {"n": 1, "completed": 0, "note": "worker never answered"}
    meta = json.loads(raw)
    t_done = parse_date(meta["date_done"])
    # Idle: wait until the tree is settled (Celery leaves its used child a zombie for seconds
    # before it starts the next one in this mode; celeriac keeps a standby child): no zombie,
    # same process count and RSS within 2 % over 2 s, at most 20 s. Then take the largest of
    # ten samples over a second.
    history = []
    settle_deadline = time.time() + 20.0
    while time.time() < settle_deadline:
        total, _ = w.sample()
        pids = tree(w.proc.pid)
        history.append((time.time(), len(pids), total, any(zombie(p) for p in pids)))
        recent = [h for h in history if h[0] >= history[-1][0] - 2.0]
        if (history[-1][0] - history[0][0] >= 2.0 and len({h[1] for h in recent}) == 1
                and not any(h[3] for h in recent)
                and max(h[2] for h in recent) <= 1.02 * min(h[2] for h in recent)):
            break
        time.sleep(0.25)
    samples = []
    for _ in range(10):
        samples.append(w.sample())
        time.sleep(0.1)
    live = [p for p in tree(w.proc.pid) if not zombie(p)]
    procs = len(live)
    pss = sum(pss_kib(p) for p in live)
    w.stop()
    return {
        "n": 1, "completed": 1, "bad": int(meta.get("result") != 42),
        "startup_s": t_done - w.t_launch,
        "idle_rss_kib": max(s[0] for s in samples), "idle_main_rss_kib": max(s[1] for s in samples),
        "processes": procs, "idle_pss_kib": pss,
    }


RUNNERS = {"throughput": run_throughput, "saturation": run_saturation,
           "latency": run_latency, "footprint": run_footprint}


# ---------------------------------------------------------------------------------------
# S6: locks, measured by scripts/bench-locks.sh when it exists.


def run_locks(ctx: Ctx) -> dict:
    """scripts/bench-locks.sh starts its own redis-server; it takes ROUNDS and SECONDS."""
    script = os.path.join(ROOT, "scripts", "bench-locks.sh")
    if not os.access(script, os.X_OK):
        return {"skipped": "scripts/bench-locks.sh is not there (yet)"}
    argv = [script] + (["3", "1"] if ctx.quick else [])
    p = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    ctx.registry.add(p.pid)
    try:
        out, err = p.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        kill_group(p.pid)
        p.communicate()
        return {"skipped": "scripts/bench-locks.sh did not finish within 15 min"}
    finally:
        kill_group(p.pid)
        ctx.registry.remove(p.pid)
    if p.returncode != 0:
        return {"skipped": f"scripts/bench-locks.sh exited {p.returncode}",
                "stderr": err[-2000:]}
    found = None
    for line in out.splitlines():
        if line.startswith("JSON "):
            try:
                found = json.loads(line[len("JSON "):])
            except ValueError:
                pass
    if found is None:
        return {"skipped": "scripts/bench-locks.sh printed no figures", "stdout": out[-2000:]}
    return {"json": found, "stdout": out[-3000:]}


# ---------------------------------------------------------------------------------------
# Summaries, table, JSON, SVG

MEDIAN_KEYS = ["rate", "p50_ms", "p99_ms", "max_gap_ms", "peak_rss_kib", "peak_main_rss_kib",
               "startup_s", "span_s", "push_s", "start_p50_ms", "start_p99_ms", "result_p50_ms",
               "result_p99_ms", "idle_rss_kib", "idle_main_rss_kib", "idle_pss_kib", "processes",
               "completed"]


def summarize(runs: list[dict]) -> dict:
    m = {}
    for k in MEDIAN_KEYS:
        v = median([r.get(k) for r in runs])
        if v is not None:
            m[k] = v
    m["runs"] = len(runs)
    m["bad"] = sum(r.get("bad", 0) for r in runs)
    m["n"] = runs[0].get("n") if runs else None
    if runs and runs[0].get("cap"):
        m["cap"] = runs[0]["cap"]
    return m


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt(x, digits=3):
    if x is None:
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.{digits}g}" if abs(x) < 1 else f"{x:.2f}"


def fmt_ratio(x):
    if x is None:
        return "-"
    if x >= 100:
        return f"{x:,.0f}x"
    return f"{x:.1f}x" if x >= 10 else f"{x:.2g}x" if x < 0.1 else f"{x:.2f}x"


def columns(kind: str, m: dict) -> list:
    """rate, p50, p99, RSS MiB, start-up s for one summary."""
    rss = m.get("idle_rss_kib") if kind == "footprint" else m.get("peak_rss_kib")
    if kind == "latency":
        p50, p99 = m.get("start_p50_ms"), m.get("start_p99_ms")
    else:
        p50, p99 = m.get("p50_ms"), m.get("p99_ms")
    return [m.get("rate"), p50, p99, rss / 1024 if rss else None, m.get("startup_s")]


def table(results: dict) -> str:
    head = ["scenario", "worker", "N x runs", "tasks/s", "p50 ms", "p99 ms", "RSS MiB",
            "start-up s"]
    rows = [head]
    notes = []
    for name, sc in results["scenarios"].items():
        if name == "S6":
            continue
        kind = sc["kind"]
        cols = {}
        for impl in IMPLS:
            m = sc[impl]["median"]
            cols[impl] = columns(kind, m)
            n = m.get("n")
            done = m.get("completed")
            count = f"{done:.0f}/{n}" if n and done is not None and done < n else f"{n}"
            if m.get("cap"):
                count += " (cap)"
                notes.append(f"{name} {impl}: capped at {m['cap']}, whichever came first")
            rows.append([sc["title"] if impl == "celeriac" else "", impl,
                         f"{count} x {m['runs']}"] + [fmt(x) for x in cols[impl]])
            if kind == "latency":
                rows.append(["", "  (to result)", "", "", fmt(m.get("result_p50_ms")),
                             fmt(m.get("result_p99_ms")), "", ""])
            if m.get("bad"):
                notes.append(f"{name} {impl}: {m['bad']} wrong or failed results")
        rows.append(["", "ratio c/C", ""] +
                    [fmt_ratio(ratio(a, b)) for a, b in zip(cols["celeriac"], cols["celery"])])
        if kind == "footprint":
            a, b = sc["celeriac"]["median"], sc["celery"]["median"]
            if a.get("idle_pss_kib") and b.get("idle_pss_kib"):
                notes.append(
                    f"{name} idle tree, processes {a.get('processes', 0):.0f} vs "
                    f"{b.get('processes', 0):.0f}; main process RSS "
                    f"{fmt(a.get('idle_main_rss_kib', 0) / 1024)} vs "
                    f"{fmt(b.get('idle_main_rss_kib', 0) / 1024)} MiB; PSS (shared pages counted "
                    f"once) {fmt(a['idle_pss_kib'] / 1024)} vs {fmt(b['idle_pss_kib'] / 1024)} MiB, "
                    f"ratio {fmt_ratio(a['idle_pss_kib'] / b['idle_pss_kib'])}")
        if sc.get("app_import_s"):
            imp = sc["app_import_s"]
            over = {i: sc[i]["median"].get("startup_s") for i in IMPLS}
            notes.append(
                f"{name} the app's own import (python -c 'import {SCENARIOS[name]['app']}', "
                f"median of 3) takes {imp:.2f} s; launch to first result is that "
                + " and ".join(f"{'+' if (over[i] or 0) >= imp else '-'}"
                               f"{abs((over[i] or 0) - imp) * 1000:.0f} ms for {i}"
                               for i in IMPLS if over[i] is not None))
        if kind == "latency":
            rows.append(["", "  (to result)", "", "",
                         fmt_ratio(ratio(sc["celeriac"]["median"].get("result_p50_ms"),
                                         sc["celery"]["median"].get("result_p50_ms"))),
                         fmt_ratio(ratio(sc["celeriac"]["median"].get("result_p99_ms"),
                                         sc["celery"]["median"].get("result_p99_ms"))), "", ""])
        rows.append(None)
    meta = results["meta"]
    load = lambda xs: "/".join(f"{x:.1f}" for x in xs)  # noqa: E731
    title = (f"{meta['date']}, {meta['machine']}, load average {load(meta['loadavg_start'])} at "
             f"start, {load(meta.get('loadavg_end', []))} at end; {meta['celeriac_version']} vs "
             f"Celery {meta['celery_version']}, redis-server {meta['redis_server']}"
             + (", --quick" if meta["quick"] else ""))
    widths = [max(len(r[i]) for r in rows if r) for i in range(len(head))]
    lines = []
    for r in rows:
        if r is None:
            lines.append("")
            continue
        lines.append("  ".join(c.ljust(widths[i]) if i < 3 else c.rjust(widths[i])
                               for i, c in enumerate(r)).rstrip())
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(0, title)
    s6 = results["scenarios"].get("S6")
    if s6 is not None:
        j = s6.get("json") or {}
        if "skipped" in s6:
            lines.append(f"S6 locks: skipped - {s6['skipped']}")
        elif j.get("celeriac_drop") and j.get("redis_py"):
            b, lim = j["redis_py"], j["two_rtt_limit"]
            lines.append("S6 locks, uncontended acquire+release cycles/s (scripts/bench-locks.sh, "
                         "its own medians):")
            for label, a in (("guard dropped", j["celeriac_drop"]),
                             ("release() awaited", j["celeriac_release"])):
                lines.append(f"  celeriac, {label}: {fmt(a)}   redis-py {fmt(b)}   ratio c/r "
                             f"{fmt_ratio(a / b)}   {100 * a / lim:.0f}% of the two-round-trip "
                             f"limit {fmt(lim)}")
            lines.append(f"  contended handoff p50/p99: celeriac {j['handoff_celeriac_p50_ms']:.2f}"
                         f" / {j['handoff_celeriac_p99_ms']:.2f} ms   redis-py "
                         f"{j['handoff_redis_py_p50_ms']:.1f} / {j['handoff_redis_py_p99_ms']:.1f} ms")
        else:
            lines.append("S6 locks (scripts/bench-locks.sh): " + json.dumps(j))
    lines.append("")
    lines.append("tasks/s: S1/S2 first-to-last completion of a pre-filled queue; S3 from the start "
                 "of pushing by 4 producers to the last completion.")
    lines.append("p50/p99: S1-S3 gap between consecutive completions; S4 submit-to-start "
                 "(task-started event), and submit-to-result on the '(to result)' line.")
    lines.append("RSS: peak of the worker's whole process tree (S5: idle tree after the first "
                 "task). start-up: launch to first stored result. Values are medians over runs.")
    lines.extend(notes)
    return "\n".join(lines)


def svg(results: dict) -> str:
    """One horizontal bar per metric: how many times better celeriac is (log scale)."""
    bars = []
    for name, sc in results["scenarios"].items():
        if name == "S6" or "celeriac" not in sc:
            continue
        a, b = sc["celeriac"]["median"], sc["celery"]["median"]
        kind = sc["kind"]
        if kind in ("throughput", "saturation"):
            bars.append((f"{name} tasks/s", a.get("rate"), b.get("rate"), True, "/s"))
        if kind == "latency":
            bars.append((f"{name} submit-to-start p50", a.get("start_p50_ms"),
                         b.get("start_p50_ms"), False, " ms"))
            bars.append((f"{name} submit-to-result p50", a.get("result_p50_ms"),
                         b.get("result_p50_ms"), False, " ms"))
        if kind == "footprint":
            bars.append((f"{name} idle RSS", (a.get("idle_rss_kib") or 0) / 1024 or None,
                         (b.get("idle_rss_kib") or 0) / 1024 or None, False, " MiB"))
            bars.append((f"{name} launch to first result", (a.get("startup_s") or 0) * 1000,
                         (b.get("startup_s") or 0) * 1000, False, " ms"))
    s6 = (results["scenarios"].get("S6") or {}).get("json") or {}
    if s6.get("celeriac_drop") and s6.get("redis_py"):
        bars.append(("S6 lock cycles/s (drop)", s6["celeriac_drop"], s6["redis_py"], True, "/s"))
        bars.append(("S6 lock cycles/s (release())", s6["celeriac_release"], s6["redis_py"],
                     True, "/s"))
        bars.append(("S6 lock handoff p50", s6["handoff_celeriac_p50_ms"],
                     s6["handoff_redis_py_p50_ms"], False, " ms"))
    bars = [x for x in bars if x[1] and x[2]]
    import math

    W, left, row = 760, 230, 34
    H = 70 + row * max(1, len(bars)) + 30
    top = max([math.log10(max(1.0, (x[1] / x[2]) if x[3] else (x[2] / x[1]))) for x in bars] +
              [1.0])
    top = math.ceil(top)
    scale = (W - left - 150) / top
    esc = lambda s: s.replace("&", "&amp;").replace("<", "&lt;")  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="10" y="20" font-size="15" font-weight="bold">celeriac vs Python Celery '
           f'{esc(results["meta"]["celery_version"])}: times better (log scale)</text>',
           f'<text x="10" y="38" fill="#555">{esc(results["meta"]["date"])}, '
           f'{esc(results["meta"]["machine"])}{", --quick" if results["meta"]["quick"] else ""}'
           f'</text>']
    y0 = 55
    for d in range(top + 1):
        x = left + d * scale
        out.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{H - 25}" stroke="#ddd"/>')
        out.append(f'<text x="{x:.1f}" y="{H - 10}" text-anchor="middle" fill="#555">'
                   f'{10 ** d:,}x</text>')
    for k, (label, a, b, higher, unit) in enumerate(bars):
        f = a / b if higher else b / a
        y = y0 + 8 + k * row
        w = max(1.0, math.log10(f) * scale) if f >= 1 else 1.0
        color = "#2a7d4f" if f >= 1 else "#b23b3b"
        out.append(f'<text x="{left - 8}" y="{y + 14}" text-anchor="end">{esc(label)}</text>')
        out.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="20" fill="{color}"/>')
        out.append(f'<text x="{left + w + 6:.1f}" y="{y + 14}">{esc(fmt_ratio(f))}  '
                   f'({fmt(a)} vs {fmt(b)}{esc(unit)})</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def machine() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs {model}".strip()


def app_import_s(app: str, url: str, runs: int = 3) -> float:
    """Median wall time of `python -c "import APP"` in the app's directory: what any worker
    pays before it can serve the app's first task."""
    env = dict(os.environ, CELERY_BROKER_URL=url, CELERY_RESULT_BACKEND=url,
               PYTHONDONTWRITEBYTECODE="1")
    times = []
    for _ in range(runs):
        t = time.time()
        subprocess.run([sys.executable, "-c", f"import {app}"], cwd=APPDIR, env=env,
                       check=True, timeout=120)
        times.append(time.time() - t)
    return statistics.median(times)


def main_bench(args):
    import celery  # noqa: E402

    os.makedirs(args.out, exist_ok=True)
    ctx = Ctx(args)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    # SIGINT too: as a background job of a script the driver would otherwise inherit it ignored.
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, on_signal)
    wanted = [s.upper() for s in args.scenarios] or ALL
    unknown = [s for s in wanted if s not in ALL]
    if unknown:
        raise SystemExit(f"unknown scenario(s): {' '.join(unknown)} (known: {' '.join(ALL)})")
    celeriac_ver = subprocess.run([args.celeriac, "--version"], capture_output=True,
                                  text=True, timeout=10).stdout.strip()
    redis_ver = ctx.r.info("server").get("redis_version")
    results = {
        "meta": {
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(), "loadavg_start": os.getloadavg(), "quick": args.quick,
            "celeriac_version": celeriac_ver, "celery_version": celery.__version__,
            "redis_server": redis_ver, "python": platform.python_version(),
            "runs": args.runs,
        },
        "scenarios": {},
    }
    try:
        for name in [s for s in ALL if s in wanted]:
            if name == "S6":
                log("== S6 locks")
                results["scenarios"]["S6"] = run_locks(ctx)
                continue
            sc = SCENARIOS[name]
            runner = RUNNERS[sc["kind"]]
            entry = {"title": sc["title"], "kind": sc["kind"],
                     "flags": {i: ctx.flags(name, i) for i in IMPLS},
                     "celeriac": {"runs": []}, "celery": {"runs": []}}
            results["scenarios"][name] = entry
            log(f"== {sc['title']}")
            for run in range(args.runs):
                for impl in IMPLS:
                    # Python Celery in JWQL mode is capped by time: one run is all it gets.
                    if impl == "celery" and "celery_cap" in sc and run > 0:
                        continue
                    t = time.time()
                    fig = runner(ctx, name, impl, run)
                    fig["wall_s"] = round(time.time() - t, 2)
                    entry[impl]["runs"].append(fig)
                    log(f"  run {run + 1} {impl:8s} " + ", ".join(
                        f"{k}={fmt(v) if isinstance(v, float) else v}" for k, v in fig.items()))
            for impl in IMPLS:
                entry[impl]["median"] = summarize(entry[impl]["runs"])
            if sc.get("measure_import"):
                entry["app_import_s"] = app_import_s(sc["app"], ctx.url)
    finally:
        ctx.cleanup()
    results["meta"]["loadavg_end"] = os.getloadavg()
    for name, sc in results["scenarios"].items():
        if name == "S6":
            continue
        a, b = sc["celeriac"]["median"], sc["celery"]["median"]
        sc["ratio_celeriac_over_celery"] = {
            k: ratio(a.get(k), b.get(k)) for k in MEDIAN_KEYS
            if a.get(k) is not None and b.get(k) is not None}
    text = table(results)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for path in (os.path.join(args.out, f"bench-{stamp}.json"), os.path.join(args.out, "latest.json")):
        with open(path, "w") as f:
            json.dump(results, f, indent=2)
    chart = svg(results)
    for path in (os.path.join(args.out, f"bench-{stamp}.svg"), os.path.join(args.out, "latest.svg")):
        with open(path, "w") as f:
            f.write(chart)
    with open(os.path.join(args.out, "latest.txt"), "w") as f:
        f.write(text + "\n")
    print(text)
    log(f"\nwrote {os.path.join(args.out, f'bench-{stamp}.json')} and .svg "
        f"(also latest.json, latest.svg, latest.txt)")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "produce":
        p = argparse.ArgumentParser(prog="driver.py produce")
        p.add_argument("produce")
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--template", required=True)
        p.add_argument("--tag", type=int, required=True)
        p.add_argument("--start", type=int, required=True)
        p.add_argument("--count", type=int, required=True)
        p.add_argument("--batch", type=int, default=100)
        producer_main(p.parse_args())
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True, help="private redis-server port (127.0.0.1)")
    p.add_argument("--celeriac", required=True, help="path of the release celeriac binary")
    p.add_argument("--out", required=True, help="output directory (JSON, SVG, logs)")
    p.add_argument("--quick", action="store_true", help="smaller N for a fast check")
    p.add_argument("--runs", type=int, default=3, help="runs per scenario and worker (median)")
    p.add_argument("--pids", help="file listing the process groups started (for a trap)")
    p.add_argument("--profile", action="store_true",
                   help="sample every celeriac worker with perf; flat reports under OUT/profile")
    p.add_argument("--n", action="append", default=[], metavar="S=N",
                   help="task count for a scenario, e.g. --n S2=10000 (repeatable)")
    p.add_argument("scenarios", nargs="*", help=f"subset of {' '.join(ALL)} (default: all)")
    args = p.parse_args()
    if args.runs < 1:
        raise SystemExit("--runs must be at least 1")
    for item in args.n:
        name, _, count = item.partition("=")
        name = name.upper()
        if name not in SCENARIOS or not count.isdigit() or int(count) < 2:
            raise SystemExit(f"--n {item}: want S1..S9 (not S6)=COUNT (COUNT >= 2)")
        SCENARIOS[name]["n"] = SCENARIOS[name]["quick_n"] = int(count)
    try:
        main_bench(args)
    except KeyboardInterrupt as e:
        log(f"interrupted ({e or 'SIGINT'}); workers stopped")
        sys.exit(130)


if __name__ == "__main__":
    main()
