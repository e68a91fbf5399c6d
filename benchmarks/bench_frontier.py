"""What diversity costs in member strength, and the training-free levers against DeepEns (issue 27).

(1) The strength frontier: positions on one hypernetwork's diversity axis (default the bundled
    demo's `edges`, positions 0, ¼, ½, ¾, 1), each position's architecture retrained with the
    `quick` recipe per seed by the product's own workers (a scratch copy of the run's search and
    hypernetworks under benchmarks/results/tmp/; nothing is written into the source run). Per
    position: validation NLL and accuracy (mean ± sd over seeds), its strength cost against α*
    (Δ val NLL), and the diversity it buys: D, the Jensen gap of the pair {α* seed s, it seed s} on
    validation, against the pair of two α* seeds. The one-shot estimate (`nes.method.oneshot`) of
    each architecture beside it, and its Spearman ρ with −(retrained validation NLL).
(2) The levers that need no training (`nes.method.levers`) on the run's EdgeNES members against
    its DeepEns baseline at M members: each row's NLL gap with the ledger's split into strength
    and diversity, every term with its paired 95 % interval over the full test set.

Validation chooses (forward selection, temperatures); the test split is scored once per row.

    python benchmarks/bench_frontier.py                       # ~15 min on 2 cores
    python benchmarks/bench_frontier.py --skip-train          # (2) only, seconds

Last line: RESULT edgenes_nll=… deepens_nll=… gap=… gap_lo=… gap_hi=… strength_term=… diversity_term=…
hybrid_gap=… hybrid_gap_lo=… hybrid_gap_hi=… estimate_rho=…
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nes.explorer.demo import DEMO_DIR  # noqa: E402
from nes.explorer.runview import RunView  # noqa: E402
from nes.layout import STAR, RunDir, member_name  # noqa: E402
from nes.method import levers  # noqa: E402
from nes.method.diversity import spearman  # noqa: E402
from nes.method.ledger import ledger  # noqa: E402
from nes.method.oneshot import one_shot_accuracy, one_shot_setup  # noqa: E402
from nes.method.regularizers import diversity_lam  # noqa: E402
from nes.method.scoring import MemberProbs  # noqa: E402
from nes.method.stats import Difference  # noqa: E402

SCRATCH = ROOT / "benchmarks" / "results" / "tmp" / "frontier"


def scratch_run(source: Path) -> Path:
    """A fresh store home with a copy of SOURCE's search, hypernetworks and run.json (no members)."""
    home = SCRATCH / "home"
    if SCRATCH.exists():
        shutil.rmtree(SCRATCH)  # our own scratch folder, rebuilt every run
    run = home / "frontier"
    run.mkdir(parents=True)
    for part in ("search", "hypernet", "run.json"):
        src = source / part
        if src.is_dir():
            shutil.copytree(src, run / part)
        elif src.exists():
            shutil.copy2(src, run / part)
    return run


def positions(view: RunView, reg: str, where: list[float]) -> list[dict]:
    """Each position's λ, architecture, distance to α* and matched edges."""
    lo, hi = view.lam_range(reg).target
    out = []
    for d in where:
        s = view.sample(reg, [diversity_lam(reg, d, lo, hi)])[0]
        out.append({"position": d, "lam": s.lam, "genotype": s.genotype, "distance": s.distance,
                    "matched": s.matched_edges, "star": s.genotype == view.star})
    return out


def train(run: Path, reg: str, rows: list[dict], seeds: list[int]) -> None:
    """Retrain every distinct architecture of ROWS per seed in the product's workers (2 at once);
    fills each row's member names."""
    os.environ["NES_HOME"] = str(run.parent)
    os.environ.setdefault("NES_MAX_WORKERS", "2")
    from nes.runs.jobs import submit, wait
    from nes.runs.store import Store

    store, jobs, by_genotype = Store(), [], {}
    for r in rows:
        if r["genotype"] not in by_genotype:
            by_genotype[r["genotype"]] = [member_name(STAR, seed=s) if r["star"] else member_name(reg, r["lam"], s)
                                          for s in seeds]
            for name, s in zip(by_genotype[r["genotype"]], seeds):
                jobs.append(submit(store, run.name, "retrain", {"preset": "quick", "genotype": r["genotype"].to_dict(),
                                                                "name": name, "seed": s}))
        r["members"] = by_genotype[r["genotype"]]
    done = wait(store, jobs, poll=2.0)
    failed = [j for j in done if j.status != "done"]
    if failed:
        raise SystemExit(f"{len(failed)} member(s) failed: " + "; ".join(f"#{j.id} {j.error}" for j in failed))


def frontier(run: Path, rows: list[dict]) -> float | None:
    """Print the frontier table; return the one-shot estimate's ρ with −(validation NLL)."""
    probs = MemberProbs.load(run, sorted({n for r in rows for n in r["members"]}))
    val = probs.member_metrics("val")
    star = next(r for r in rows if r["star"])
    star_nll = statistics.mean(val[n]["nll"] for n in star["members"])
    pair = lambda a, b: ledger(probs.subset([a, b]).val, probs.val_y)["diversity_nll"]  # noqa: E731
    seeds_d = pair(*star["members"][:2]) if len(star["members"]) > 1 else float("nan")
    setup = one_shot_setup(run)
    print(f"(1) frontier: validation NLL per position (mean ± sd over {len(star['members'])} seeds); D = Jensen gap of "
          f"the pair {{α* seed s, it seed s}} on validation (two α* seeds: D = {seeds_d:.4f})")
    print("    position   λ      distance matched  val NLL            Δ vs α*   val acc   D with α*  one-shot")
    est, nlls = [], []
    for r in rows:
        v = [val[n]["nll"] for n in r["members"]]
        d = statistics.mean(pair(a, b) for a, b in zip(star["members"], r["members"]) if a != b) if not r["star"] else 0.0
        r["one_shot"] = one_shot_accuracy(setup, r["genotype"])
        est.append(r["one_shot"]), nlls.append(-statistics.mean(v))
        print(f"    {r['position']:5.2f}  {r['lam']:7.3f}  {r['distance']:7.3f}  {r['matched']:5d}   "
              f"{statistics.mean(v):.4f} ± {statistics.stdev(v) if len(v) > 1 else 0:.4f}  {statistics.mean(v) - star_nll:+.4f}  "
              f"{100 * statistics.mean(val[n]['accuracy'] for n in r['members']):6.2f} %  {d:9.4f}  {100 * r['one_shot']:5.1f} %"
              f"   {r['genotype'].compact()}")
    distinct = {r["genotype"] for r in rows}
    rho = spearman(est, nlls) if len(distinct) >= 3 else None
    print(f"    one-shot estimate vs −(retrained val NLL): Spearman ρ = {rho if rho is None else round(rho, 3)} "
          f"over {len(rows)} positions ({len(distinct)} distinct architectures)")
    return rho


def lever_table(source: Path, size: int) -> list[levers.LeverRow]:
    """Print every training-free lever's row against the run's DeepEns baseline (seed 0)."""
    rd = RunDir(source)
    base = rd.baseline("deepens", 0)
    edgenes = MemberProbs.load(source, rd.finished_members())
    deepens = MemberProbs.load(base.path, base.finished_members())
    rows = levers.lever_rows(edgenes, deepens, size)
    print(f"(2) levers at M = {size} against DeepEns ({', '.join(deepens.names[:size])}), full test set; this − DeepEns:")
    for r in rows:
        g = {k: Difference.from_dict(v) for k, v in r.gap.items()}
        print(f"    {r.lever}: NLL {r.ledger['nll']:.4f}, gap {g['nll'].text()}")
        print(f"        strength (mean member NLL) {g['mean_member_nll'].text()}; diversity D {g['diversity_nll'].text()}; "
              f"accuracy {g['accuracy'].text()}")
        print(f"        members: {', '.join(r.members)}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default=str(DEMO_DIR), help="a run with a search, hypernetworks, members and a DeepEns baseline")
    ap.add_argument("--regularizer", default="edges")
    ap.add_argument("--positions", default="0,0.25,0.5,0.75,1")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--members", type=int, default=5, help="ensemble size M of the levers")
    ap.add_argument("--skip-train", action="store_true", help="only the training-free levers (2)")
    a = ap.parse_args()
    source = Path(a.run).resolve()
    rho = None
    if not a.skip_train:
        run = scratch_run(source)
        rows = positions(RunView(run), a.regularizer, [float(x) for x in a.positions.split(",")])
        train(run, a.regularizer, rows, [int(s) for s in a.seeds.split(",")])
        rho = frontier(run, rows)
    rows = lever_table(source, a.members)
    first = {k: Difference.from_dict(v) for k, v in rows[0].gap.items()}
    hybrid = Difference.from_dict(next(r for r in rows if r.lever.startswith("hybrid pool (α*")).gap["nll"])
    deepens_nll = rows[0].ledger["nll"] - first["nll"].value
    print(f"RESULT edgenes_nll={rows[0].ledger['nll']:.4f} deepens_nll={deepens_nll:.4f} gap={first['nll'].value:+.4f} "
          f"gap_lo={first['nll'].lo:+.4f} gap_hi={first['nll'].hi:+.4f} strength_term={first['mean_member_nll'].value:+.4f} "
          f"diversity_term={first['diversity_nll'].value:+.4f} hybrid_gap={hybrid.value:+.4f} hybrid_gap_lo={hybrid.lo:+.4f} "
          f"hybrid_gap_hi={hybrid.hi:+.4f} estimate_rho={'n/a' if rho is None else f'{rho:.3f}'}")


if __name__ == "__main__":
    main()
