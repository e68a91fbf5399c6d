"""Commands of background work: run (the whole pipeline as jobs), jobs, and the hidden worker / ray-driver."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

from ..config import parse_sets
from ..layout import RunDir
from ..method.regularizers import REGULARIZERS
from ..runs.jobs import cancel, reap, resume, wait, worker_env
from ..runs.pipeline import pipeline
from ..runs.tasks import PICKS
from ..runs.ray_executor import run_ray_jobs
from ..runs.store import Store, resolve_run
from ..runs.worker import run_worker
from .common import PRESETS, Command, UserError, add_data_dir, add_json, add_set


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default=None)
    p.add_argument("--preset", default="quick", choices=list(PRESETS))
    p.add_argument("--run", required=True, help="run name (in NES_HOME) or folder")
    p.add_argument("--members", type=int, default=3)
    p.add_argument("--regularizer", default="edges", choices=list(REGULARIZERS))
    p.add_argument("--pick", default="strong", choices=list(PICKS),
                   help="how the diverse members are picked, without training: strong (default), the most distant of "
                        "those the one-shot estimate puts within 2 points of α*; spread, evenly over the diversity axis "
                        "(weaker members, more diversity); or predicted, forward selection of the ensemble NLL predicted "
                        "from one-shot probabilities")
    p.add_argument("--executor", default="local", choices=["local", "ray"])
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local one)")
    p.add_argument("--ray-cpus", type=float, default=1.0, help="CPUs per member task (ray executor)")
    p.add_argument("--ray-gpus", type=float, default=0.0, help="GPUs per member task (ray executor), e.g. 0.25")
    p.add_argument("--detach", action="store_true", help="return at once; workers carry on")
    add_set(p, "SearchConfig")
    add_data_dir(p)


def _job_row(j) -> dict[str, Any]:
    return {"id": j.id, "kind": j.kind, "status": j.status, "pid": j.pid, "progress": round(j.progress, 4),
            "step": j.step, "total": j.total, "executor": j.executor, "deps": j.deps,
            "name": j.config.get("name"), "error": (j.error or "").splitlines()[0] if j.error else None,
            "damaged": j.damaged}


def _out(text: str) -> None:
    """Write a command's output. A reader that went away (`jobs list | head`) is not an error: the rest
    of the output goes to /dev/null and the command ends normally."""
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the flush at exit finds nowhere to fail
        os.close(devnull)


def _jobs_table(jobs) -> str:
    """The jobs as a table, one line each (a damaged row says so first)."""
    lines = [f"{'id':>4} {'kind':<13}{'status':<10}{'progress':>9} {'pid':>8}  detail"]
    for j in jobs:
        detail = j.config.get("name") or j.config.get("regularizer") or ""
        if j.error:
            detail = (detail + " — " if detail else "") + j.error.splitlines()[0][:100]
        if j.damaged:
            detail = f"!! {j.damaged}" + (f" — {detail}" if detail else "")
        lines.append(f"{j.id:>4} {j.kind:<13}{j.status:<10}{100 * j.progress:>8.1f}% {j.pid or '':>8}  {detail}")
    return "\n".join(lines)


def _follow(store: Store, ids: list[int]) -> list:
    """Wait for the jobs, printing each one's status and progress (in 5 % steps) as it changes."""
    last: dict[int, tuple] = {}

    def show(jobs) -> None:
        for j in jobs:
            key = (j.status, int(20 * j.progress))
            if last.get(j.id) != key:
                last[j.id] = key
                print(f"  job {j.id} {j.kind:<9} {j.status:<9} {100 * j.progress:5.1f}%", file=sys.stderr)

    return wait(store, ids, on_poll=show)


def _queue_pipeline(store: Store, a: argparse.Namespace) -> tuple[str, list[int]]:
    """Claim the run's name in the store (atomic: of two `run --run same` at one instant one wins, the
    other is told the name is taken), then queue the pipeline; a refusal after the claim gives the name
    back, so a refused run leaves nothing behind."""
    run = resolve_run(a.run)
    if RunDir(run).search.path.exists():
        raise UserError(f"run {run} already exists (it holds a search); pick a new --run")
    run_id = store.claim_run(run)
    try:
        sets = parse_sets(a.set)
        if a.data_dir:
            sets["data_dir"] = a.data_dir
        res = {"num_cpus": a.ray_cpus, "num_gpus": a.ray_gpus} if a.executor == "ray" else None
        return run_id, pipeline(store, run_id, a.dataset, a.preset, a.members, a.regularizer, a.executor, sets, res,
                                a.pick)
    except BaseException:
        store.release_run(run_id)
        raise


def cmd_run(a: argparse.Namespace) -> int:
    store = Store()
    run, ids = _queue_pipeline(store, a)
    print(f"run {run}: jobs {', '.join(map(str, ids))} (search → hypernet → sample → {a.members} members → evaluate)")
    if a.executor == "ray" and a.detach:
        subprocess.Popen([sys.executable, "-m", "nes", "ray-driver", *map(str, ids)], start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=worker_env(1))
    if a.detach:
        print(f"detached; follow with `python -m nes jobs list --run {a.run}`")
        return 0
    if a.executor == "ray":
        run_ray_jobs(store, [i for i in ids if store.job(i).kind == "retrain"], address=a.ray_address)
    jobs = _follow(store, ids)
    _out(_jobs_table(jobs))
    if any(j.status != "done" for j in jobs):
        print(f"some jobs did not finish; see `python -m nes jobs show ID` and the logs in {RunDir(run).logs}",
              file=sys.stderr)
        return 1
    ens = store.job(ids[-1]).result["ensemble"]
    print(f"ensemble of {a.members}: accuracy {ens['accuracy']:.4f}, NLL {ens['nll']:.4f}, ECE {ens['ece']:.4f} "
          f"(mean member accuracy {ens['member_accuracy']:.4f})")
    return 0


def _jobs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["list", "show", "cancel", "resume"])
    p.add_argument("id", nargs="?", type=int)
    p.add_argument("--run", default=None)
    add_json(p)


def cmd_jobs(a: argparse.Namespace) -> int:
    """Every action first reaps dead and frozen workers (`reap`): what it shows or changes is current."""
    store = Store(create=False) if a.action != "list" else Store()
    if a.action == "list":
        run_id = store.get_run(a.run) if a.run else None
        reap(store, run_id)
        jobs = store.jobs(run_id)
        _out(json.dumps([_job_row(j) for j in jobs], indent=2) if a.json else _jobs_table(jobs))
        return 0
    if a.id is None:
        raise UserError(f"jobs {a.action} needs a job id")
    if a.action == "show":
        reap(store)
        d = store.job(a.id).to_dict()
        d["metrics_last"] = {m["name"]: m["value"] for m in store.metrics(a.id)}
        _out(json.dumps(d, indent=2, default=str))
    elif a.action == "cancel":
        _out(f"job {a.id}: {cancel(store, a.id)}")
    elif a.action == "resume":
        resume(store, a.id)
        _out(f"job {a.id}: queued again (continues from its last checkpoint)")
    return 0


def _worker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("job_id", type=int)
    p.add_argument("--attempt", type=int, default=None, help="the attempt the launcher started (its fence)")


def _ray_driver_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("job_ids", type=int, nargs="*")
    p.add_argument("--address", default=None)


def cmd_ray_driver(a: argparse.Namespace) -> int:
    run_ray_jobs(Store(), a.job_ids or None, address=a.address)
    return 0


COMMANDS = [
    Command("run", "the whole pipeline as background jobs: search → hypernet → sample → members → evaluate",
            _run_args, cmd_run),
    Command("jobs", "list, show, cancel or resume background jobs", _jobs_args, cmd_jobs),
    Command("worker", "run one job (started by the job launcher)", _worker_args,
            lambda a: run_worker(a.job_id, attempt=a.attempt), hidden=True),
    Command("ray-driver", "drive Ray jobs (started by `run --executor ray --detach`)", _ray_driver_args,
            cmd_ray_driver, hidden=True),
]
