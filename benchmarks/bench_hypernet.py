"""Hypernetwork benchmark: does λ control diversity, and what does one-shot training save?

On one run (the `quick` preset by default; `--preset paper` on a GPU): a DARTS search, then the
hypernetwork trained with each regularizer, then 5 per-λ `edges` searches (λ = 0..Λ evenly), all
with the same loop settings. Prints, for 9 λ over the range, matched edges and JS to α* for both
hypernetworks, and:
  rho_edges    Spearman ρ(λ, matched edges) of the `edges` hypernetwork   (target ≥ 0.8)
  rho_js       Spearman ρ(λ, JS to α*) of the `js` hypernetwork           (target ≥ 0.8)
  step_ratio   hypernetwork step time / search step time                  (target ≤ 1.2)
  oneshot_ratio  time(5 per-λ searches) / time(one hypernetwork training) (target ≥ 4)
Last line: RESULT rho_edges=… rho_js=… step_ratio=… oneshot_ratio=…
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nes.config import SearchConfig, from_preset  # noqa: E402
from nes.method.diversity import lam_grid, sample_architectures  # noqa: E402
from nes.method.darts import load_search, search  # noqa: E402
from nes.method.hypernet import fixed_lambda_search, hypernet_config, lam_range, train_hypernet  # noqa: E402
from nes.runtime import resolve_device  # noqa: E402


def rho(x, y) -> float:
    if len(set(y)) < 2:
        return float("nan")  # constant: no ranking to correlate
    return float(spearmanr(x, y).statistic)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="quick", choices=["smoke", "quick", "paper"])
    ap.add_argument("--device", default=None)
    ap.add_argument("--run", default=None, help="run folder (default: a temporary one)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a HypernetConfig field for the hypernetworks and per-λ searches")
    ap.add_argument("--per-lambda", type=int, default=5, help="number of per-λ searches")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--search-set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a SearchConfig field of the base search (e.g. epochs=5)")
    a = ap.parse_args()
    device = resolve_device(a.device)
    tmp = tempfile.TemporaryDirectory()
    run = Path(a.run or tmp.name)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, preset {a.preset}, run {run}")

    s_sets = dict(kv.split("=", 1) for kv in a.search_set)
    if a.data_dir:
        s_sets["data_dir"] = a.data_dir
    s_cfg = from_preset(SearchConfig, a.preset, s_sets)
    s_res = search(s_cfg, run, device)
    search_step = s_res.seconds / s_res.steps
    _, layout, _, star = load_search(run)
    print(f"search: {s_res.steps} steps, {1000 * search_step:.0f} ms/step; genotype* {star.compact()}")

    sets = dict(kv.split("=", 1) for kv in a.set)
    results = {}
    for reg in ("edges", "js"):
        cfg = hypernet_config(run, a.preset, {**sets, "regularizer": reg})
        hyper, res = train_hypernet(cfg, run, device)
        lo, hi = lam_range(cfg, star)
        lams = lam_grid(lo, hi, 9)
        samples = sample_architectures(hyper, layout, star, lams, cfg.tau)
        results[reg] = (cfg, res, samples)
        print(f"\nhypernetwork ({reg}): {res.steps} steps in {res.seconds:.1f} s ({1000 * res.seconds / res.steps:.0f} ms/step)")
        print(f"{'lam':>6} {'matched':>8} {'JS to α*':>9}  genotype")
        for s in samples:
            print(f"{s.lam:>6.2f} {s.matched_edges:>8d} {s.js_to_star:>9.4f}  {s.genotype.compact()}")

    e_cfg, e_res, e_samples = results["edges"]
    j_cfg, j_res, j_samples = results["js"]
    rho_edges = rho([s.lam for s in e_samples], [s.matched_edges for s in e_samples])
    rho_js = rho([s.lam for s in j_samples], [s.js_to_star for s in j_samples])
    hyper_step = e_res.seconds / e_res.steps
    step_ratio = hyper_step / search_step

    lo, hi = lam_range(e_cfg, star)
    per_lambda_seconds = 0.0
    print(f"\nper-λ searches ({a.per_lambda}, edges regularizer, same settings):")
    for i in range(a.per_lambda):
        lam = lo + (hi - lo) * i / max(1, a.per_lambda - 1)
        r = fixed_lambda_search(e_cfg, run, lam, device)
        per_lambda_seconds += r.seconds
        print(f"  λ={lam:.2f}: matched {r.genotype.matched_edges(star)}  {r.genotype.compact()}  ({r.seconds:.1f} s)")
    oneshot = per_lambda_seconds / e_res.seconds if a.per_lambda else float("nan")
    print(f"\nrho_edges {rho_edges:.3f} (≥ 0.8), rho_js {rho_js:.3f} (≥ 0.8), step ratio {step_ratio:.2f} (≤ 1.2), "
          f"one-shot ratio {oneshot:.2f} (≥ 4)")
    print(f"RESULT rho_edges={rho_edges:.3f} rho_js={rho_js:.3f} step_ratio={step_ratio:.3f} oneshot_ratio={oneshot:.2f}")


if __name__ == "__main__":
    main()
