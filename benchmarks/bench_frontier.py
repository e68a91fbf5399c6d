"""What diversity costs in member strength, and the training-free levers against DeepEns (issue 27).

(1) The strength frontier: positions on one hypernetwork's diversity axis (default the bundled
    demo's `edges`, positions 0, ¼, ½, ¾, 1), each position's architecture retrained with the
    `quick` recipe per seed by the product's own workers (a scratch copy of the run's search and
    hypernetworks under benchmarks/results/tmp/; nothing is written into the source run). Per
    position: validation NLL and accuracy (mean ± sd over seeds), its strength cost against α*
    (Δ val NLL), and the diversity it buys: D, the Jensen gap of the pair {α* seed s, it seed s} on
    validation, against the pair of two α* seeds. The one-shot estimate (`nes.method.oneshot`) of
    each architecture beside it, and its Spearman ρ with −(retrained validation NLL).
(3) With --strength-aware: members chosen without training by the one-shot estimate (strong: within
    2 points of α*'s; of those the most distant from α*), retrained, against α*'s own seeds trained
    the same way, and the forward selection from every network trained here. With --predicted the
    same for members chosen by forward selection of the ensemble NLL predicted from one-shot
    probabilities. With --replicates N each is repeated with new training seeds, and the gap's mean
    over replicates gets a t-interval (training-seed noise, which the per-replicate intervals omit).
(2) The levers that need no training (`nes.method.levers`) on the run's EdgeNES members against
    its DeepEns baseline at M members: each row's NLL gap with the ledger's split into strength
    and diversity, every term with its paired 95 % interval over the full test set.

Validation chooses (forward selection, temperatures); the test split is scored once per row.

    python benchmarks/bench_frontier.py                       # ~15 min on 2 cores
    python benchmarks/bench_frontier.py --skip-train          # (2) only, seconds
    python benchmarks/bench_frontier.py --reuse --strength-aware   # and (3), reusing (1)'s members
    python benchmarks/bench_frontier.py --reuse --strength-aware --replicates 2 --shift   # (3) twice, under shift too
    python benchmarks/bench_frontier.py --reuse --keep-strength 0.3 --replicates 2 --shift   # (4): one that keeps strength
    python benchmarks/bench_frontier.py --reuse --predicted --replicates 3 --shift   # (3) by predicted ensemble NLL

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

from nes.artifacts import read_json  # noqa: E402
from nes.explorer import leversview  # noqa: E402
from nes.explorer.demo import DEMO_DIR  # noqa: E402
from nes.explorer.runview import RunView  # noqa: E402
from nes.layout import STAR, RunDir, member_name  # noqa: E402
from nes.method import levers  # noqa: E402
from nes.method.diversity import lam_grid, spearman  # noqa: E402
from nes.method.ledger import ledger  # noqa: E402
from nes.method.ensemble import accuracy  # noqa: E402
from nes.method.oneshot import one_shot_accuracy, one_shot_probs, one_shot_setup  # noqa: E402
from nes.method.regularizers import diversity_lam  # noqa: E402
from nes.method.scoring import MemberProbs  # noqa: E402
from nes.method.space import Genotype  # noqa: E402
from nes.method.stats import Difference  # noqa: E402

SCRATCH = ROOT / "benchmarks" / "results" / "tmp" / "frontier"


def scratch_run(source: Path, reuse: bool = False) -> Path:
    """A fresh store home with a copy of SOURCE's search, hypernetworks and run.json (no members);
    with `reuse`, the one a previous run left (its members are not trained again)."""
    home = SCRATCH / "home"
    if reuse and (home / "frontier" / "search").exists():
        return home / "frontier"
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
            by_genotype[r["genotype"]] = [member_name(STAR, seed=s) if r["star"] else member_name(r.get("reg", reg), r["lam"], s)
                                          for s in r.get("seeds", seeds)]
            for name, s in zip(by_genotype[r["genotype"]], r.get("seeds", seeds)):
                if not RunDir(run).member(name).finished:  # a reused scratch run keeps what it trained
                    jobs.append(submit(store, run.name, "retrain", {"preset": "quick", "name": name, "seed": s,
                                                                    "genotype": r["genotype"].to_dict()}))
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
        est.append(r["one_shot"])
        nlls.append(-statistics.mean(v))
        print(f"    {r['position']:5.2f}  {r['lam']:7.3f}  {r['distance']:7.3f}  {r['matched']:5d}   "
              f"{statistics.mean(v):.4f} ± {statistics.stdev(v) if len(v) > 1 else 0:.4f}  {statistics.mean(v) - star_nll:+.4f}  "
              f"{100 * statistics.mean(val[n]['accuracy'] for n in r['members']):6.2f} %  {d:9.4f}  {100 * r['one_shot']:5.1f} %"
              f"   {r['genotype'].compact()}")
    distinct = {r["genotype"] for r in rows}
    rho = spearman(est, nlls) if len(distinct) >= 3 else None
    print(f"    one-shot estimate vs −(retrained val NLL): Spearman ρ = {rho if rho is None else round(rho, 3)} "
          f"over {len(rows)} positions ({len(distinct)} distinct architectures)")
    return rho


def estimate_agreement(run: Path) -> float | None:
    """The one-shot estimate against every architecture the scratch run has retrained (the frontier's
    positions and the picks of (3), any seed): per distinct genotype its estimate and its members'
    mean validation NLL and accuracy; returns Spearman ρ of estimate with −(val NLL)."""
    from nes.method.train import read_member
    rd, by = RunDir(run), {}
    for name in rd.finished_members():
        m = read_json(rd.member(name).metrics, dict, "a member's metrics")["metrics"]
        by.setdefault(read_member(rd.member(name)).genotype, []).append((m["val_nll"], m["val_accuracy"]))
    setup = one_shot_setup(run)
    rows = sorted(((one_shot_accuracy(setup, g), g, v) for g, v in by.items()), key=lambda r: -r[0])
    print(f"    every architecture retrained here ({len(rows)} distinct, {sum(len(v) for v in by.values())} members):")
    for est, g, v in rows:
        print(f"      one-shot {100 * est:5.1f} %  val NLL {statistics.mean(x[0] for x in v):.4f}  "
              f"val acc {100 * statistics.mean(x[1] for x in v):6.2f} %  ({len(v)} seeds)  {g.compact()}")
    rho = spearman([r[0] for r in rows], [-statistics.mean(x[0] for x in r[2]) for r in rows]) if len(rows) >= 3 else None
    print(f"    one-shot estimate vs −(retrained val NLL) over them: Spearman ρ = {rho if rho is None else round(rho, 3)}")
    return rho


def strength_aware_picks(run: Path, size: int, how: str = "strong") -> list[tuple]:
    """(3) Members chosen without training from every distinct architecture on the 33-point grids
    of the run's hypernetworks, by their one-shot estimates: "strong", the size − 1 most distant
    from α* among those within 2 points of α*'s estimate (`levers.strong_and_diverse`), or
    "predicted", forward selection of the predicted ensemble NLL after α* (`levers.predicted_selection`):
    [(genotype, reg, λ)]."""
    view, setup = RunView(run), one_shot_setup(run)
    reg_of, samples = {}, []
    for reg in view.regularizers():
        lo, hi = view.lam_range(reg).target
        for x in view.sample(reg, lam_grid(lo, hi, 33)):
            reg_of[id(x)] = reg
            samples.append(x)
    cands = levers.one_shot_candidates(setup, samples, {view.star})
    star_probs, y = one_shot_probs(setup, view.star), setup.loader.y.cpu()
    star_est = accuracy(star_probs, y)
    picked = levers.choose_untrained(cands, star_probs, y, size - 1, how)
    print(f"(3) {'predicted-NLL' if how == 'predicted' else 'strength-aware'} choice: {len(cands)} distinct architectures "
          f"on the grids, α* one-shot {100 * star_est:.1f} %, {sum(c.estimate >= star_est - 0.02 for c in cands)} within "
          f"2 points; picked ({'in the order forward selection added them' if how == 'predicted' else 'most distant first'}):")
    est = {id(c.sample): c.estimate for c in cands}
    for x in picked:
        print(f"    {x.genotype.compact()}  ({reg_of[id(x)]}, λ = {x.lam:.3g}, distance {x.distance:.3f}, "
              f"one-shot {100 * est[id(x)]:.1f} %)")
    return [(x.genotype, reg_of[id(x)], x.lam) for x in picked]


def strength_aware(run: Path, size: int, replicate: int, shift: bool, how: str = "strong") -> dict:
    """(3) The picked architectures (`strength_aware_picks`, HOW) trained with seeds 10r + 1 … 10r +
    size − 1 beside α* seed 10r, against α*'s seeds 10r … 10r + size − 1 (DeepEns) trained the same
    way (replicate r: new seeds, the same architectures); the levers report of the two sets
    (`levers.report`), clean and, with `shift`, per severity. Returns that report."""
    from nes.method.shift import ShiftSettings
    base = 10 * replicate
    rows = [{"genotype": RunView(run).star, "star": True, "lam": None, "seeds": [base + i for i in range(size)]}]
    for i, (g, reg, lam) in enumerate(strength_aware_picks(run, size, how), 1):
        rows.append({"genotype": g, "star": False, "reg": reg, "lam": lam, "seeds": [base + i]})
    train(run, "edges", rows, [])
    deepens = rows[0]["members"]
    strong = [deepens[0]] + [r["members"][0] for r in rows[1:]]
    rd = RunDir(run)
    rep = levers.report(run, size, ShiftSettings() if shift else None, sets=[(rd, strong), (rd, deepens)])
    print(f"    replicate {replicate}: EdgeNES = {', '.join(strong)}; DeepEns = {', '.join(deepens)}")
    print_gaps(rep, ("EdgeNES as trained", "hybrid pool (α* seeds + EdgeNES), forward selection",
                     "EdgeNES, per-member temperature"), shift)
    return rep


T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
"""Student t's 97.5 % quantile by degrees of freedom: the interval over training-seed replicates."""


def over_replicates(label: str, reps: list[dict], severities: tuple[int, ...]) -> None:
    """EdgeNES − DeepEns NLL ("EdgeNES as trained", the first lever row) per replicate and, over
    replicates, the mean with its 95 % t-interval: the training-seed noise the per-replicate
    intervals (test images only) leave out."""
    for sev in severities:
        gaps = [Difference.from_dict(leversview.rows_at(r, sev)[0]["gap"]["nll"]).value for r in reps]
        line = f"    {label}, {'clean' if sev == 0 else f'severity {sev}'}: EdgeNES − DeepEns NLL per replicate " \
               f"{', '.join(f'{g:+.4f}' for g in gaps)}"
        if len(gaps) > 1:
            m, half = statistics.mean(gaps), T95.get(len(gaps) - 1, 1.96) * statistics.stdev(gaps) / len(gaps) ** 0.5
            line += f"; mean {m:+.4f} (95 % t-interval over replicates {m - half:+.4f} to {m + half:+.4f})"
        print(line)


def print_gaps(rep: dict, wanted: tuple[str, ...], shift: bool) -> None:
    """The WANTED levers' rows of a levers report, clean and at severities 3 and 5."""
    for sev in [0] + ([3, 5] if shift else []):
        for r in leversview.rows_at(rep, sev):
            if r["lever"] in wanted:
                g = {k: Difference.from_dict(v) for k, v in r["gap"].items()}
                print(f"    {'clean' if sev == 0 else f'severity {sev}'}: {r['lever']} ({r['networks']} networks): "
                      f"NLL − DeepEns {g['nll'].text()}; strength {g['mean_member_nll'].value:+.4f}, "
                      f"diversity {g['diversity_nll'].value:+.4f}")


def keep_strength(source: Path, frontier_run: Path, size: int, shift: bool, weight_end: float,
                  replicate: int = 0) -> dict:
    """(4) A hypernetwork that keeps strength: js-target trained with its target weight c ramped to
    `weight_end` instead of the preset's (the task loss weighs relatively more), in a scratch run
    beside the frontier's (SOURCE's search, no other hypernetwork); members picked the product's
    way (`pick_members`, spread over the axis), trained with seeds 10r + 1 … 10r + size − 1 beside
    α* seed 10r, against the frontier run's α* seeds 10r … 10r + size − 1 (DeepEns, the same
    recipe; (3) trains them)."""
    from nes.config import HypernetConfig, from_preset
    from nes.method.shift import ShiftSettings
    from nes.runs.tasks import hypernet_task, sample_task
    run = frontier_run.parent / "keep"
    if not (run / "hypernet" / "js-target").exists():
        shutil.rmtree(run, ignore_errors=True)
        run.mkdir(parents=True)
        shutil.copytree(source / "search", run / "search")
        shutil.copy2(source / "run.json", run / "run.json")
        hypernet_task(run, {"preset": "quick", "regularizer": "js-target",
                            "set": {"target_weight_start": str(weight_end / 10), "target_weight_end": str(weight_end)}})
    view = RunView(run)
    preset = from_preset(HypernetConfig, "quick")
    print(f"(4) a hypernetwork that keeps strength: js-target, c ramped {weight_end / 10:g} → {weight_end:g} (the quick "
          f"preset: {preset.target_weight_start:g} → {preset.target_weight_end:g}); 9-point grid {view.quality('js-target')}")
    sample_task(run, {"members": size, "regularizer": "js-target", "preset": "quick"})
    picked = read_json(RunDir(run).samples_json, dict, "the sampled architectures")["samples"][1:]
    base = 10 * replicate
    rows = [{"genotype": view.star, "star": True, "lam": None, "seeds": [base]}]
    rows += [{"genotype": Genotype.from_dict(x["genotype"]), "star": False, "reg": "js-target", "lam": x["lam"],
              "seeds": [base + i]} for i, x in enumerate(picked, 1)]
    setup = one_shot_setup(run)
    for r in rows[1:]:
        print(f"    {r['genotype'].compact()}  (λ = {r['lam']:.3g}, one-shot {100 * one_shot_accuracy(setup, r['genotype']):.1f} %)")
    train(run, "js-target", rows, [])
    deepens = [member_name(STAR, seed=base + s) for s in range(size)]
    print(f"    replicate {replicate}: against {', '.join(deepens)}")
    rep = levers.report(run, size, ShiftSettings() if shift else None,
                        sets=[(RunDir(run), [r["members"][0] for r in rows]), (RunDir(frontier_run), deepens)])
    print_gaps(rep, ("EdgeNES as trained", "hybrid at equal cost (α* seeds + EdgeNES)"), shift)
    return rep


def print_rows(rows: list[levers.LeverRow], against: str) -> None:
    print(f"    this − DeepEns, {against}, full test set:")
    for r in rows:
        g = {k: Difference.from_dict(v) for k, v in r.gap.items()}
        print(f"    {r.lever}: NLL {r.ledger['nll']:.4f}, gap {g['nll'].text()}")
        print(f"        strength (mean member NLL) {g['mean_member_nll'].text()}; diversity D {g['diversity_nll'].text()}; "
              f"accuracy {g['accuracy'].text()}")
        print(f"        members: {', '.join(r.members)}")


def lever_table(source: Path, size: int) -> list[levers.LeverRow]:
    """Print every training-free lever's row against the run's DeepEns baseline (seed 0)."""
    rd = RunDir(source)
    base = rd.baseline("deepens", 0)
    edgenes = MemberProbs.load(source, rd.members_as_trained())
    deepens = MemberProbs.load(base.path, base.finished_members())
    rows = levers.lever_rows(edgenes, deepens, size)
    print(f"(2) levers at M = {size} on the run's own members:")
    print_rows(rows, f"the run's DeepEns ({', '.join(deepens.names[:size])})")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default=str(DEMO_DIR), help="a run with a search, hypernetworks, members and a DeepEns baseline")
    ap.add_argument("--regularizer", default="edges")
    ap.add_argument("--positions", default="0,0.25,0.5,0.75,1")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--members", type=int, default=5, help="ensemble size M of the levers")
    ap.add_argument("--skip-train", action="store_true", help="only the training-free levers (2)")
    ap.add_argument("--reuse", action="store_true", help="keep the scratch run's trained members from a previous run")
    ap.add_argument("--strength-aware", action="store_true", help="also (3): members chosen by the one-shot estimate")
    ap.add_argument("--predicted", action="store_true",
                    help="also (3) with forward selection of the ensemble NLL predicted from one-shot probabilities")
    ap.add_argument("--replicates", type=int, default=1, help="(3), (4) with new training seeds (10r + …) per replicate r")
    ap.add_argument("--shift", action="store_true", help="(3) also under shift (8 corruptions × severities 1–5)")
    ap.add_argument("--keep-strength", type=float, default=None, metavar="C",
                    help="also (4): a js-target hypernetwork whose target weight ends at C (weaker: the task loss "
                         "weighs more), its spread members against α*'s seeds")
    a = ap.parse_args()
    source = Path(a.run).resolve()
    rho = None
    if not a.skip_train:
        run = scratch_run(source, a.reuse)
        rows = positions(RunView(run), a.regularizer, [float(x) for x in a.positions.split(",")])
        train(run, a.regularizer, rows, [int(s) for s in a.seeds.split(",")])
        rho = frontier(run, rows)
        if a.strength_aware or a.predicted:
            rho = estimate_agreement(run)
        sevs = (0, 3, 5) if a.shift else (0,)
        for how, on in (("strong", a.strength_aware), ("predicted", a.predicted)):
            if on:
                reps = [strength_aware(run, a.members, r, a.shift, how) for r in range(a.replicates)]
                over_replicates("strength-aware" if how == "strong" else "predicted-NLL", reps, sevs)
        if a.keep_strength:
            for r in range(a.replicates):
                keep_strength(source, run, a.members, a.shift, a.keep_strength, r)
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
