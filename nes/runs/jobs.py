"""Background jobs: submit, launch worker processes, heartbeats, cancel, crash detection, resume.

A job is a row in the store (`nes.runs.store`). `launch_ready` starts a worker process
(`python -m nes worker JOB_ID`, `nes.runs.worker`) for every queued job whose dependencies are
done, within the local concurrency limit, and hands each worker a number of cores (its torch
threads). The cores are shared: idle ones are lent to running workers and taken back when another
job has to start; a worker changes its thread count at its next progress report. A worker streams
progress, heartbeats and metrics to the store and on exit launches whatever became ready, so a
pipeline runs to the end without a scheduler process. A worker that died (its pid is gone, or
it has not beaten for `stale_seconds()`) is marked failed by `reap`, and a frozen one is killed;
`resume` queues it again and the step continues from its last checkpoint. Staleness is read from
the row (`Job.quiet`, on the host's monotonic clock), so every look at the jobs reaps: `jobs
list/show/cancel/resume` from a CLI that lives one second as well as the app's refresh. Each start
is a new attempt (the row's `attempts` counter, handed to the worker as `--attempt`): an old
worker that wakes up after its job was started again writes nothing (`nes.runs.fence`). Workers this process started are waited for whenever `reap` or
`launch_ready` runs, so none stays a zombie.

Executors: `local` (default) and `ray` (`nes.runs.ray_executor`; retrain jobs become Ray tasks).
The whole method as dependent jobs: `nes.runs.pipeline`.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from ..layout import RunDir
from ..runtime import available_cores
from .store import JOB_KINDS, Job, Store, StoreError, this_host

STALE_SECONDS = 60.0  # a worker beats every 2 s; NES_STALE_SECONDS overrides this
LAUNCH_SECONDS = 30.0  # how long a starting worker may take to write its pid and first beat


def stale_seconds() -> float:
    """How long a local worker may go without a heartbeat before it counts as frozen."""
    env = os.environ.get("NES_STALE_SECONDS")
    if not env:
        return STALE_SECONDS
    try:
        value = float(env)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise StoreError(f"NES_STALE_SECONDS={env!r}: expected a number of seconds > 0")
    return value


def max_workers() -> int:
    env = os.environ.get("NES_MAX_WORKERS")
    return max(1, int(env)) if env else available_cores()


def submit(store: Store, run: str, kind: str, config: dict, deps: Sequence[int] = (), executor: str = "local",
           launch: bool = True) -> int:
    """Queue a job on run `run` (registered if new) and start it if it can start."""
    if kind not in JOB_KINDS:
        raise StoreError(f"unknown job kind {kind!r}; known kinds: {', '.join(JOB_KINDS)}")
    if executor not in ("local", "ray"):
        raise StoreError(f"unknown executor {executor!r}; choose local or ray")
    run_id = store.register_run(run)
    job_id = store.add_job(run_id, kind, config, deps, executor)
    if launch:
        launch_ready(store)
    return job_id


# ---------------------------------------------------------------------------------------------
# Liveness
# ---------------------------------------------------------------------------------------------
def runs_on(job: Job) -> str:
    """Only retrain jobs go to Ray; every other step of a pipeline runs in a local worker."""
    return "ray" if job.executor == "ray" and job.kind == "retrain" else "local"


def pid_alive(pid: int | None) -> bool:
    """True if `pid` is a live (non-zombie) NES worker process on this host. A pid that is no process
    id (0, -1 of a damaged row: kill would signal a whole group or every process) is not."""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: /proc says whether it is a worker
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return False
        return is_worker_cmdline(Path(f"/proc/{pid}/cmdline").read_bytes())
    except (OSError, IndexError):
        return True  # no /proc (macOS): trust kill(0)


def is_worker_cmdline(raw: bytes) -> bool:
    """Whether /proc/PID/cmdline content `raw` can be one of our workers.

    Empty counts as yes: right after the launcher's fork/exec returns, the kernel has not yet set
    up the new program's argument area, and cmdline reads empty for a moment. On a busy 1-core
    machine the launcher's own reap can land in that window; treating it as "gone" marked live
    workers failed. (A frozen or foreign process is still caught by the heartbeat check.)"""
    if not raw:
        return True
    return b"worker" in raw.split(b"\0")  # a recycled pid belongs to some other program


# job id -> (heartbeat value, pid, monotonic time this process first saw that pair): how quiet a
# row without a monotonic beat (written by an older version) is, as far as this process watched.
# Wall-clock stamps written by another process are never compared: a VM whose wall clock steps
# forward must not turn every live worker into a "dead" one.
_watch: dict[int, tuple[float | None, int | None, float]] = {}


def _unchanged_for(j: Job) -> float:
    """Seconds (monotonic, in this process) for which job j's heartbeat and pid have not changed."""
    now = time.monotonic()
    seen = _watch.get(j.id)
    if seen is None or seen[:2] != (j.heartbeat, j.pid):
        _watch[j.id] = (j.heartbeat, j.pid, now)
        return 0.0
    return now - seen[2]


def kill_worker(pid: int) -> None:
    """SIGKILL a reaped worker on this host (its process group: launched workers lead their own);
    nothing when the pid is not one of our workers (gone, recycled, or a damaged row's)."""
    if not pid_alive(pid):
        return
    try:
        if hasattr(os, "killpg") and os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def dead_because(j: Job) -> tuple[str, bool] | None:
    """Why running job j's local worker counts as dead, and whether it is a live process to kill (a
    frozen one); None while it lives. Frozen: its heartbeat thread has not beaten for stale_seconds()
    (stopped with SIGSTOP, say; a hung job still beats, so it is not reaped)."""
    if j.pid is None:  # being launched: the launcher writes the pid next
        quiet = _unchanged_for(j)
        return (f"worker died (no pid {quiet:.0f} s after its start)", False) if quiet > LAUNCH_SECONDS else None
    if not isinstance(j.pid, int) or isinstance(j.pid, bool) or j.pid <= 0:
        return f"damaged row: pid {j.pid!r} is not a process id, no worker can be watched", False
    if not pid_alive(j.pid):
        return f"worker died (pid {j.pid} is gone)", False
    quiet, limit = j.quiet(), stale_seconds()
    if quiet is None:  # no beat of this attempt yet (starting: imports take seconds on a busy machine), or
        quiet, limit = _unchanged_for(j), max(limit, LAUNCH_SECONDS)  # an older version's row: as watched here
    if quiet > limit:
        return f"worker stopped answering (no heartbeat for {quiet:.0f} s)", True
    return None


def reap(store: Store, run_id: str | None = None) -> list[int]:
    """Mark running jobs of this host whose worker died or froze as failed (fenced by their attempt, so
    a job started again meanwhile is left alone); returns their ids. A frozen worker is killed once its
    job is marked failed; were it to wake first, its attempt is fenced."""
    poll_children()
    dead = []
    for j in store.jobs(run_id):
        if j.status != "running" or runs_on(j) != "local" or j.host not in (None, this_host()):
            _watch.pop(j.id, None)
            continue
        verdict = dead_because(j)
        if verdict is None:
            continue
        why, frozen = verdict
        error = f"{why}; `python -m nes jobs resume {j.id}` continues from the last checkpoint"
        if store.update_attempt(j.id, j.attempts, status="failed", finished=time.time(), error=error):
            dead.append(j.id)
            if frozen:
                kill_worker(j.pid)
        _watch.pop(j.id, None)
    return dead


# ---------------------------------------------------------------------------------------------
# Launching
# ---------------------------------------------------------------------------------------------
def ready_jobs(store: Store, executor: str = "local") -> list[Job]:
    """Queued jobs whose dependencies are all done. A failed/cancelled dependency fails the job."""
    jobs = {j.id: j for j in store.jobs()}
    ready = []
    for j in jobs.values():
        if j.status != "queued" or runs_on(j) != executor:
            continue
        dep_status = [jobs[d].status if d in jobs else "missing" for d in j.deps]
        bad = [d for d, s in zip(j.deps, dep_status) if s in ("failed", "cancelled", "missing")]
        if j.damaged:
            store.claim(j.id, "queued", status="failed", error=f"{j.damaged}; submit the job again",
                        finished=time.time())
            continue
        if bad:
            store.claim(j.id, "queued", status="failed",
                        error=f"dependency job(s) {', '.join(map(str, bad))} did not finish; resume them, then this one",
                        finished=time.time())
            continue
        if all(s == "done" for s in dep_status):
            ready.append(j)
    return ready


_children: list[subprocess.Popen] = []  # workers this process started (polled so none stays a zombie)


def poll_children() -> int:
    """Wait for the workers this process started that have ended (no zombies pile up in a long-lived
    app process: no SIGCHLD handler, just a poll wherever the store is looked at); returns how many run."""
    _children[:] = [p for p in _children if p.poll() is None]
    return len(_children)


def worker_env(cores: int) -> dict[str, str]:
    env = dict(os.environ)
    env["NES_THREADS"] = str(cores)
    env["NES_NO_PROGRESS"] = "1"
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _start_worker(store: Store, j: Job, cores: int) -> bool:
    """Claim job j as a new attempt and start its worker process; False if another launcher got it."""
    attempt = store.start_attempt(j.id, "queued", cores=cores, started=time.time(), error=None, pid=None,
                                  host=this_host(), heartbeat=time.time(), beat=None)
    if attempt is None:
        return False
    log = RunDir(j.run_id).job_log(j.id)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "nes", "worker", str(j.id), "--attempt", str(attempt)],
                                stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                env={**worker_env(cores), "NES_HOME": str(store.home)}, start_new_session=True)
    _children.append(proc)
    store.update_attempt(j.id, attempt, pid=proc.pid)
    return True


def launch_ready(store: Store) -> list[int]:
    """Start workers for ready local jobs within the limits; returns the started job ids.

    Cores are shared among the local workers, so none sits idle while a worker could use it: a job
    that has to wait for cores takes back what was lent to the running workers (each keeps at least
    its fair share), and cores that no waiting job needs are lent to the running ones
    (`share_cores`). A worker applies a new grant at its next progress report."""
    reap(store)
    total = available_cores()
    running = _local_running(store)
    ready = ready_jobs(store, "local")[: max(0, max_workers() - len(running))]
    if ready and total - sum(j.cores for j in running) < len(ready):
        share_cores(store, running, total, len(running) + len(ready))
        running = _local_running(store)
    free = total - sum(j.cores for j in running)
    started = []
    for i, j in enumerate(ready):
        if free < 1:
            break
        cores = max(1, free // (len(ready) - i))  # share what is free among the ones starting
        if _start_worker(store, j, cores):
            free -= cores
            started.append(j.id)
    if free > 0 and len(started) == len(ready):  # nothing waits: lend the idle cores
        running = _local_running(store)
        share_cores(store, running, total, len(running))
    poll_children()
    return started


def _local_running(store: Store) -> list[Job]:
    return [j for j in store.jobs() if j.status == "running" and runs_on(j) == "local"]


def share_cores(store: Store, running: list[Job], total: int, among: int) -> None:
    """Grant the running local workers an even share of `total` cores split `among` that many workers
    (the running ones plus those about to start); the first ones get the remainder."""
    if not running or among < 1:
        return
    share, extra = divmod(total, among)
    for i, j in enumerate(sorted(running, key=lambda j: j.id)):
        cores = max(1, share + (1 if i < extra else 0))
        if cores != j.cores:
            store.update_attempt(j.id, j.attempts, cores=cores)


# ---------------------------------------------------------------------------------------------
# Control
# ---------------------------------------------------------------------------------------------
def cancel(store: Store, job_id: int) -> str:
    """Cancel a queued job at once, or ask a running one to stop at its next progress report. A running
    job whose worker is dead or frozen would never read the request: it is reaped (failed, resumable,
    its frozen worker killed) and the answer says so."""
    if job_id in reap(store):
        return "ended: " + (store.job(job_id).error or "its worker was gone").splitlines()[0]
    j = store.job(job_id)
    if j.status == "queued":
        store.claim(job_id, "queued", status="cancelled", finished=time.time(), error="cancelled before it started")
        return "cancelled"
    if j.status == "running":
        store.update_job(job_id, cancel_requested=1)
        return "cancel requested"
    raise StoreError(f"job {job_id} is already {j.status}")


def resume(store: Store, job_id: int, launch: bool = True) -> None:
    """Queue a failed or cancelled job again, with the jobs that were failed because of it."""
    reap(store)
    j = store.job(job_id)
    if j.status not in ("failed", "cancelled"):
        raise StoreError(f"job {job_id} is {j.status}; only failed or cancelled jobs can be resumed")
    if not store.claim(job_id, j.status, status="queued", error=None, cancel_requested=0, pid=None, finished=None):
        raise StoreError(f"job {job_id} changed while resuming; see `python -m nes jobs show {job_id}`")
    # jobs that failed only because this one (or, transitively, one of them) did not finish wait again
    requeued, changed = {job_id}, True
    while changed:
        changed = False
        for other in store.jobs(j.run_id):
            if (other.status == "failed" and requeued & set(other.deps)
                    and (other.error or "").startswith("dependency")):
                store.update_job(other.id, status="queued", error=None, finished=None)
                requeued.add(other.id)
                changed = True
    if launch:
        launch_ready(store)


def wait(store: Store, job_ids: Sequence[int], poll: float = 1.0, on_poll=None) -> list[Job]:
    """Block until every job is done/failed/cancelled, re-launching ready ones as they appear."""
    while True:
        launch_ready(store)
        jobs = [store.job(i) for i in job_ids]
        if on_poll is not None:
            on_poll(jobs)
        if all(j.status in ("done", "failed", "cancelled") for j in jobs):
            return jobs
        time.sleep(poll)


