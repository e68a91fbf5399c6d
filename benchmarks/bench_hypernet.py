"""Hypernetwork benchmark: does λ control diversity, and what does one-shot training save?

For each of `--seeds` runs (the `quick` preset on Fashion-MNIST by default): a DARTS search, then
the hypernetwork trained with each regularizer (`edges`, `js-target`, `js`). For 9 points of the
diversity axis (0 = α*, 1 = most diverse) it prints matched edges and the distance to α* (JS_g,
over genotype*'s kept edges and nodes), and per regularizer:
  rho_*       Spearman ρ(distance to α*, diversity), the minimum over seeds   (target ≥ 0.9)
  distinct_*  distinct genotypes on the 9-point grid, the minimum over seeds  (target ≥ 5)
  star_end_js the largest distance at the α* end over seeds and the target regularizers (≤ 0.01)
On the first run also 5 per-λ `edges` searches:
  step_ratio     hypernetwork step time / search step time
  oneshot_ratio  time(per-λ searches) / time(one hypernetwork training)
Last line: RESULT rho_edges=… rho_js_target=… rho_js=… distinct_edges=… distinct_js_target=…
distinct_js=… star_end_js=… step_ratio=… oneshot_ratio=…
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nes.config import SearchConfig, from_preset  # noqa: E402
from nes.method.darts import confidence, load_search, search  # noqa: E402
from nes.method.diversity import grid_quality  # noqa: E402
from nes.method.hypernet import fixed_lambda_search, hypernet_config, load_hypernet, train_hypernet  # noqa: E402
from nes.method.regularizers import LamRange, diversity_lam  # noqa: E402
from nes.runtime import device_label, resolve_device  # noqa: E402

REGS = ("edges", "js-target", "js")


def one_seed(run: Path, seed: int, a, device) -> dict:
    s_sets = {**dict(kv.split("=", 1) for kv in a.search_set), "seed": str(seed)}
    if a.data_dir:
        s_sets["data_dir"] = a.data_dir
    s_res = search(from_preset(SearchConfig, a.preset, s_sets), run, device)
    s = load_search(run)
    conf = confidence(s.layout, s.theta)
    print(f"\nseed {seed} search: {s_res.steps} steps, {1000 * s_res.seconds / s_res.steps:.0f} ms/step; "
          f"genotype* {s.star.compact()}; kept-edge top-op p {conf['kept_top_op']:.3f}, "
          f"input margin {conf['input_margin']:.3f}")
    out = {"search_step": s_res.seconds / s_res.steps}
    for reg in REGS:
        cfg = hypernet_config(run, a.preset, {**dict(kv.split("=", 1) for kv in a.set), "regularizer": reg,
                                              "seed": str(seed)})
        _, res = train_hypernet(cfg, run, device)
        trained = load_hypernet(run, reg)
        grid = [diversity_lam(reg, i / 8, *trained.lam_range.target) for i in range(9)]
        samples = trained.sample(s, grid)
        q = grid_quality(samples)
        out[reg] = {"quality": q, "seconds": res.seconds, "steps": res.steps, "cfg": cfg}
        print(f"  {reg}: {res.steps} steps in {res.seconds:.1f} s; {q['distinct']} distinct of 9, "
              f"ρ = {q['rho']}, α* end distance {q['star_end_distance']:.4f}")
        print(f"  {'diversity':>9} {'lam':>7} {'matched':>8} {'distance':>9}  genotype")
        for x in samples:
            print(f"  {x.diversity:>9.3f} {x.lam:>7.3f} {x.matched_edges:>8d} {x.distance:>9.4f}  {x.genotype.compact()}")
    return out


def per_lambda(run: Path, r: dict, n: int, device) -> float:
    cfg = r["edges"]["cfg"]
    star = load_search(run).star
    lo, hi = LamRange.from_config(cfg, star).target
    total = 0.0
    print(f"\nper-λ searches ({n}, edges regularizer, same settings):")
    for i in range(n):
        lam = lo + (hi - lo) * i / max(1, n - 1)
        res = fixed_lambda_search(cfg, run, lam, device)
        total += res.seconds
        print(f"  λ={lam:.2f}: matched {res.genotype.matched_edges(star)}  {res.genotype.compact()}  ({res.seconds:.1f} s)")
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="quick", choices=["smoke", "quick", "paper"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--device", default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="HypernetConfig override")
    ap.add_argument("--search-set", action="append", default=[], metavar="KEY=VALUE", help="SearchConfig override")
    ap.add_argument("--per-lambda", type=int, default=5, help="number of per-λ searches (first seed)")
    ap.add_argument("--data-dir", default=None)
    a = ap.parse_args()
    device = resolve_device(a.device)
    print(f"device {device_label(device)}, torch {torch.__version__}, preset {a.preset}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(a.seeds):
            run = Path(tmp) / f"seed{seed}"
            results.append(one_seed(run, seed, a, device))
            if seed == 0 and a.per_lambda:
                first_pl = per_lambda(run, results[0], a.per_lambda, device)
    r0 = results[0]
    step_ratio = (r0["edges"]["seconds"] / r0["edges"]["steps"]) / r0["search_step"]
    oneshot = first_pl / r0["edges"]["seconds"] if a.per_lambda else float("nan")
    key = {"edges": "edges", "js-target": "js_target", "js": "js"}
    figs = {}
    for reg in REGS:
        qs = [r[reg]["quality"] for r in results]
        rhos = [q["rho"] if q["rho"] is not None else float("nan") for q in qs]
        figs[f"rho_{key[reg]}"] = min(rhos)
        figs[f"distinct_{key[reg]}"] = min(q["distinct"] for q in qs)
        print(f"{reg}: ρ per seed {rhos}, distinct per seed {[q['distinct'] for q in qs]}, "
              f"α* end distance per seed {[round(q['star_end_distance'], 4) for q in qs]}")
    star_end = max(r[reg]["quality"]["star_end_distance"] for r in results for reg in ("edges", "js-target"))
    print("targets (edges, js-target, every seed): ρ ≥ 0.9, ≥ 5 distinct of 9, α* end distance ≤ 0.01")
    print("RESULT " + " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in figs.items())
          + f" star_end_js={star_end:.4f} step_ratio={step_ratio:.3f} oneshot_ratio={oneshot:.2f}")


if __name__ == "__main__":
    main()
