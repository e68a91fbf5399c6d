"""The worker process: `python -m nes worker JOB_ID --attempt N` runs one attempt of one job of the store.

It streams progress, heartbeats and metrics to the store, checks for a cancel request at every
progress report, records the outcome, and on exit launches whatever became ready
(`nes.runs.jobs.launch_ready`), so a pipeline runs to the end without a scheduler process.
Every write is fenced by the attempt number (`nes.runs.fence`): a worker whose attempt is no
longer the job's current one (it was frozen, reaped and the job started again) stops at its next
write and leaves the row and the run folder to the newer worker.
"""
from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from ..artifacts import set_write_guard
from ..runtime import configure_threads, torch_threads
from .fence import Attempt, RunFolderGone, remove_stale_temps
from .jobs import launch_ready
from .store import StaleAttempt, Store, StoreError, stamp, this_host
from .tasks import TASKS

HEARTBEAT_SECONDS = 2.0
REPORT_EVERY_SECONDS = 0.5  # progress rows are rate-limited; epoch-end reports always go through
EXIT_STALE = 3  # this worker's attempt was superseded; it wrote nothing


class Cancelled(Exception):
    """Raised inside a job's progress callback when a cancel was requested."""


class Reporter:
    """The progress callback a job runs with: rate-limited, fenced store writes + cancel check, and
    the thread count following the cores the launchers grant (`nes.runs.jobs.share_cores`)."""

    def __init__(self, attempt: Attempt):
        self.attempt = attempt
        self.last = 0.0

    def __call__(self, step: int, total: int, metrics: dict[str, Any]) -> None:
        now = time.time()
        epoch_end = any(k.startswith(("test_", "val_acc")) for k in metrics)
        if now - self.last < REPORT_EVERY_SECONDS and not epoch_end and step < total:
            return
        self.last = now
        reply = self.attempt.report(step, total, metrics)
        if reply.cancel:
            raise Cancelled()
        follow_grant(reply.cores)


def follow_grant(cores: int) -> None:
    """Set torch's threads to the granted cores (called on the thread that computes)."""
    before = torch_threads()
    if cores >= 1 and cores != before:
        configure_threads(cores)
        print(f"worker: {before} -> {cores} threads (cores granted by the launcher)", file=sys.stderr, flush=True)


def _own(store: Store, job_id: int, attempt: int | None) -> int:
    """The attempt this process runs: the launcher's (`--attempt`), or a new one when started by hand."""
    job = store.job(job_id)
    if attempt is not None:
        return attempt
    if job.status == "running":
        raise StoreError(f"job {job_id} is already running (pid {job.pid}); cancel it first "
                         f"(`python -m nes jobs cancel {job_id}`)")
    new = store.start_attempt(job_id, job.status, started=time.time(), error=None, beat=None)
    if new is None:
        raise StoreError(f"job {job_id} changed while starting; see `python -m nes jobs show {job_id}`")
    return new


def _heartbeat(home: Path, job_id: int, attempt: int, stop: threading.Event) -> None:
    """Beat every HEARTBEAT_SECONDS while the attempt is current (a superseded one stops beating)."""
    hb = Store(home)
    while not stop.wait(HEARTBEAT_SECONDS):
        try:
            if not hb.heartbeat(job_id, attempt):
                break
        except Exception:  # a transient lock must not kill the worker; the next beat retries
            pass
    hb.close()


def _execute(job, att: Attempt) -> tuple[str, str | None, Any]:
    """Run the task → (status, error, result). StaleAttempt passes through (nothing may be recorded).
    A damaged row (an unknown kind, a config that does not parse) is not run: it fails, saying why."""
    if job.damaged:
        return "failed", f"{job.damaged}; submit the job again", None
    try:
        att.check_run_folder()
        result = TASKS[job.kind](Path(job.run_id), job.config, Reporter(att), job.config.get("device"))
        att.check_run_folder()  # a folder deleted after the last write must not end as "done"
        return "done", None, result
    except StaleAttempt:
        raise
    except Cancelled:
        return "cancelled", "cancelled by request; `jobs resume` continues from the last checkpoint", None
    except Exception as e:  # the job failed: record why; the worker itself exits normally
        why = f"{type(e).__name__}: {e}"
        try:  # a write that failed because the run folder vanished under it: name the cause, not the symptom
            att.check_run_folder()
        except RunFolderGone as gone:
            why = f"{type(gone).__name__}: {gone}"
        return "failed", why + "\n" + "".join(traceback.format_exc(limit=-4)), None


def run_worker(job_id: int, store: Store | None = None, attempt: int | None = None) -> int:
    """Body of `python -m nes worker JOB_ID`: run the job, record the outcome, launch what's next."""
    store = store or Store()
    attempt = _own(store, job_id, attempt)
    att = Attempt(store, job_id, attempt, Path(store.job(job_id).run_id))
    stop = threading.Event()
    try:
        if not att.record(pid=os.getpid(), host=this_host(), **stamp()):
            raise StaleAttempt(job_id, attempt)
        configure_threads()
        remove_stale_temps(store, job_id)
        threading.Thread(target=_heartbeat, args=(store.home, job_id, attempt, stop), daemon=True).start()
        set_write_guard(att.check_write, att.run)
        status, error, result = _execute(store.job(job_id), att)
        if not att.record(status=status, error=error, result=result, finished=time.time()):
            raise StaleAttempt(job_id, attempt)
    except StaleAttempt as e:
        print(f"{e}", file=sys.stderr)
        return EXIT_STALE
    finally:
        stop.set()
        set_write_guard(None)
    launch_ready(store)
    return 0 if status == "done" else 1
