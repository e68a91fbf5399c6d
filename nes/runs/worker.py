"""The worker process: `python -m nes worker JOB_ID` runs one job of the store.

It streams progress, heartbeats and metrics to the store, checks for a cancel request at every
progress report, records the outcome, and on exit launches whatever became ready
(`nes.runs.jobs.launch_ready`), so a pipeline runs to the end without a scheduler process.
"""
from __future__ import annotations

import os
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from ..runtime import configure_threads
from .jobs import launch_ready
from .store import Store, StoreError, this_host
from .tasks import TASKS

HEARTBEAT_SECONDS = 2.0
REPORT_EVERY_SECONDS = 0.5  # progress rows are rate-limited; epoch-end reports always go through


class Cancelled(Exception):
    """Raised inside a job's progress callback when a cancel was requested."""


class Reporter:
    """The progress callback a job runs with: rate-limited store writes + cancel check."""

    def __init__(self, store: Store, job_id: int):
        self.store, self.job_id = store, job_id
        self.last = 0.0

    def __call__(self, step: int, total: int, metrics: dict[str, Any]) -> None:
        now = time.time()
        epoch_end = any(k.startswith(("test_", "val_acc")) for k in metrics)
        if now - self.last < REPORT_EVERY_SECONDS and not epoch_end and step < total:
            return
        self.last = now
        if self.store.report(self.job_id, step, total, metrics):
            raise Cancelled()


def run_worker(job_id: int, store: Store | None = None) -> int:
    """Body of `python -m nes worker JOB_ID`: run the job, record the outcome, launch what's next."""

    store = store or Store()
    job = store.job(job_id)
    if job.status != "running":
        # started by hand (e.g. while debugging): claim it now
        if not store.claim(job_id, job.status, status="running", started=time.time(), attempts=job.attempts + 1):
            raise StoreError(f"job {job_id} is {job.status}; resume it with `python -m nes jobs resume {job_id}`")
    store.update_job(job_id, pid=os.getpid(), host=this_host(), heartbeat=time.time())
    configure_threads()
    stop = threading.Event()

    def beat() -> None:
        hb = Store(store.home)
        while not stop.wait(HEARTBEAT_SECONDS):
            try:
                hb.heartbeat(job_id)
            except Exception:  # a transient lock must not kill the worker; the next beat retries
                pass
        hb.close()

    threading.Thread(target=beat, daemon=True).start()
    status, error, result = "done", None, None
    try:
        result = TASKS[job.kind](Path(job.run_id), job.config, Reporter(store, job_id), job.config.get("device"))
    except Cancelled:
        status, error = "cancelled", "cancelled by request; `jobs resume` continues from the last checkpoint"
    except Exception as e:  # the job failed: record why; the worker itself exits normally
        status = "failed"
        error = f"{type(e).__name__}: {e}\n" + "".join(traceback.format_exc(limit=-4))
    finally:
        stop.set()
    store.update_job(job_id, status=status, error=error, result=result, finished=time.time())
    launch_ready(store)
    return 0 if status == "done" else 1
