"""Plain helpers that several test files import (`from helpers import ...`; pytest puts tests/ on
sys.path): the checkout root, the CLI as a subprocess, polling a background job, smoke members."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def nes(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m nes ARGS` from this checkout, one torch thread, no progress bars."""
    e = {**os.environ, "NES_NO_PROGRESS": "1", "NES_THREADS": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "nes", *args], capture_output=True, text=True, env=e,
                          cwd=cwd or ROOT, timeout=600)


# -- background jobs (tests/test_jobs*.py) ---------------------------------------------------------
SMOKE = {"preset": "smoke"}


def wait_until(pred, timeout: float = 240.0, poll: float = 0.2):
    """Poll `pred` until it returns something true (no timed assertion: a generous bound)."""
    import time

    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(poll)
    raise AssertionError("condition not reached in time")


def why(job) -> str:
    """A failed job's error and the tail of its worker log (for assertion messages)."""
    log = Path(job.run_id) / "logs" / f"job_{job.id}.log"
    return f"{job.error}\n--- log ---\n" + (log.read_text()[-3000:] if log.exists() else "(no log)")


def retrain_job(store, name: str, epochs: int, **extra) -> int:
    """Queue a smoke member `name` of run `base` that reports after every step."""
    from nes.runs.jobs import submit

    return submit(store, "base", "retrain", {"preset": "smoke", "name": name,
                                             "set": {"epochs": str(epochs), "log_every": "1"}, **extra})


# -- bundles (tests/test_export*.py) ----------------------------------------------------------------
def digits_members(run: Path, names, seed: int) -> Path:
    """Members `names` of random genotypes (one Random(seed)) trained on digits, smoke preset."""
    import random

    import torch

    from nes.config import TrainConfig, from_preset
    from nes.method.baselines import random_genotype
    from nes.method.space import ArchLayout
    from nes.method.train import retrain

    torch.set_num_threads(1)
    layout, rng = ArchLayout(nodes=4, cell_types=("reduce",)), random.Random(seed)
    for i, name in enumerate(names):
        retrain(from_preset(TrainConfig, "smoke", {"seed": i}), random_genotype(layout, rng), run, name, "cpu")
    return run


# -- synthetic predictors (tests/test_stats.py, tests/test_scoring.py) --------------------------------
def predictor(y, correct, k: int = 10, conf: float = 0.8):
    """[N, K] float64 probabilities whose top-1 is the label y [N] where `correct` [N], another class elsewhere."""
    import torch

    top = torch.where(correct, y, (y + 1) % k)
    p = torch.full((y.shape[0], k), (1 - conf) / (k - 1), dtype=torch.float64)
    p[torch.arange(y.shape[0]), top] = conf
    return p
