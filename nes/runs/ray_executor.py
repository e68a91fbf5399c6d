"""Ray executor: retrain jobs become Ray tasks; the driver relays their progress to the store.

Same interface as the local executor: jobs are rows in the store, submitted with
`executor="ray"`. `run_ray_jobs` is the driver loop: it starts local workers for the other steps
(`launch_ready`), turns every ready retrain job into a Ray task (`num_cpus` / `num_gpus` from the
job config), drains the tasks' progress messages from a Ray queue into the store (only the driver
writes to the database, so workers on other machines need no access to it; they do need the run
folder, e.g. on a shared filesystem), and cancels a task when its job's cancel flag is set.
`ray` is an optional dependency (`pip install -r requirements-ray.txt`).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

from .jobs import launch_ready, ready_jobs
from .store import Store, StoreError
from .tasks import TASKS


def _retrain_in_ray(job_id: int, run_id: str, config: dict, queue: Any) -> dict:
    """Runs inside a Ray worker: threads sized to the CPUs Ray gave the task."""
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    os.environ["NES_THREADS"] = str(max(1, int(cpus)))  # read by configure_threads when the task starts

    def progress(step: int, total: int, metrics: dict) -> None:
        clean = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        queue.put((job_id, step, total, clean))

    return TASKS["retrain"](Path(run_id), config, progress, config.get("device"))


def _init(address: str | None, num_cpus: int | None) -> None:
    try:
        import ray
    except ImportError:
        raise StoreError("the ray executor needs Ray: `pip install -r requirements-ray.txt`") from None
    if not ray.is_initialized():
        root = str(Path(__file__).resolve().parents[2])
        ray.init(address=address, num_cpus=num_cpus if address is None else None, include_dashboard=False,
                 log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": root, "NES_NO_PROGRESS": "1"}})


def _record(store: Store, ref: Any, job_id: int, attempt: int) -> None:
    """A finished Ray task's outcome, written only while its attempt is the job's current one."""
    import ray
    from ray.exceptions import RayTaskError, TaskCancelledError, WorkerCrashedError

    try:
        fields = {"status": "done", "result": ray.get(ref), "error": None}
    except TaskCancelledError:
        fields = {"status": "cancelled",
                  "error": "cancelled by request; `jobs resume` continues from the last checkpoint"}
    except (RayTaskError, WorkerCrashedError) as e:
        fields = {"status": "failed", "error": str(e).splitlines()[-1][:2000]}
    store.update_attempt(job_id, attempt, finished=time.time(), **fields)


def run_ray_jobs(store: Store, job_ids: Sequence[int] | None = None, address: str | None = None,
                 num_cpus: int | None = None, poll: float = 0.5) -> None:
    """Drive jobs until every job in `job_ids` (default: all queued/running Ray jobs) has ended."""
    import ray
    from ray.util.queue import Empty, Queue

    _init(address, num_cpus)
    remote = ray.remote(_retrain_in_ray)
    queue = Queue()
    inflight: dict[Any, tuple[int, int]] = {}  # task ref -> (job id, attempt)

    def drain() -> set:
        """Move queued progress messages into the store; returns refs of tasks to cancel."""
        cancel_refs = set()
        while True:
            try:
                job_id, step, total, metrics = queue.get_nowait()
            except Empty:
                return cancel_refs
            if store.report(job_id, step, total, metrics).cancel:
                cancel_refs |= {r for r, (i, _) in inflight.items() if i == job_id}

    if job_ids is None:
        job_ids = [j.id for j in store.jobs() if j.executor == "ray" and j.status in ("queued", "running")]
    try:
        while True:
            launch_ready(store)
            for j in ready_jobs(store, "ray"):
                attempt = store.start_attempt(j.id, "queued", host="ray", started=time.time(),
                                              heartbeat=time.time(), pid=None)
                if attempt is None:
                    continue
                ref = remote.options(num_cpus=float(j.config.get("num_cpus", 1)),
                                     num_gpus=float(j.config.get("num_gpus", 0))).remote(j.id, j.run_id, j.config, queue)
                inflight[ref] = (j.id, attempt)
            for r in drain():
                ray.cancel(r)
            if inflight:
                done, _ = ray.wait(list(inflight), num_returns=len(inflight), timeout=poll)
            else:
                done = []
                time.sleep(poll)
            drain()  # a finished task's messages are all queued by now (put is synchronous)
            for ref in done:
                _record(store, ref, *inflight.pop(ref))
            states = [store.job(i).status for i in job_ids]
            if not inflight and all(s in ("done", "failed", "cancelled") for s in states):
                return
    finally:
        for ref, (job_id, attempt) in inflight.items():  # driver stopped: tasks are lost, mark them resumable
            ray.cancel(ref, force=True)
            store.update_attempt(job_id, attempt, status="failed", finished=time.time(),
                                 error="the Ray driver stopped; `jobs resume` continues from the last checkpoint")
