"""What a crash costs at each pipeline stage, measured with real workers and SIGKILL.

For search, hypernet and retrain (smoke preset, `--epochs` epochs): start the job in a worker,
SIGKILL it in the middle of its second epoch, let `reap` mark it failed, `resume` it, and report
the steps it had done, the steps its last checkpoint held (the rest is redone), the seconds from
resume to done, and whether every artifact of the run then loads. `sample` and `evaluate` take
well under a second and write atomically: after a crash they simply run again; their run time is
reported. Last line: RESULT lost_steps_search=… lost_steps_hypernet=… lost_steps_retrain=… all_loaded=…
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nes.artifacts import load_tensors  # noqa: E402
from nes.runs.jobs import reap, resume, submit, wait  # noqa: E402
from nes.runs.store import Store  # noqa: E402


def until(pred, timeout=600.0):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        time.sleep(0.1)
    raise TimeoutError


def crash_and_resume(store: Store, run: str, kind: str, config: dict, ckpt_rel: str, epochs: int) -> dict:
    j = submit(store, run, kind, config)
    until(lambda: store.job(j).total > 0)
    per_epoch = store.job(j).total // epochs
    until(lambda: store.job(j).step >= per_epoch + per_epoch // 2)
    done_at_kill = store.job(j).step
    os.kill(store.job(j).pid, signal.SIGKILL)
    until(lambda: bool(reap(store)) or store.job(j).status == "failed")
    ckpt = Path(store.job(j).run_id) / ckpt_rel
    saved = load_tensors(ckpt)[1]["steps"] if ckpt.exists() else 0
    t = time.time()
    resume(store, j)
    job, = wait(store, [j], poll=0.2)
    return {"kind": kind, "status": job.status, "steps_at_kill": done_at_kill, "steps_in_checkpoint": saved,
            "lost_steps": done_at_kill - saved, "resume_to_done_s": time.time() - t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=4)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["NES_HOME"] = home
        store = Store()
        sets = {"epochs": str(a.epochs), "log_every": "1"}
        rows = [crash_and_resume(store, "r", "search", {"preset": "smoke", "set": sets},
                                 "search/checkpoint.safetensors", a.epochs)]
        rows.append(crash_and_resume(store, "r", "hypernet", {"preset": "smoke", "set": sets, "regularizer": "edges"},
                                     "hypernet/edges/checkpoint.safetensors", a.epochs))
        rows.append(crash_and_resume(store, "r", "retrain", {"preset": "smoke", "set": sets, "name": "m0"},
                                     "members/m0/checkpoint.safetensors", a.epochs))
        quick = {}
        for kind, cfg in (("sample", {"n": 3}), ("evaluate", {})):
            j = submit(store, "r", kind, cfg)
            job, = wait(store, [j], poll=0.05)
            quick[kind] = (job.status, job.finished - job.started)
        loaded = 0
        for f in Path(home, "r").rglob("*.safetensors"):
            load_tensors(f)
            loaded += 1
        print(f"{'stage':<10}{'status':<8}{'steps at kill':>14}{'in checkpoint':>14}{'redone':>8}{'resume→done s':>15}")
        for r in rows:
            print(f"{r['kind']:<10}{r['status']:<8}{r['steps_at_kill']:>14}{r['steps_in_checkpoint']:>14}"
                  f"{r['lost_steps']:>8}{r['resume_to_done_s']:>15.1f}")
        for k, (st, sec) in quick.items():
            print(f"{k:<10}{st:<8}  runs in {sec:.2f} s (worker start included); after a crash it runs again")
        ok = all(r["status"] == "done" for r in rows) and all(s == "done" for s, _ in quick.values())
        print(f"all {loaded} safetensors artifacts load: {ok}")
        print("RESULT " + " ".join(f"lost_steps_{r['kind']}={r['lost_steps']}" for r in rows) + f" all_loaded={ok}")


if __name__ == "__main__":
    main()
