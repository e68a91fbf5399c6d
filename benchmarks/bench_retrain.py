"""Member retraining on CPU: step throughput, time to 90 % test accuracy, worker start-up.

(a) img/s of training steps of the `quick` member (the bundled demo's genotype* by default), ours
    (channels-last, the CPU kernels of `nes.method.kernels`) against the plain path (NCHW, stock
    PyTorch kernels), interleaved in one run, median of `--repeats`;
(b) one `quick` member trained by `nes.method.train.retrain` on the full Fashion-MNIST training
    set, scored after every epoch on the full 10 000-image test set: the training seconds (evaluation
    included) until the first epoch at ≥ 90 %, the final accuracy and the whole wall time;
(c) worker start-up: a fresh Python process from its start to the end of its first training step
    (imports, dataset load, network build), median of 3.

    python benchmarks/bench_retrain.py                       # ~4 min on 2 cores
    python benchmarks/bench_retrain.py --set epochs=3 --skip-startup

Last line: RESULT retrain_img_s=… plain_img_s=… speedup=… time_to_90_s=… final_acc=… startup_s=…
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import nes.method.kernels as kernels  # noqa: E402
from nes.config import TrainConfig, from_preset  # noqa: E402
from nes.data import DeviceLoader, load_dataset  # noqa: E402
from nes.method.interop_nni import load_genotype  # noqa: E402
from nes.method.network import Network  # noqa: E402
from nes.method.train import retrain  # noqa: E402
from nes.runtime import configure_threads  # noqa: E402

DEMO_GENOTYPE = ROOT / "assets" / "demo" / "search" / "genotype.json"

STARTUP = """
import sys, time
t0 = float(sys.argv[1])
from nes.config import TrainConfig, from_preset
from nes.method.interop_nni import load_genotype
from nes.method.train import retrain
class First(Exception):
    pass
def progress(step, total, row):
    if step >= 1:
        raise First
try:
    retrain(from_preset(TrainConfig, "quick", {"log_every": "1"}), load_genotype(sys.argv[2]), sys.argv[3], "m", "cpu",
            progress)
except First:
    print(f"FIRST_STEP {time.time() - t0:.3f}")
"""


def img_per_s(cfg: TrainConfig, genotype, ds, channels_last: bool, steps: int) -> float:
    """Training steps of the member network (forward, backward, SGD) on real batches."""
    info = ds.info.with_crop(cfg.image_size, cfg.pad)
    torch.manual_seed(0)
    net = Network(genotype, cfg.channels, info.num_classes, cfg.layers, info.channels)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    loader = DeviceLoader(ds.train_x[: cfg.batch_size * (steps + 3)], ds.train_y[: cfg.batch_size * (steps + 3)],
                          info, cfg.batch_size, train=True, channels_last=channels_last)
    it = loader.epoch(torch.Generator().manual_seed(0))
    t0 = 0.0
    for i, (x, y) in enumerate(it):
        if i == 3:  # after warm-up steps (oneDNN primitive creation)
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return steps * cfg.batch_size / (time.perf_counter() - t0)


def throughput(cfg: TrainConfig, genotype, repeats: int, steps: int) -> tuple[float, float]:
    ds = load_dataset(cfg.dataset, cfg.data_dir, "cpu", cfg.batch_size * (steps + 3), 10, download=False)
    ours, plain = [], []
    for _ in range(repeats):
        kernels.FAST_CPU_KERNELS = True
        ours.append(img_per_s(cfg, genotype, ds, True, steps))
        kernels.FAST_CPU_KERNELS = False
        plain.append(img_per_s(cfg, genotype, ds, False, steps))
    kernels.FAST_CPU_KERNELS = True
    print(f"(a) step throughput, batch {cfg.batch_size}, C={cfg.channels}, {cfg.layers} cells: ours {[round(v) for v in ours]} "
          f"img/s, plain NCHW {[round(v) for v in plain]} img/s")
    return statistics.median(ours), statistics.median(plain)


def time_to_90(cfg: TrainConfig, genotype) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = retrain(cfg, genotype, tmp, "m", "cpu")
        wall = time.perf_counter() - t0
    print(f"(b) quick member, {cfg.epochs} epochs, batch {cfg.batch_size}, lr {cfg.lr} ({cfg.schedule}), "
          f"{res.steps} steps, wall {wall:.1f} s:")
    for row in res.history:
        print(f"    epoch {row['epoch']}: test acc {row['test_accuracy']:.4f}, val acc {row['val_accuracy']:.4f}, "
              f"train loss {row['train_loss']:.3f}, {row['seconds']:.1f} s")
    hit = [r["seconds"] for r in res.history if r["test_accuracy"] >= 0.9]
    return (hit[0] if hit else float("nan")), res.history[-1]["test_accuracy"], wall


def startup(genotype_file: Path) -> float:
    times = []
    for _ in range(3):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.time()
            out = subprocess.run([sys.executable, "-c", STARTUP, str(t0), str(genotype_file), tmp], cwd=ROOT,
                                 capture_output=True, text=True, timeout=300)
            line = [x for x in out.stdout.splitlines() if x.startswith("FIRST_STEP")]
            if not line:
                raise SystemExit(f"start-up probe failed:\n{out.stderr[-2000:]}")
            times.append(float(line[0].split()[1]))
    print(f"(c) worker start-up to the end of the first step: {times} s")
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--genotype", default=str(DEMO_GENOTYPE), help="genotype file (default: the demo's genotype*)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="TrainConfig override")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--skip-startup", action="store_true")
    ap.add_argument("--skip-train", action="store_true")
    a = ap.parse_args()
    configure_threads()
    cfg = from_preset(TrainConfig, "quick", dict(kv.split("=", 1) for kv in a.set))
    genotype = load_genotype(a.genotype)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; genotype {genotype.compact()}")
    ours, plain = throughput(cfg, genotype, a.repeats, a.steps)
    t90, acc, wall = (float("nan"),) * 3 if a.skip_train else time_to_90(cfg, genotype)
    up = float("nan") if a.skip_startup else startup(Path(a.genotype))
    print("targets: time_to_90_s ≤ 180 on 2 cores, startup_s ≤ 10")
    print(f"RESULT retrain_img_s={ours:.0f} plain_img_s={plain:.0f} speedup={ours / plain:.2f} "
          f"time_to_90_s={t90:.1f} final_acc={acc:.4f} startup_s={up:.2f} wall_s={wall:.1f}")


if __name__ == "__main__":
    main()
