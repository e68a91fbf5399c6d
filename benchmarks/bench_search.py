"""Search-step and data-pipeline throughput, measured side by side in one run.

Configuration of the original experiment: Fashion-MNIST (32×32 crops), C=10, 1 cell, 4 nodes,
1 input per node, batch 64, first-order DARTS; `--threads` torch threads (default 2).

(a) ours: `nes.method.bilevel.train_bilevel` — channels_last, the CPU depthwise/BN kernels of `nes.method.kernels`,
    the cell evaluated source by source (shared pools, one matmul for a source's FactorizedReduce
    convs), an architecture step that asks autograd for ∇θ only (no weight gradients), and on
    CUDA bf16 autocast and CUDA-graph replay of whole steps.
(b) plain: the same supernet in NCHW, evaluated edge by edge with stock PyTorch kernels, and the
    textbook DARTS step (`loss.backward()` for the architecture step too), as a straightforward
    implementation does.
(c) data: `nes.data.DeviceLoader` vs torchvision `DataLoader` with per-sample
    RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize.
Also reported: ours in NCHW (the layout choice) and, on CUDA, ours with and without CUDA-graph
replay of the steps (with the largest difference of θ between the two after the same steps).

(d) every search mode's step (`MODES`), `--rounds` rounds over the modes in turn (medians, and
    each mode's median ratio to the `lowres` step of the same round); with `--quality PRESET` also
    its α*'s quality (stability over the last third, kept-edge top-op probability, genotype*
    retrained against 3 random genotypes on the validation split; `--modes` picks the modes
    checked, the first being the reference); the fastest mode is chosen among the checked modes
    whose α* holds against the reference's (`holds`).

Last line: RESULT search_step_ms=… plain_step_ms=… speedup_vs_plain=… loader_img_s=… dataloader_img_s=…
loader_speedup=… fastest_mode=… fastest_step_ms=… fastest_to_lowres=… fastest_quality_checked=…
beats_random=…
"""
from __future__ import annotations

import argparse
import dataclasses
import gzip
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nes.method.kernels as kernels  # noqa: E402
from nes.config import SearchConfig, from_preset  # noqa: E402
from nes.data import DEBIAN_FASHION_DIR, DeviceLoader, downsample, load_dataset, split_indices  # noqa: E402
from nes.runtime import configure_threads, device_label, resolve_device  # noqa: E402
from nes.method.bilevel import build_supernet, train_bilevel  # noqa: E402
from nes.method.darts import DartsArch, search  # noqa: E402
from nes.method.supernet import MixedCell  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def ours_step_ms(cfg: SearchConfig, ds, device, steps: int, channels_last: bool,
                 graphs: bool = True, on_step=None) -> tuple[float, torch.Tensor]:
    """Median step time of the real training loop (timestamps from its progress callback) and
    how far θ moved. With `cfg.arch_every` k > 1 a step's time is that of a whole cycle of k steps
    (one with the architecture step, k − 1 without) over k: the median of single steps would be a
    step without it. `graphs`: allow CUDA-graph replay of the steps (nes.method.cuda_graphs.use_cuda_graphs)."""
    n = 2 * cfg.batch_size * steps
    tr, va = split_indices(n, 0.5, 0)
    x, y = ds.train_x[:n], ds.train_y[:n]
    tl = DeviceLoader(x[tr.to(device)], y[tr.to(device)], ds.info, cfg.batch_size, True, channels_last=channels_last)
    vl = DeviceLoader(x[va.to(device)], y[va.to(device)], ds.info, cfg.batch_size, True, channels_last=channels_last)
    import nes.method.bilevel as search_mod

    orig = search_mod.use_channels_last
    search_mod.use_channels_last = lambda d: channels_last
    torch.manual_seed(0)  # the same initial weights for every variant
    try:
        net, layout = build_supernet(cfg, ds, device)
    finally:
        search_mod.use_channels_last = orig
    net.set_sparse(cfg.mode == "gdas")
    arch = DartsArch(layout, gumbel=(cfg.gumbel_start, cfg.gumbel_end) if cfg.mode == "gdas" else None).to(device)
    theta0 = arch.final_theta().float().cpu()
    stamps: list[float] = []

    def cb(step, total, metrics):  # log_every=1: one sync per step, fine for timing
        sync(device)
        stamps.append(time.perf_counter())
        if on_step is not None:
            on_step()

    old_env = os.environ.get("NES_CUDA_GRAPHS")
    os.environ["NES_CUDA_GRAPHS"] = "1" if graphs else "0"
    try:
        with tempfile.TemporaryDirectory() as d:
            train_bilevel(cfg, net, arch, tl, vl, d, device, cb)
    finally:
        if old_env is None:
            del os.environ["NES_CUDA_GRAPHS"]
        else:
            os.environ["NES_CUDA_GRAPHS"] = old_env
    # skip warm-up (and, with CUDA graphs, the capture) steps
    dts = [b - a for a, b in zip(stamps[5:], stamps[6:])]  # steps 6, 7, …
    k = cfg.arch_every
    cycles = [sum(dts[i:i + k]) / k for i in range(-6 % k, len(dts) - k + 1, k)]
    return 1000 * statistics.median(cycles), arch.final_theta().float().cpu() - theta0


_FULL = {"mode": "darts", "downsample": "1", "arch_every": "1"}  # every setting a mode changes, at its default
MODES = {  # name → SearchConfig settings (nes.method.supernet, nes.method.darts), whatever the preset sets
    "darts": _FULL, "pc": {**_FULL, "mode": "pc"}, "gdas": {**_FULL, "mode": "gdas"},
    "lowres": {**_FULL, "downsample": "2"}, "pc+lowres": {**_FULL, "mode": "pc", "downsample": "2"},
    "gdas+lowres": {**_FULL, "mode": "gdas", "downsample": "2"},
    "lowres+θ/2": {**_FULL, "downsample": "2", "arch_every": "2"},
    "lowres+θ/4": {**_FULL, "downsample": "2", "arch_every": "4"},
}
"""darts: every op on every edge; pc: PC-DARTS, the ops see 1/2 of the channels; gdas: one sampled
op per edge; lowres: images shrunk 2× (16×16 crops); θ/k: the architecture step on every k-th step
only, at k·a_lr (`SearchConfig.arch_every`). Each mode sets all three settings, so that `darts` and
`lowres` at the `quick` preset (which searches at 1/2 with θ/4) are what their names say."""

VARIANTS = {"lowres+θ/4+warm2": {**MODES["lowres+θ/4"], "arch_warmup": "2"},
            "lowres+θ/4+8k": {**MODES["lowres+θ/4"], "limit": "8000"}}
"""Searches whose α* `--quality` can check but whose step is a mode's above (not timed): +warmE
trains the weights alone for E epochs before the first architecture step (`SearchConfig.arch_warmup`);
+8k searches on 8000 training images instead of the preset's (the `quick` preset: 4000), twice the steps."""
CHECKABLE = {**MODES, **VARIANTS}  # what --modes may name


def mode_steps(ds, device, steps: int, rounds: int) -> tuple[dict[str, float], dict[str, float]]:
    """Step time of every search mode on the paper config (same data, same seed), `rounds` rounds
    over the modes in turn: each mode's median over the rounds, and its median ratio to the `lowres`
    step of the same round (these cores' speed drifts by ~1.4× between minutes; a ratio taken
    within one round holds better than a ratio of medians)."""
    times: dict[str, list[float]] = {name: [] for name in MODES}
    for _ in range(rounds):
        for name, sets in MODES.items():
            cfg = from_preset(SearchConfig, "paper", {"epochs": 1, "log_every": 1, **sets})
            small, info = downsample(ds, ds.info.with_crop(cfg.image_size, cfg.pad), cfg.downsample)
            ms, _ = ours_step_ms(cfg, dataclasses.replace(small, info=info), device, steps * cfg.arch_every,
                                 channels_last=True)
            times[name].append(ms)
    medians = {n: statistics.median(t) for n, t in times.items()}
    ratios = {n: statistics.median(a / b for a, b in zip(t, times["lowres"])) for n, t in times.items()}
    return medians, ratios


def quality(preset: str, device, names: list[str], member_sets: dict[str, str],
            search_sets: dict[str, str] | None = None) -> dict[str, dict]:
    """α* quality of the modes `names` at `preset`: genotype stability over the last third of the
    search, kept-edge top-op probability, and genotype*'s retrained validation accuracy against 3
    random genotypes' (the same member settings; the test accuracy is printed beside it, never used).
    `search_sets`: settings every mode's search takes on top of its own (e.g. another seed)."""
    import random

    from nes.config import TrainConfig
    from nes.method.baselines import random_genotype
    from nes.method.train import retrain

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        tcfg, rand = from_preset(TrainConfig, preset, member_sets), None
        for name in names:
            sets = CHECKABLE[name] | (search_sets or {})
            res = search(from_preset(SearchConfig, preset, sets), Path(tmp) / f"search_{len(out)}", device)
            hist = res.history
            tail = hist[len(hist) - max(1, len(hist) // 3):]
            stable = len({row.get("genotype") for row in tail}) == 1
            star = retrain(tcfg, res.genotype, Path(tmp) / "members", f"star_{len(out)}", device).metrics
            if rand is None:
                rng = random.Random(0)
                rand_g = [random_genotype(res.layout, rng) for _ in range(3)]
                print(f"    random genotypes: {'; '.join(g.compact() for g in rand_g)}")
                rand = [retrain(tcfg, g, Path(tmp) / "members", f"random_{i}", device).metrics
                        for i, g in enumerate(rand_g)]
            out[name] = {"step_ms": 1000 * res.seconds / max(res.steps, 1), "stable": stable,
                         "kept_top_op": hist[-1]["kept_top_op"], "star_val": star["val_accuracy"],
                         "beats_random": sum(star["val_accuracy"] > r["val_accuracy"] for r in rand),
                         "genotype": res.genotype.compact()}
            rand_text = ", ".join(f"{100 * r['val_accuracy']:.2f}" for r in rand)
            print(f"    {name:12s} {out[name]['step_ms']:6.0f} ms/step, stable over the last third: {stable}, "
                  f"kept-edge top-op p {out[name]['kept_top_op']:.3f}, genotype* retrained val "
                  f"{100 * star['val_accuracy']:.2f} % (test {100 * star['test_accuracy']:.2f} %; beats "
                  f"{out[name]['beats_random']} of 3 random on val: "
                  f"{rand_text} %)  {out[name]['genotype']}", flush=True)
    return out


REFERENCE_SLACK = 0.003  # the largest validation accuracy a mode's genotype* may lose to the reference's


def holds(qual: dict[str, dict], name: str) -> bool:
    """Whether mode `name`'s α* holds against the reference (the first mode checked: the preset's
    own search by default): stable over the last third, kept-edge top-op p ≥ 0.4, and genotype*
    retrained no more than REFERENCE_SLACK below the reference's genotype* on validation. Whether
    any α* beats random genotypes is reported beside it (`beats_random`), not asked here: it is a
    question about the search itself, not about how fast a mode runs it."""
    if name not in qual:
        return False
    q, ref = qual[name], next(iter(qual.values()))
    return q["stable"] and q["kept_top_op"] >= 0.4 and q["star_val"] >= ref["star_val"] - REFERENCE_SLACK


def plain_step_ms(cfg: SearchConfig, ds, device, steps: int) -> float:
    """Textbook first-order DARTS step on an NCHW supernet with stock kernels, fp32."""
    kernels.FAST_CPU_KERNELS = False
    MixedCell.edge_by_edge = True
    try:
        import nes.method.bilevel as search_mod

        orig = search_mod.use_channels_last
        search_mod.use_channels_last = lambda d: False
        try:
            net, layout = build_supernet(cfg, ds, device)
        finally:
            search_mod.use_channels_last = orig
        alpha = layout.init_theta().to(device).requires_grad_()
        w_opt = torch.optim.SGD(net.parameters(), cfg.w_lr, momentum=0.9, weight_decay=3e-4)
        a_opt = torch.optim.Adam([alpha], 3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
        info = ds.info
        loader = DeviceLoader(ds.train_x[: 2 * cfg.batch_size * steps], ds.train_y[: 2 * cfg.batch_size * steps],
                              info, cfg.batch_size, True)
        batches = list(loader.epoch(torch.Generator().manual_seed(0)))
        times = []
        for i in range(0, len(batches) - 1, 2):
            (xt, yt), (xv, yv) = batches[i], batches[i + 1]
            sync(device)
            t = time.perf_counter()
            a_opt.zero_grad()
            w_opt.zero_grad()
            F.cross_entropy(net(xv, layout.weights(alpha)), yv).backward()
            a_opt.step()
            w_opt.zero_grad()
            F.cross_entropy(net(xt, layout.weights(alpha.detach())), yt).backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            w_opt.step()
            sync(device)
            times.append(time.perf_counter() - t)
        return 1000 * statistics.median(times[1:])
    finally:
        kernels.FAST_CPU_KERNELS = True
        MixedCell.edge_by_edge = False


def op_breakdown(cfg: SearchConfig, ds, device, steps: int = 7) -> None:
    """Where a step of ours goes: self CPU time per op family over `steps - 3` profiled steps,
    and one forward pass without autograd (CPU only)."""
    from collections import defaultdict

    from torch.profiler import profile, schedule

    active = steps - 3
    with profile(schedule=schedule(wait=2, warmup=1, active=active)) as prof:
        ours_step_ms(cfg, ds, device, steps, channels_last=True, on_step=prof.step)

    def family(key: str) -> str:
        if "convolution" in key or key == "aten::conv2d":
            return "convolutions (oneDNN forward + backward)"
        if key in ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linalg_matmul"):
            return "matmuls (BN statistics, FactorizedReduce)"
        if "pool" in key:
            return "pooling"
        if key.startswith("aten::"):
            return "elementwise, copies, reductions, allocation"
        return "Python, autograd functions, optimizer glue"

    totals: dict[str, float] = defaultdict(float)
    for e in prof.key_averages():
        if not e.key.startswith("ProfilerStep"):
            totals[family(e.key)] += e.self_cpu_time_total / 1000 / active
    whole = sum(totals.values())
    print(f"    breakdown of ours per step (profiler on, {active} steps; {whole:.0f} ms/step with its overhead):")
    for k, v in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"      {k:46s} {v:7.1f} ms  {100 * v / whole:4.1f} %")
    net, layout = build_supernet(cfg, ds, device)
    x = DeviceLoader(ds.train_x[:cfg.batch_size], ds.train_y[:cfg.batch_size], ds.info, cfg.batch_size, True,
                     channels_last=True)
    xb = next(iter(x.epoch(torch.Generator().manual_seed(0))))[0]
    w = layout.weights(layout.init_theta().to(device))
    times = []
    with torch.no_grad():
        for _ in range(6):
            t = time.perf_counter()
            net(xb, w)
            times.append(time.perf_counter() - t)
    print(f"    one supernet forward without autograd: {1000 * statistics.median(times[1:]):.1f} ms "
          f"(a step is two forward and two backward passes)")


def loader_img_s(ds, device, batch: int) -> float:
    loader = DeviceLoader(ds.train_x, ds.train_y, ds.info, batch, True, channels_last=True)
    for _ in loader.epoch(torch.Generator().manual_seed(0)):
        break
    sync(device)
    t = time.perf_counter()
    n = 0
    for x, _ in loader.epoch(torch.Generator().manual_seed(1)):
        n += len(x)
    sync(device)
    return n / (time.perf_counter() - t)


def dataloader_img_s(src: str, batch: int, batches: int, workers: int) -> float:
    """torchvision FashionMNIST (files decompressed into its raw folder) + per-sample transforms."""
    from torchvision import datasets, transforms

    with tempfile.TemporaryDirectory() as root:
        raw = Path(root) / "FashionMNIST" / "raw"
        raw.mkdir(parents=True)
        for f in Path(src).glob("*.gz"):
            with gzip.open(f) as src, open(raw / f.stem, "wb") as dst:
                shutil.copyfileobj(src, dst)
        tf = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                 transforms.ToTensor(), transforms.Normalize((0.2860,), (0.3530,))])
        dset = datasets.FashionMNIST(root, train=True, download=False, transform=tf)
        dl = torch.utils.data.DataLoader(dset, batch_size=batch, shuffle=True, num_workers=workers,
                                         drop_last=True)
        it = iter(dl)
        next(it)  # worker start-up excluded
        t = time.perf_counter()
        for _ in range(batches):
            next(it)
        return batches * batch / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=12, help="timed search steps per variant")
    ap.add_argument("--rounds", type=int, default=3, help="rounds over the search modes, in turn")
    ap.add_argument("--dataloader-batches", type=int, default=150)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    ap.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files")
    ap.add_argument("--profile", action="store_true", help="also print where a step of ours goes (CPU)")
    ap.add_argument("--quality", default=None, choices=["smoke", "quick", "paper"],
                    help="also search with every mode at this preset and measure α*'s quality (minutes per mode)")
    ap.add_argument("--member-set", action="append", default=[], metavar="KEY=VALUE",
                    help="TrainConfig override for the --quality members")
    ap.add_argument("--search-seed", type=int, default=None, help="the --quality searches' seed (default: the preset's)")
    ap.add_argument("--modes", default=",".join(MODES),
                    help="the modes (or VARIANTS) whose α* quality --quality checks, the reference first")
    a = ap.parse_args()
    unknown = [n for n in a.modes.split(",") if n not in CHECKABLE]
    if unknown:
        ap.error(f"--modes: unknown {', '.join(unknown)}; choose from {', '.join(CHECKABLE)}")
    configure_threads(a.threads)  # as every search process: its threads and allocator
    device = resolve_device(a.device)
    cfg = from_preset(SearchConfig, "paper", {"epochs": 1, "log_every": 1})
    ds = load_dataset("fashion-mnist", a.data_dir, device=device)
    print(f"device {device_label(device)}, torch {torch.__version__}, "
          f"config C={cfg.channels} layers={cfg.layers} nodes={cfg.nodes} k={cfg.inputs_per_node} batch={cfg.batch_size}")

    cuda = device.type == "cuda"
    ours, theta = ours_step_ms(cfg, ds, device, a.steps, channels_last=True)
    if cuda:
        eager, theta_eager = ours_step_ms(cfg, ds, device, a.steps, channels_last=True, graphs=False)
    ours_nchw, _ = ours_step_ms(cfg, ds, device, a.steps, channels_last=False)
    plain = plain_step_ms(cfg, ds, device, a.steps)
    print(f"(a) search step, ours (channels_last{', bf16 autocast, CUDA graph' if cuda else ''}): {ours:8.1f} ms")
    if cuda:
        print(f"    search step, ours without CUDA graphs:    {eager:8.1f} ms   graph speedup {eager / ours:.2f}x; "
              f"θ after {a.steps} steps, graph vs eager: max |Δ| {(theta - theta_eager).abs().max():.2e} "
              f"(θ moved up to {theta_eager.abs().max():.2e})")
    print(f"    search step, ours in NCHW:                  {ours_nchw:8.1f} ms")
    if a.profile and not cuda:
        op_breakdown(cfg, ds, device)
    print(f"(b) search step, plain NCHW PyTorch:           {plain:8.1f} ms   speedup {plain / ours:.2f}x")

    modes, to_lowres = mode_steps(ds, device, a.steps, a.rounds)
    print(f"(d) search modes, paper config, ms per step (median of {a.rounds} rounds over the modes in turn):")
    for name, ms in modes.items():
        print(f"    {name:12s} {ms:8.1f} ms   {modes['darts'] / ms:.2f}x faster than full DARTS, "
              f"{to_lowres[name]:.2f}x the lowres step of the same round (median)")
    qual = None
    if a.quality:
        print(f"(e) α* quality per mode, {a.quality} preset (search, then genotype* and 3 random genotypes retrained):")
        seed = {} if a.search_seed is None else {"seed": str(a.search_seed)}
        qual = quality(a.quality, device, a.modes.split(","), dict(kv.split("=", 1) for kv in a.member_set), seed)
    ok = {n: ms for n, ms in modes.items() if qual is None or holds(qual, n)}
    fastest = min(ok, key=ok.get) if ok else "none"
    li = loader_img_s(ds, device, cfg.batch_size)
    di = dataloader_img_s(a.data_dir or DEBIAN_FASHION_DIR, cfg.batch_size, a.dataloader_batches, a.workers)
    print(f"(c) DeviceLoader: {li:,.0f} img/s; torchvision DataLoader ({a.workers} workers): {di:,.0f} img/s; "
          f"speedup {li / di:.1f}x")
    print(f"RESULT search_step_ms={ours:.1f} plain_step_ms={plain:.1f} speedup_vs_plain={plain / ours:.2f} "
          f"loader_img_s={li:.0f} dataloader_img_s={di:.0f} loader_speedup={li / di:.1f} "
          f"fastest_mode={fastest} fastest_step_ms={modes.get(fastest, float('nan')):.1f} "
          f"fastest_to_lowres={to_lowres.get(fastest, float('nan')):.2f} "
          f"fastest_quality_checked={qual is not None} "
          f"beats_random={qual[fastest]['beats_random'] if qual and fastest in qual else 'nan'}")


if __name__ == "__main__":
    main()
