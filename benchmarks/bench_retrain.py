"""Member retraining on CPU: step throughput, time to 90 % test accuracy, worker start-up.

(a) img/s of training steps of the `quick` member (the bundled demo's genotype* by default), ours
    (channels-last, the CPU kernels of `nes.method.kernels`, unread cell inputs skipped) against the
    plain path (NCHW, stock PyTorch kernels, every cell input preprocessed as in DARTS's reference
    code), interleaved in one run: the median img/s of each and the median of the paired ratios
    (each ours window against the plain window right after it), `--repeats` pairs;
(b) one `quick` member trained by `nes.method.train.retrain` on the full Fashion-MNIST training
    set, scored after every epoch on the full 10 000-image test set: the training seconds (evaluation
    included) until the first epoch at ≥ 90 %, the final accuracy and the whole wall time;
(c) worker start-up: a fresh Python process from its start to the end of its first training step
    (imports, dataset load, network build), median of 3;
(d) with --profile: where a training step goes, per op family (stem, 1×1 preprocessing, depthwise,
    pointwise, pooling, batch norm, ReLU, cell glue and loss, head, optimizer, data): its share of
    the step's wall time (torch.profiler; forward ops labelled by module, backward ops mapped to their
    forward op by autograd sequence number) and, for the families that do arithmetic, the achieved
    GFLOP/s (torch.utils.flop_counter per module: 3 × the forward's FLOPs for forward + backward);
(e) with --recipes: member recipes (RECIPES: overrides of the quick preset) trained per seed,
    chosen on the validation split (the fastest whose final val accuracy >= RECIPE_VAL on every
    seed), the test split printed beside it once to confirm.

    python benchmarks/bench_retrain.py                       # ~4 min on 2 cores
    python benchmarks/bench_retrain.py --set epochs=3 --skip-startup
    python benchmarks/bench_retrain.py --profile --skip-train --skip-startup   # (a) and (d), a minute
    python benchmarks/bench_retrain.py --recipes all --seeds 0,1                 # (e), ~25 min

Last line: RESULT retrain_img_s=… plain_img_s=… speedup=… time_to_90_s=… final_acc=… startup_s=…
(with --recipes: RESULT chosen=… wall_s=… val_acc=… test_acc=… time_to_90_s=… wall_vs_before=…)
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def img_per_s(cfg: TrainConfig, genotype, ds, channels_last: bool, steps: int,
              device: torch.device = torch.device("cpu"), reference: bool = False) -> float:
    """Training steps of the member network (forward, backward, SGD) on real batches (bf16 autocast
    on CUDA, as members train there); `reference`: also preprocess the cell inputs no node reads,
    as DARTS's reference code does (the plain path)."""
    from nes.runtime import autocast

    info = ds.info.with_crop(cfg.image_size, cfg.pad)
    torch.manual_seed(0)
    net = Network(genotype, cfg.channels, info.num_classes, cfg.layers, info.channels).to(device)
    net.compute_unused = reference
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    loader = DeviceLoader(ds.train_x[: cfg.batch_size * (steps + 3)], ds.train_y[: cfg.batch_size * (steps + 3)],
                          info, cfg.batch_size, train=True, channels_last=channels_last)
    it = loader.epoch(torch.Generator().manual_seed(0))
    t0 = 0.0
    for i, (x, y) in enumerate(it):
        if i == 3:  # after warm-up steps (oneDNN primitive creation, cuDNN autotuning)
            _sync(device)
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with autocast(device):
            loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
    _sync(device)
    return steps * cfg.batch_size / (time.perf_counter() - t0)


def throughput(cfg: TrainConfig, genotype, repeats: int, steps: int,
               device: torch.device = torch.device("cpu")) -> tuple[float, float, float]:
    """(ours, plain, speedup): median img/s of each and the median of the REPEATS paired ratios, each
    of a plain window over the ours window just before it (adjacent windows share the machine's
    state: these shared cores swing 1.4× between minutes, which one unpaired median cannot cancel).
    On CUDA both are NCHW (channels-last and the CPU kernels are CPU choices)."""
    ds = load_dataset(cfg.dataset, cfg.data_dir, device, cfg.batch_size * (steps + 3), 10, download=False)
    cpu = device.type == "cpu"
    ours, plain = [], []
    for _ in range(repeats):
        kernels.FAST_CPU_KERNELS = True
        ours.append(img_per_s(cfg, genotype, ds, cpu, steps, device))
        kernels.FAST_CPU_KERNELS = False
        plain.append(img_per_s(cfg, genotype, ds, False, steps, device, reference=True))
    kernels.FAST_CPU_KERNELS = True
    ratios = [o / p for o, p in zip(ours, plain)]
    print(f"(a) step throughput, batch {cfg.batch_size}, C={cfg.channels}, {cfg.layers} cells: ours {[round(v) for v in ours]} "
          f"img/s, plain NCHW {[round(v) for v in plain]} img/s; paired ratios {[round(r, 2) for r in ratios]} "
          f"(median {statistics.median(ratios):.2f}; ratio of the medians {statistics.median(ours) / statistics.median(plain):.2f})")
    return statistics.median(ours), statistics.median(plain), statistics.median(ratios)


def time_to_90(cfg: TrainConfig, genotype, device: torch.device = torch.device("cpu")) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = retrain(cfg, genotype, tmp, "m", device)
        wall = time.perf_counter() - t0
    print(f"(b) quick member, {cfg.epochs} epochs, batch {cfg.batch_size}, lr {cfg.lr} ({cfg.schedule}), "
          f"{res.steps} steps, wall {wall:.1f} s:")
    for row in res.history:
        print(f"    epoch {row['epoch']}: test acc {row['test_accuracy']:.4f}, val acc {row['val_accuracy']:.4f}, "
              f"train loss {row['train_loss']:.3f}, {row['seconds']:.1f} s")
    hit = [r["seconds"] for r in res.history if r["test_accuracy"] >= 0.9]
    return (hit[0] if hit else float("nan")), res.history[-1]["test_accuracy"], wall


# (e) recipes compared, each a set of TrainConfig overrides on the quick preset; chosen on the
# validation split (the fastest whose final val accuracy is >= RECIPE_VAL), the test split printed
# once beside it to confirm
RECIPES = {
    "crop (before)": {"pad": "2", "epoch_sizes": ""},
    "no crop": {"pad": "0", "epoch_sizes": ""},
    "no crop, 14/20 px": {"pad": "0", "epoch_sizes": "14,20"},
    "no crop, 16/22 px": {"pad": "0", "epoch_sizes": "16,22"},
    "no crop, 2 epochs, 14 px": {"pad": "0", "epoch_sizes": "14", "epochs": "2"},
    "no crop, 4 epochs, 14/14/20 px": {"pad": "0", "epoch_sizes": "14,14,20", "epochs": "4"},
    "no crop, 14/28/28 px": {"pad": "0", "epoch_sizes": "14"},
}
RECIPE_VAL = 0.905


def recipes(genotype, names: list[str], seeds: list[int]) -> None:
    """Train each recipe of RECIPES once per seed; print its epochs, time to 90 % and final accuracies."""
    print(f"(e) recipes on the quick preset, seeds {seeds}; chosen on validation (final val >= {RECIPE_VAL}):")
    rows = []
    for name in names:
        for seed in seeds:
            cfg = from_preset(TrainConfig, "quick", {**RECIPES[name], "seed": str(seed)})
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                res = retrain(cfg, genotype, tmp, "m", "cpu")
                wall = time.perf_counter() - t0
            h = res.history
            hit = next((r["seconds"] for r in h if r["test_accuracy"] >= 0.9), float("nan"))
            rows.append((name, seed, wall, h[-1]["val_accuracy"], h[-1]["test_accuracy"], hit))
            epochs = ", ".join(f"{r['val_accuracy']:.4f}/{r['test_accuracy']:.4f} at {r['seconds']:.0f} s" for r in h)
            print(f"    {name:26s} seed {seed}: wall {wall:6.1f} s, val/test by epoch: {epochs}", flush=True)
    recipe_summary(rows, names)


def recipe_summary(rows: list[tuple], names: list[str]) -> None:
    """Per recipe, medians over seeds of ROWS (name, seed, wall, val, test, time to 90 % or nan):
    time to 90 % over the seeds that reached it; then the chosen recipe and the RESULT line."""
    med = statistics.median
    summary = {}
    for name in names:
        mine = [r for r in rows if r[0] == name]
        hits = [r[5] for r in mine if r[5] == r[5]]
        summary[name] = (med([r[2] for r in mine]), med([r[3] for r in mine]), med([r[4] for r in mine]),
                         med(hits) if hits else float("nan"), min(r[3] for r in mine))
        wall, val, test, t90, _ = summary[name]
        print(f"    {name:26s} median wall {wall:6.1f} s, val {val:.4f}, test {test:.4f}; 90 % test reached by "
              f"{len(hits)} of {len(mine)} seeds" + (f", median {t90:.1f} s" if hits else ""))
    ok = [n for n in names if summary[n][4] >= RECIPE_VAL]
    if not ok:
        print(f"RESULT chosen=none (no recipe reached val {RECIPE_VAL} on every seed)")
        return
    pick = min(ok, key=lambda n: summary[n][0])
    wall, val, test, t90, _ = summary[pick]
    ref = summary.get(next(iter(RECIPES)))
    print(f"    chosen: {pick!r}, the fastest whose val accuracy is >= {RECIPE_VAL} on every seed")
    print(f"RESULT chosen={pick.replace(' ', '_').replace(',', '')} wall_s={wall:.1f} val_acc={val:.4f} "
          f"test_acc={test:.4f} time_to_90_s={t90:.1f} wall_vs_before={wall / ref[0] if ref else float('nan'):.2f}")


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


FAMILY_OF = ((".stem", "stem"), (".pre0", "1×1 preprocessing"), (".pre1", "1×1 preprocessing"),
             ("classifier", "head"), ("pool", "head"))  # FQN markers, checked before the module type


def family(fqn: str, module: torch.nn.Module) -> str:
    """The op family of a leaf module of the member network, by where it sits, then by its type."""
    for marker, fam in FAMILY_OF:
        if marker in f".{fqn}" and (marker != "pool" or fqn == "pool"):
            return fam
    kind = type(module).__name__
    if kind == "DepthwiseConv2d" or (isinstance(module, torch.nn.Conv2d) and module.groups > 1):
        return "depthwise"
    if isinstance(module, torch.nn.Conv2d):
        return "pointwise"
    if "BatchNorm" in kind:
        return "batch norm"
    if "Pool" in kind:
        return "pooling"
    return "ReLU" if kind == "ReLU" else "cell glue and loss"


def _label_forward(net: torch.nn.Module) -> None:
    """Every leaf module's forward, and the stem's (its conv and BN run as one fused op), runs
    inside a profiler range named `family::<family>`."""
    from torch.autograd.profiler import record_function

    def pre(mod, _):
        mod._nes_range = record_function(f"family::{mod._nes_family}")
        mod._nes_range.__enter__()

    def post(mod, _, __):
        mod._nes_range.__exit__(None, None, None)
    for fqn, mod in net.named_modules():
        if not list(mod.children()) or fqn == "stem":
            mod._nes_family = family(fqn, mod)
            mod.register_forward_pre_hook(pre)
            mod.register_forward_hook(post)


def _event_family(ev, seq_family: dict[int, str]) -> str:
    """The family of one profiler event: its labelled range, the optimizer or data range, or (for a
    backward op) the family of the forward op with the same autograd sequence number."""
    node = ev
    while node is not None:
        name = node.name
        if name.startswith("family::"):
            return name[len("family::"):]
        if name.startswith(("Optimizer.", "optimizer")):
            return "optimizer"
        if name == "data":
            return "data"
        if name.startswith("autograd::engine::evaluate_function") and node.sequence_nr in seq_family:
            return seq_family[node.sequence_nr]
        node = node.cpu_parent
    return "ReLU" if "relu" in ev.name.lower() else "cell glue and loss"  # functional ReLUs, cat, sums, loss


def _step_times(net, opt, batches) -> dict[str, float]:
    """Self wall time (ms, main thread) per family over the profiled steps."""
    from torch.autograd.profiler import record_function
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for x, y in batches:
            with record_function("data"):
                x, y = x.clone(), y.clone()  # the loader's work is timed in (a); here the copy marks it
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            opt.step()
    events = prof.events()
    seq_family = {}
    for ev in events:  # forward ops: their labelled range gives the family of their sequence number
        if ev.sequence_nr >= 0 and not ev.name.startswith("autograd::"):
            fam = _event_family(ev, {})
            if fam != "cell glue and loss" or ev.sequence_nr not in seq_family:
                seq_family[ev.sequence_nr] = fam
    out: dict[str, float] = {}
    for ev in events:
        if ev.self_cpu_time_total > 0 and ev.thread == events[0].thread:
            fam = _event_family(ev, seq_family)
            out[fam] = out.get(fam, 0.0) + ev.self_cpu_time_total / 1000
    return out


def _family_flops(net, x, y) -> dict[str, float]:
    """FLOPs of one training step per family: 3 × the forward's (the backward's input- and weight-
    gradient convolutions cost one forward each), from the flop counter per module. The counter's
    own backward formulas overcount grouped (depthwise) convolutions by the group count."""
    from torch.utils.flop_counter import FlopCounterMode

    fams = {fqn: family(fqn, m) for fqn, m in net.named_modules() if not list(m.children())}
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x)
    out: dict[str, float] = {}
    for fqn, ops in counter.get_flop_counts().items():
        name = fqn.removeprefix("Global").removeprefix(".")
        parts = [p for p in name.split(".") if p]
        leaf = ".".join(parts[1:]) if parts and parts[0] == type(net).__name__ else name
        if leaf in fams:
            out[fams[leaf]] = out.get(fams[leaf], 0.0) + 3 * sum(ops.values())
    return out


ARITHMETIC = ("stem", "1×1 preprocessing", "depthwise", "pointwise", "head")  # convolutions and matmuls


def profile_step(cfg: TrainConfig, genotype, steps: int) -> None:
    """(d): print each family's share of a training step and its achieved GFLOP/s."""
    ds = load_dataset(cfg.dataset, cfg.data_dir, "cpu", cfg.batch_size * (steps + 3), 10, download=False)
    info = ds.info.with_crop(cfg.image_size, cfg.pad)
    torch.manual_seed(0)
    net = Network(genotype, cfg.channels, info.num_classes, cfg.layers, info.channels).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    loader = DeviceLoader(ds.train_x, ds.train_y, info, cfg.batch_size, train=True, channels_last=True)
    batches = list(loader.epoch(torch.Generator().manual_seed(0)))
    flops = _family_flops(net, *batches[0])
    _label_forward(net)
    for x, y in batches[:3]:  # warm-up (oneDNN primitive creation)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()
    ms = _step_times(net, opt, batches[3:3 + steps])
    total = sum(ms.values())
    print(f"(d) where a training step goes ({steps} steps, batch {cfg.batch_size}; {total / steps:.1f} ms per step):")
    for fam, t in sorted(ms.items(), key=lambda kv: -kv[1]):
        rate = f", {flops[fam] * steps / (t / 1000) / 1e9:.1f} GFLOP/s" if flops.get(fam) and fam in ARITHMETIC else ""
        print(f"    {fam:<20} {100 * t / total:5.1f} %  {t / steps:6.2f} ms/step{rate}")
    print(f"    FLOPs per step: {sum(flops.values()) / 1e9:.2f} GFLOP ({sum(flops.values()) / cfg.batch_size / 1e6:.1f} "
          "MFLOP per image)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--genotype", default=str(DEMO_GENOTYPE), help="genotype file (default: the demo's genotype*)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="TrainConfig override")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--skip-startup", action="store_true")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--profile", action="store_true", help="(d): per-op-family profile of a training step")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda: (a) and (b) on that device")
    ap.add_argument("--recipes", default="", help=f"(e): 'all' or names of RECIPES separated by ';': {'; '.join(RECIPES)}")
    ap.add_argument("--seeds", default="0", help="(e): comma-separated member seeds")
    a = ap.parse_args()
    configure_threads()
    from nes.runtime import device_label, resolve_device
    device = resolve_device(a.device)
    cfg = from_preset(TrainConfig, "quick", dict(kv.split("=", 1) for kv in a.set))
    genotype = load_genotype(a.genotype)
    print(f"torch {torch.__version__}, device {device_label(device)}; genotype {genotype.compact()}")
    if a.recipes:
        names = list(RECIPES) if a.recipes == "all" else [n.strip() for n in a.recipes.split(";")]
        unknown = [n for n in names if n not in RECIPES]
        if unknown:
            ap.error(f"--recipes: unknown {unknown}; known: {'; '.join(RECIPES)}")
        recipes(genotype, names, [int(v) for v in a.seeds.split(",")])
        return
    ours, plain, speedup = throughput(cfg, genotype, a.repeats, a.steps, device)
    if a.profile and device.type == "cpu":
        profile_step(cfg, genotype, a.steps)
    t90, acc, wall = (float("nan"),) * 3 if a.skip_train else time_to_90(cfg, genotype, device)
    up = float("nan") if a.skip_startup else startup(Path(a.genotype))
    print("targets: time_to_90_s ≤ 90 on 2 cores, speedup ≥ 2 (the median paired ratio), startup_s ≤ 10")
    print(f"RESULT retrain_img_s={ours:.0f} plain_img_s={plain:.0f} speedup={speedup:.2f} "
          f"time_to_90_s={t90:.1f} final_acc={acc:.4f} startup_s={up:.2f} wall_s={wall:.1f}")


if __name__ == "__main__":
    main()
