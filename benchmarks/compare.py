"""EdgeNES against the baselines: mean ± std over seeds of accuracy, NLL, ECE, disagreement, costs.

Per seed: one run (search with that seed, both hypernetworks), then every method of
`nes.method.baselines` with ensemble size M under the same member settings: single α*, DeepEns, DARTS
ensemble, random deviation, NES-RS, NES-RE, per-λ search, EdgeNES (js) and EdgeNES (edges).
Writes a markdown table and plotly figures (HTML + JSON) to benchmarks/results/.

    python benchmarks/compare.py --dataset fashion-mnist --preset quick --seeds 3
    python benchmarks/compare.py --dataset digits --preset smoke --seeds 2      # minutes: a dry run
    python benchmarks/compare.py ... --shift [clean|shifted]    # also every method under dataset shift

The report ends with each method's verdict against DeepEns in words (equal members, equal cost), and
the best ensemble the levers (`nes.method.levers`) build from EdgeNES (edges)'s pool, alone or with
α*'s seeds, against DeepEns: clean and, with --shift, per severity.
Last line: RESULT edges_gain_pts=<EdgeNES(edges) accuracy − its best member (by validation NLL), points>
edges_vs_deepens_pts=<EdgeNES(edges) − DeepEns, points>; the report gives each with its paired bootstrap interval;
edges_search_cost_vs_darts=<its search cost / the DARTS ensemble's> (plus the mean accuracies).
Everything resumes: rerunning continues where it stopped. Seeds can run in parallel processes
(`--only 0 1` and `--only 2`, one core each with NES_THREADS=1 and taskset); a last run without
`--only` reuses them and writes the report.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ORDER = ["single", "deepens", "darts", "random", "nes-rs", "nes-re", "per-lambda", "edgenes-js", "edgenes-edges"]
LABEL = {"single": "single α*", "deepens": "DeepEns", "darts": "DARTS ensemble", "random": "random deviation",
         "nes-rs": "NES-RS", "nes-re": "NES-RE", "per-lambda": "per-λ search", "edgenes-js": "EdgeNES (js)",
         "edgenes-edges": "EdgeNES (edges)"}


def one_seed(work: Path, dataset: str, preset: str, seed: int, members: int, budget: int, train_sets: dict,
             device: str | None, log, shift: str | None = None) -> dict[str, dict]:
    from nes.artifacts import write_json
    from nes.method.baselines import METHODS, run_baseline
    from nes.runs.tasks import hypernet_task, search_task

    run = work / f"seed{seed}"
    run.mkdir(parents=True, exist_ok=True)
    if not (run / "run.json").exists():
        write_json(run / "run.json", {"preset": preset, "train_sets": train_sets})
    log(f"seed {seed}: search")
    search_task(run, {"preset": preset, "set": {"dataset": dataset, "seed": str(seed)}}, None, device)
    for reg in ("js", "edges", "js-target"):
        log(f"seed {seed}: hypernetwork ({reg})")
        hypernet_task(run, {"preset": preset, "regularizer": reg, "set": {"seed": str(seed)}}, None, device)
    out = {}
    for method in METHODS:
        log(f"seed {seed}: {method}")
        out[method] = run_baseline(run, method, members, seed=seed, budget=budget, n_edges=max(1, members - 1),
                                   preset=preset, device=device)
    from nes.method.baselines import method_differences
    diffs = {d["method"]: d for d in method_differences(run, list(out.values()), "deepens")}
    for method, d in diffs.items():
        out[method]["vs_deepens"] = d
    from nes.explorer.verdict import verdicts
    for v in verdicts(run, "deepens"):  # equal members (with the gain ledger) and equal cost, in words
        if v["method"] in out:
            out[v["method"]]["verdict"] = v
    if shift:  # every method's ensemble on the test corruptions, the same protocol for all
        from nes.explorer.shiftview import reports
        from nes.runs.tasks import shift_task
        log(f"seed {seed}: under dataset shift (select on {shift} validation)")
        shift_task(run, {"baselines": True, "select": shift}, None, device)
        for name, rep in reports(run).items():
            method = name.rsplit("_s", 1)[0]
            if method in out:
                out[method]["shift"] = rep
    from nes.method.levers import report as levers_report
    from nes.method.shift import ShiftSettings
    log(f"seed {seed}: the levers (EdgeNES (edges)'s pool with α*'s seeds, chosen on validation)")
    out["levers"] = levers_report(run, members, ShiftSettings() if shift else None, device,
                                  source=f"edgenes-edges_s{seed}")
    dee = out["deepens"]
    first = dee["members"][0]  # a single α* member is DeepEns' first member: same training, no extra cost
    single_cost = dee["costs"]["search_seconds"] + dee["costs"]["train"][first]
    out["single"] = {"ensemble": {**dee["members_metrics"][first], "disagreement": 0.0},
                     "costs": {"search_seconds": dee["costs"]["search_seconds"], "total_seconds": single_cost},
                     "by_size": dee["by_size"][:1], "members": [first]}
    return out


def verdict_section(per_seed: list[dict[str, dict]]) -> list[str]:
    """The report's last lines: per seed, each method's verdict against DeepEns in words
    (`nes.explorer.verdict`: at equal members with the gain ledger, and at equal cost)."""
    from nes.explorer.verdict import report_lines

    lines = ["", "Verdicts against DeepEns of the same seed (at equal members, then at equal cost; *within noise* "
             "where the 95 % interval holds 0):"]
    for s, r in enumerate(per_seed):
        lines += report_lines([r[m]["verdict"] for m in ORDER if "verdict" in r.get(m, {})], f"seed {s}: ")
    return lines


def shift_section(per_seed: list[dict[str, dict]], severities: tuple[int, ...] = (0, 1, 3, 5)) -> list[str]:
    """Under dataset shift: per method and severity the ensemble's NLL split into member strength −
    diversity (mean over seeds), then per seed EdgeNES (edges) against DeepEns in words."""
    from nes.explorer.shiftview import sentence

    have = [m for m in ORDER if all("shift" in r.get(m, {}) for r in per_seed)]
    if not have:
        return []
    first = per_seed[0][have[0]]["shift"]
    lines = ["", f"Under dataset shift ({first['images']} images per corruption and severity, corruptions "
             f"{', '.join(first['corruptions']['test'])}; best member and T on {first['select']} validation). "
             "NLL = mean member NLL − diversity D, mean over seeds:", "",
             "| method | " + " | ".join(f"severity {s}" for s in severities) + " |", "|---|" + "---|" * len(severities)]
    for m in have:
        cells = []
        for s in severities:
            rows = [next(x for x in r[m]["shift"]["by_severity"] if x["severity"] == s) for r in per_seed]
            mean = lambda k: statistics.mean(x[k] for x in rows)  # noqa: E731
            cells.append(f"{mean('nll'):.3f} = {mean('mean_member_nll'):.3f} − {mean('diversity_nll'):.3f}")
        lines.append(f"| {LABEL[m]} | " + " | ".join(cells) + " |")
    lines += ["", "EdgeNES (edges) against DeepEns under shift, per seed:"]
    for i, r in enumerate(per_seed):
        rep = r.get("edgenes-edges", {}).get("shift")
        lines += [f"- seed {i}: {t}" for s in severities if rep and (t := sentence(rep, s))]
    return lines


def levers_section(per_seed: list[dict[str, dict]]) -> list[str]:
    """Per seed, the best ensemble built from EdgeNES (edges)'s pool (alone or with α*'s seeds,
    picked on validation) against DeepEns, at equal members and at equal cost, clean and under shift."""
    from nes.explorer.leversview import verdict

    lines = ["", "The levers: EdgeNES (edges)'s pool, alone or with α*'s seeds, against DeepEns (nes.method.levers):"]
    for s, r in enumerate(per_seed):
        if "levers" in r:
            lines += [f"- seed {s}: {t.replace('**', '')}" for t in verdict(r["levers"])]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--preset", default="quick", choices=["smoke", "quick", "paper"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--only", type=int, nargs="+", default=None, metavar="SEED",
                    help="run just these seeds and stop (e.g. one process per core); a later run without "
                         "--only reuses them and writes the report")
    ap.add_argument("--members", type=int, default=3, help="ensemble size M")
    ap.add_argument("--budget", type=int, default=None, help="NES-RS/RE trainings and EdgeNES pool λs (default 2·M)")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="member TrainConfig overrides (all methods)")
    ap.add_argument("--work", default=str(ROOT / "benchmarks" / "results" / "tmp" / "compare"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--device", default=None)
    ap.add_argument("--shift", nargs="?", const="clean", default=None, choices=["clean", "shifted"],
                    help="also score every method under dataset shift (nes shift); the best member and T are chosen "
                         "on clean validation (default) or on the shifted validation corruptions, for every method")
    a = ap.parse_args()
    from nes.config import parse_sets
    from nes.runtime import device_label

    budget = a.budget or 2 * a.members
    work = Path(a.work) / f"{a.dataset}_{a.preset}_m{a.members}"
    t0 = time.time()
    per_seed = [one_seed(work, a.dataset, a.preset, s, a.members, budget, parse_sets(a.set), a.device,
                         lambda m: print(f"[{time.time() - t0:7.0f} s] {m}", file=sys.stderr, flush=True), a.shift)
                for s in (a.only if a.only is not None else range(a.seeds))]
    if a.only is not None:
        print(f"seeds {a.only} done in {time.time() - t0:.0f} s; run again without --only for the report")
        return

    def stat(method: str, get) -> tuple[float, float]:
        vals = [get(r[method]) for r in per_seed]
        return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)

    rows = []
    for m in ORDER:
        acc = stat(m, lambda r: 100 * r["ensemble"]["accuracy"])
        rows.append({
            "method": LABEL[m], "key": m, "accuracy": acc, "nll": stat(m, lambda r: r["ensemble"]["nll"]),
            "ece": stat(m, lambda r: r["ensemble"]["ece"]),
            "disagreement": stat(m, lambda r: r["ensemble"].get("disagreement", 0.0)),
            "search_s": stat(m, lambda r: r["costs"]["search_seconds"]),
            "total_s": stat(m, lambda r: r["costs"]["total_seconds"]),
        })
    fmt = lambda v, d: f"{v[0]:.{d}f} ± {v[1]:.{d}f}"  # noqa: E731
    lines = [f"# EdgeNES vs baselines — {a.dataset}, preset {a.preset}, M = {a.members}, {a.seeds} seed(s)", "",
             f"Device: {device_label()}; wall time of this invocation {time.time() - t0:.0f} s (a rerun reuses "
             "finished work). Costs are training device-seconds "
             "(search = searches + hypernetwork; total = search + every member trained, pools included).", "",
             "| method | accuracy % | NLL | ECE | disagreement | search cost s | total cost s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {fmt(r['accuracy'], 2)} | {fmt(r['nll'], 3)} | {fmt(r['ece'], 3)} | "
                     f"{fmt(r['disagreement'], 3)} | {fmt(r['search_s'], 0)} | {fmt(r['total_s'], 0)} |")
    from nes.method.stats import Difference
    # the best member is chosen by validation NLL (never on the test set), see nes.method.stats
    vs_best = [(Difference.from_dict(r["edgenes-edges"]["vs_best_member"]["accuracy"]),
                Difference.from_dict(r["edgenes-edges"]["vs_best_member"]["nll"])) for r in per_seed]
    gain = statistics.mean(a.value for a, _ in vs_best)
    darts = statistics.mean(r["darts"]["costs"]["search_seconds"] for r in per_seed)
    ratio = statistics.mean(r["edgenes-edges"]["costs"]["search_seconds"] for r in per_seed) / max(darts, 1e-9)
    nll_gain = statistics.mean(-n.value for _, n in vs_best)
    vs_dee = [Difference.from_dict(r["edgenes-edges"]["vs_deepens"]["accuracy"]) for r in per_seed
              if "vs_deepens" in r["edgenes-edges"]]
    acc = {r["key"]: r["accuracy"][0] for r in rows}
    # The DARTS ensemble pays one search per member; EdgeNES pays one search + one hypernetwork for any M.
    per_member = darts / a.members
    edges_search = statistics.mean(r["edgenes-edges"]["costs"]["search_seconds"] for r in per_seed)
    breakeven = edges_search / (0.6 * max(per_member, 1e-9))
    ok = lambda c: "met" if c else "not met"  # noqa: E731
    lines += ["", f"EdgeNES (edges): ensemble − its best member (by validation NLL) = {gain:+.2f} points (mean over "
              f"seeds); search cost / DARTS ensemble's = {ratio:.2f}.", "",
              "Paired bootstrap 95 % intervals over the test images, per seed:"]
    lines += [f"- seed {s}: EdgeNES (edges) − best member: accuracy {a.text()}, NLL {n.text()}"
              for s, (a, n) in enumerate(vs_best)]
    lines += [f"- seed {s}: EdgeNES (edges) − DeepEns: accuracy {d.text()}" for s, d in enumerate(vs_dee)]
    lines += ["",
              "Targets (issue #6, quick preset):",
              f"- ensemble ≥ best single member + 0.5 points: {gain:+.2f} → {ok(gain >= 0.5)}",
              f"- lower NLL than the best single member's: {nll_gain:+.3f} lower → {ok(nll_gain > 0)}",
              f"- not worse than DeepEns: {acc['edgenes-edges']:.2f} vs {acc['deepens']:.2f} % → "
              f"{ok(acc['edgenes-edges'] >= acc['deepens'])}",
              f"- search cost ≤ 60 % of the DARTS ensemble's: {100 * ratio:.0f} % → {ok(ratio <= 0.6)}; "
              f"the DARTS ensemble pays {per_member:.0f} s of search per member, EdgeNES {edges_search:.0f} s once "
              f"(search + hypernetwork) for any M, so it is ≤ 60 % from M ≥ {breakeven:.1f} members."]
    lines += shift_section(per_seed)
    lines += verdict_section(per_seed)
    lines += levers_section(per_seed)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"compare_{a.dataset}_{a.preset}_m{a.members}_s{a.seeds}"
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    (out / f"{stem}.json").write_text(json.dumps({"rows": rows, "per_seed": per_seed}, indent=1, default=str))
    try:
        from nes.explorer import viz

        figs = viz.compare_figures({LABEL[m]: [r[m] for r in per_seed] for m in ORDER})
        for name, fig in figs.items():
            fig.write_html(out / f"{stem}_{name}.html", include_plotlyjs="cdn")
    except ImportError as e:
        print(f"no plots: {e}", file=sys.stderr)
    print("\n".join(lines))
    vs_dee_pts = statistics.mean(d.value for d in vs_dee) if vs_dee else float("nan")
    print(f"RESULT edges_gain_pts={gain:.2f} edges_vs_deepens_pts={vs_dee_pts:.2f} edges_search_cost_vs_darts={ratio:.2f} edges_nll_gain={nll_gain:.3f} "
          f"breakeven_members={breakeven:.1f} "
          f"acc_edges={acc['edgenes-edges']:.2f} acc_deepens={acc['deepens']:.2f} acc_single={acc['single']:.2f}")


if __name__ == "__main__":
    main()
