"""Commands of the method: search, retrain, evaluate, import-arch, hypernet, sample, fixed-lambda, baseline."""
from __future__ import annotations

import argparse
import json
import sys

from ..config import SEARCH_MODES, SearchConfig, from_preset, parse_sets
from ..data import DATASETS
from ..layout import RunDir
from ..method.baselines import METHODS
from ..method.darts import load_search
from ..method.diversity import collapse_warning, lam_grid
from ..method.hypernet import load_hypernet
from ..method.interop_nni import load_genotype
from ..method.regularizers import AXES
from ..method.flaws import conv_free_cells, structural_flaws_mark, structural_flaws_note, unused_cells
from ..method.space import Genotype
from ..method.stats import Difference
from ..runs.tasks import (baseline_task, evaluate_task, fixed_lambda_task, hypernet_task, member_config,
                          retrain_task, search_task)
from .common import (Command, UserError, add_data_dir, add_device, add_json, add_preset, add_regularizer, add_run,
                     add_set, existing_run, genotype_arg, member_list, progress_bar, run_folder, run_task)


def _search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", help=f"{', '.join(DATASETS)} (default: the preset's)")
    add_preset(p, "paper")
    add_run(p, "run folder (created; an existing search resumes)")
    add_set(p, "SearchConfig")
    add_device(p, "auto (default), cpu, cuda, mps")
    add_data_dir(p)
    p.epilog = ("search modes (--set mode=…): " + "; ".join(f"{k}: {v}" for k, v in SEARCH_MODES.items())
                + "; --set downsample=2 searches on images shrunk 2x; --set arch_every=4 updates α on every 4th "
                  "step only, at 4x a_lr")


def cmd_search(a: argparse.Namespace) -> int:
    sets = parse_sets(a.set)
    if a.dataset:
        sets["dataset"] = a.dataset
    if a.data_dir:
        sets["data_dir"] = a.data_dir
    from_preset(SearchConfig, a.preset, sets)  # a bad setting fails here, before the run folder exists
    run = run_folder(a.run).path
    res = run_task("search", search_task, run, {"preset": a.preset, "set": sets}, a.device)
    print(f"genotype*: {res['compact']}")
    print(f"search: {res['steps']} steps in {res['seconds']:.1f} s")
    print(f"saved: {RunDir(run).search.genotype}")
    return 0


def _retrain_args(p: argparse.ArgumentParser) -> None:
    add_run(p)
    p.add_argument("--genotype", required=True, help="genotype JSON or NNI arc.json file, or 'star' for α*")
    p.add_argument("--name", required=True, help="member name (folder under RUN/members)")
    add_preset(p)
    p.add_argument("--seed", type=int, default=None)
    add_set(p, "TrainConfig")
    add_device(p)
    add_data_dir(p)


def cmd_retrain(a: argparse.Namespace) -> int:
    run = existing_run(a.run)
    genotype = genotype_arg(run, a.genotype)
    sets = parse_sets(a.set)
    if a.data_dir:
        sets["data_dir"] = a.data_dir
    config = {"preset": a.preset, "set": sets, "genotype": genotype.to_dict(), "name": a.name, "seed": a.seed}
    note = structural_flaws_note(genotype, member_config(run.path, config).layers)
    if note:
        print(f"warning: {note}", file=sys.stderr)
    res = run_task(f"retrain {a.name}", retrain_task, run.path, config, a.device)
    m = res["metrics"]
    print(f"member {a.name}: {genotype.compact()}")
    print(f"test accuracy {m.get('test_accuracy', float('nan')):.4f}, NLL {m.get('test_nll', float('nan')):.4f}, "
          f"{res['steps']} steps in {res['seconds']:.1f} s")
    return 0


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    add_run(p)
    p.add_argument("--members", default=None, help="comma-separated member names (default: all)")
    p.add_argument("--epoch", type=int, default=None, help="epoch whose probabilities to use (default: last)")
    add_json(p)


def cmd_evaluate(a: argparse.Namespace) -> int:
    run = existing_run(a.run)
    names = member_list(a.members)
    if not names and not run.list_members():
        raise UserError(f"{run.path}: no retrained members; train one with "
                        f"`python -m nes retrain --run {a.run} --genotype star --name m0`")
    out = evaluate_task(run.path, {"members": names, "epoch": a.epoch, "write": False})
    rows, ens = out["members"], out["ensemble"]
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{'member':<16}{'epoch':>6}{'acc':>8}{'nll':>8}{'ece':>8}{'brier':>8}")
    for r in rows:
        print(f"{r['name']:<16}{r['epoch']:>6}{r['accuracy']:>8.4f}{r['nll']:>8.4f}{r['ece']:>8.4f}{r['brier']:>8.4f}")
    print(f"{'ensemble':<16}{'':>6}{ens['accuracy']:>8.4f}{ens['nll']:>8.4f}{ens['ece']:>8.4f}{ens['brier']:>8.4f}")
    print(f"size {int(ens['size'])}; mean member acc {ens['member_accuracy']:.4f}; oracle NLL {ens['oracle_nll']:.4f}; "
          f"disagreement {ens['disagreement']:.4f}; predictive JS {ens['predictive_js']:.4f}")
    vs = out.get("vs_best_member")
    if vs:
        acc, nll = Difference.from_dict(vs["accuracy"]), Difference.from_dict(vs["nll"])
        print(f"ensemble vs best member ({vs['best_member']}, by validation NLL), paired bootstrap over "
              f"{acc.n} test images:\n  accuracy {acc.text()}\n  NLL      {nll.text()}")
    cal = out.get("calibrated")
    if cal:
        print(f"temperature scaling (T fitted on the validation split): T {cal['temperature']:.3f}; test NLL "
              f"{ens['nll']:.4f} -> {cal['nll']:.4f}, ECE {cal['ece_before']:.4f} -> {cal['ece']:.4f} (accuracy unchanged)")
    led = out.get("ledger")
    if led:
        print(f"gain ledger (member strength - diversity): NLL {led['nll']:.4f} = {led['mean_member_nll']:.4f} - "
              f"{led['diversity_nll']:.4f}; Brier {led['brier']:.4f} = {led['mean_member_brier']:.4f} - "
              f"{led['diversity_brier']:.4f}; accuracy {led['accuracy']:.4f} vs mean member "
              f"{led['mean_member_accuracy']:.4f}")
    for note in out.get("notes", []):
        print(f"note: {note}")
    return 0


def _import_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file")
    p.add_argument("--pretty", action="store_true")


def cmd_import_arch(a: argparse.Namespace) -> int:
    print(load_genotype(a.file).to_json(indent=2 if a.pretty else None))
    return 0


def _hypernet_args(p: argparse.ArgumentParser) -> None:
    add_run(p)
    add_regularizer(p, required=True)
    add_preset(p)
    add_set(p, "HypernetConfig")
    add_device(p)


def cmd_hypernet(a: argparse.Namespace) -> int:
    run = existing_run(a.run)
    config = {"preset": a.preset, "set": parse_sets(a.set), "regularizer": a.regularizer}
    res = run_task(f"hypernet ({a.regularizer})", hypernet_task, run.path, config, a.device)
    print(f"hypernetwork ({a.regularizer}): {res['steps']} steps in {res['seconds']:.1f} s")
    _print_samples(run, a.regularizer, None)
    q = load_hypernet(run.path, a.regularizer).meta.get("quality") or {}
    if q:
        print(f"9-point grid: {q['distinct']} distinct genotypes, Spearman ρ(distance, diversity) = {q['rho']}, "
              f"distance at the α* end {q['star_end_distance']:.4f}")
        warning = collapse_warning(q, 3, a.regularizer)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
    return 0


def _print_samples(run: RunDir, regularizer: str | None, lams: list[float] | None, as_json: bool = False) -> None:
    trained = load_hypernet(run.path, regularizer)
    s = load_search(run.path)
    if lams is None:
        lams = lam_grid(*trained.lam_range.target, 5)
    reg = trained.regularizer
    samples = trained.sample(s, lams)
    if as_json:
        print(json.dumps([x.to_dict() for x in samples], indent=2))
        return
    print(f"regularizer {reg}: {AXES[reg].lam}; control {AXES[reg].strength}")
    print(f"genotype*: {s.star.compact()} (Λ = {s.star.num_kept_edges()} edges)")
    print(f"{'diversity':>9} {'lam':>7} {'matched':>8} {'distance':>9}  genotype")
    layers = member_config(run.path, {}).layers
    for x in sorted(samples, key=lambda x: x.diversity):
        print(f"{x.diversity:>9.2f} {x.lam:>7.3f} {x.matched_edges:>8d} {x.distance:>9.4f}  {x.genotype.compact()}"
              f"{structural_flaws_mark(x.genotype, layers)}")
    print("diversity: 0 = α*, 1 = most diverse; distance: JS_g to α* over genotype*'s kept edges and nodes")
    if any(unused_cells(x.genotype, layers) for x in samples):
        print(f"unused: the genotype never reads its previous cell, so in a {layers}-cell member that cell's "
              "output is wasted (a shallower network, usually less accurate)")
    if any(conv_free_cells(x.genotype, layers) for x in samples):
        print("no convolution: the cell holds only pools and skips and learns no spatial filter; its one-shot "
              "estimate is the least trustworthy, so member picks take such a genotype last")


def _sample_args(p: argparse.ArgumentParser) -> None:
    add_run(p)
    p.add_argument("--lam", type=float, nargs="+", default=None, help="λ values (default: 5 over the range)")
    add_regularizer(p, help="default: edges if trained, else js")
    add_json(p)


def cmd_sample(a: argparse.Namespace) -> int:
    _print_samples(existing_run(a.run), a.regularizer, a.lam, a.json)
    return 0


def _fixed_lambda_args(p: argparse.ArgumentParser) -> None:
    add_run(p)
    p.add_argument("--lam", type=float, required=True)
    add_regularizer(p, default="edges")
    add_preset(p)
    add_set(p, None)
    add_device(p)


def cmd_fixed_lambda(a: argparse.Namespace) -> int:
    run = existing_run(a.run)
    config = {"preset": a.preset, "set": parse_sets(a.set), "regularizer": a.regularizer, "lam": a.lam}
    res = run_task(f"search at λ={a.lam:g}", fixed_lambda_task, run.path, config, a.device)
    g = Genotype.from_dict(res["genotype"])
    print(f"λ={a.lam:g}: {g.compact()}; matched edges {res['matched_edges']} of {g.num_kept_edges()}")
    print(f"{res['steps']} steps in {res['seconds']:.1f} s; saved under {run.fixed_lambda(a.lam).path}")
    return 0


def _baseline_args(p: argparse.ArgumentParser) -> None:
    add_run(p, "a run with a finished search (and, for per-lambda, its supernet)")
    p.add_argument("--method", required=True, choices=list(METHODS))
    p.add_argument("--members", type=int, default=3, help="ensemble size M (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget", type=int, default=None,
                   help="NES-RS / NES-RE: member trainings; EdgeNES: λ values in the pool (default 2·M)")
    p.add_argument("--n-edges", type=int, default=2, help="random deviation: edges of genotype* replaced (default 2)")
    p.add_argument("--population", type=int, default=4, help="NES-RE population size")
    p.add_argument("--tournament", "--sample", dest="tournament", type=int, default=2,
                   help="NES-RE tournament size (--sample is the older name)")
    add_preset(p, help="default: the run's preset")
    add_set(p, "TrainConfig")
    add_device(p)
    add_json(p)


def cmd_baseline(a: argparse.Namespace) -> int:
    run = existing_run(a.run)
    if not run.search.genotype.exists():
        raise UserError(f"{run.path}: no finished search; run `python -m nes search --run {a.run}` first")
    cfg = {"method": a.method, "members": a.members, "seed": a.seed, "budget": a.budget, "n_edges": a.n_edges,
           "population": a.population, "tournament": a.tournament, "preset": a.preset, "set": parse_sets(a.set)}
    cb, close = progress_bar(f"baseline {a.method}")
    try:
        res = baseline_task(run.path, cfg, cb, a.device)
    finally:
        close()
    if a.json:
        print(json.dumps(res, indent=2))
        return 0
    ens = res["ensemble"]
    print(f"{a.method}: members {', '.join(res['members'])}")
    print(f"  ensemble accuracy {ens.get('accuracy', float('nan')):.4f}  nll {ens.get('nll', float('nan')):.4f}  "
          f"ece {ens.get('ece', float('nan')):.4f}")
    print(f"  cost: search {res['search_seconds']:.1f} s, training {res['train_seconds']:.1f} s, "
          f"total {res['total_seconds']:.1f} s")
    for warning in res.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


COMMANDS = [
    Command("search", "DARTS search for the base architecture α*", _search_args, cmd_search),
    Command("retrain", "retrain a genotype from scratch as an ensemble member", _retrain_args, cmd_retrain),
    Command("evaluate", "metrics of members and of their ensemble (test split)", _evaluate_args, cmd_evaluate),
    Command("import-arch", "convert an EdgeNES/NNI arc.json (or our JSON) to our genotype JSON", _import_args,
            cmd_import_arch),
    Command("hypernet", "train the hypernetwork α(λ) on a searched run", _hypernet_args, cmd_hypernet),
    Command("sample", "architectures α(λ) of the trained hypernetwork", _sample_args, cmd_sample),
    Command("fixed-lambda", "per-λ search: one search with the regularizer at a fixed λ", _fixed_lambda_args,
            cmd_fixed_lambda),
]
BASELINE = Command("baseline", f"a baseline ensemble: {', '.join(METHODS[:6])}", _baseline_args, cmd_baseline)
