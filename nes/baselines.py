"""Baselines to compare EdgeNES ensembles with, and the cost of every method.

Each baseline produces genotypes and retrains them with the run's member settings (the same
`retrain` as every other member), into RUN/baselines/<method>_s<seed>/members/<name>:

- `deepens`     genotype* retrained with M seeds (Deep Ensembles);
- `darts`       M independent DARTS searches (seeds), each genotype retrained (DARTS ensemble);
- `random`      genotype* with `n` edges replaced at random, M times (random deviation);
- `nes-rs`      NES random search: `budget` random genotypes trained, then forward selection of M;
- `nes-re`      NES regularized evolution: population P, tournament sample S, one-edge mutations,
                `budget` member trainings in total, then forward selection of M;
- `per-lambda`  one `edges` search per λ on an even grid of M values (the cost α(λ) avoids);
- `edgenes-edges`, `edgenes-js`  the method itself under the same protocol, for the comparison.

Costs are device-seconds of training as recorded by the loops themselves (`seconds` in the
histories): search (the run's search, the extra searches, hypernetwork training) and member
training, per member. Everything is resumable: finished searches and members are not redone.
"""
from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .artifacts import read_json, write_json
from .space import OPS, ArchLayout, Genotype

BASELINES = ("deepens", "darts", "random", "nes-rs", "nes-re", "per-lambda")
# EdgeNES itself, run the same way for comparisons: a pool of α(λ) members on an even λ grid
# (`budget` λ values, distinct genotypes only), then forward selection of M on val.
METHODS = BASELINES + ("edgenes-edges", "edgenes-js")


# ---------------------------------------------------------------------------------------------
# Genotype generators (pure; `rng` is a random.Random so that every choice is reproducible)
# ---------------------------------------------------------------------------------------------
def random_genotype(layout: ArchLayout, rng: random.Random) -> Genotype:
    """Uniform over the search space: per node, k distinct inputs, each with a random op."""
    cells = {}
    for ct in layout.cell_types:
        cell = []
        for i in range(layout.nodes):
            inputs = sorted(rng.sample(range(2 + i), min(layout.inputs_per_node, 2 + i)))
            cell.append(tuple((rng.choice(OPS), j) for j in inputs))
        cells[ct] = tuple(cell)
    return Genotype(**cells)


def _edge_slots(g: Genotype) -> list[tuple[str, int, int]]:
    """(cell type, node, position in the node) of every kept edge."""
    return [(ct, i, p) for ct in g.cell_types for i, node in enumerate(g.cell(ct)) for p in range(len(node))]


def _replace_edges(g: Genotype, slots: list[tuple[str, int, int]], rng: random.Random) -> Genotype:
    """Replace the kept edges at `slots` by (op, input) pairs that are none of the node's original
    edges, keeping each node's inputs distinct; so exactly len(slots) edges differ from g."""
    cells = {ct: [list(node) for node in g.cell(ct)] for ct in g.cell_types}
    for ct, i, p in slots:
        node, original = cells[ct][i], set(g.cell(ct)[i])
        others = {inp for k, (_, inp) in enumerate(node) if k != p}
        choices = [(op, inp) for inp in range(2 + i) if inp not in others for op in OPS if (op, inp) not in original]
        node[p] = rng.choice(choices)
    return Genotype(**{ct: tuple(tuple(sorted(node, key=lambda e: e[1])) for node in cell) for ct, cell in cells.items()})


def random_deviation(star: Genotype, n: int, rng: random.Random) -> Genotype:
    """genotype* with exactly `n` of its edges replaced by a different (op, input) at random."""
    slots = _edge_slots(star)
    if not 0 <= n <= len(slots):
        raise ValueError(f"random deviation: n must be in 0..{len(slots)} (edges of genotype*), got {n}")
    return _replace_edges(star, rng.sample(slots, n), rng)


def mutate(g: Genotype, rng: random.Random) -> Genotype:
    """NES-RE mutation: one randomly chosen edge gets another op or another input."""
    return _replace_edges(g, [rng.choice(_edge_slots(g))], rng)


@dataclass
class Trained:
    name: str
    genotype: Genotype
    val_nll: float
    seconds: float


def regularized_evolution(evaluate: Callable[[Genotype, str], Trained], layout: ArchLayout, rng: random.Random,
                          population: int, sample: int, budget: int) -> list[Trained]:
    """Regularized evolution (Real et al. 2019) as NES-RE uses it: returns every trained member.

    The population starts with `population` random genotypes; each step draws `sample` members,
    mutates the one with the lowest validation NLL, trains the child, adds it and removes the
    oldest member. `budget` counts member trainings, the initial population included."""
    if not 1 <= sample <= population <= budget:
        raise ValueError(f"NES-RE needs 1 <= sample ({sample}) <= population ({population}) <= budget ({budget})")
    pop: deque[Trained] = deque()
    history: list[Trained] = []
    while len(history) < population:
        t = evaluate(random_genotype(layout, rng), f"re_{len(history):03d}")
        pop.append(t)
        history.append(t)
    while len(history) < budget:
        parent = min(rng.sample(list(pop), sample), key=lambda t: t.val_nll)
        t = evaluate(mutate(parent.genotype, rng), f"re_{len(history):03d}")
        pop.append(t)
        pop.popleft()  # the oldest dies (the "regularized" part)
        history.append(t)
        assert len(pop) == population
    return history


# ---------------------------------------------------------------------------------------------
# Costs
# ---------------------------------------------------------------------------------------------
def history_seconds(path: Path) -> float:
    """Training seconds recorded by a loop's history.json (cumulative; 0 if absent)."""
    if not path.exists():
        return 0.0
    hist = read_json(path)
    return float(hist[-1].get("seconds", 0.0)) if hist else 0.0


def member_seconds(member_dir: Path) -> float:
    p = member_dir / "metrics.json"
    return float(read_json(p).get("seconds", 0.0)) if p.exists() else history_seconds(member_dir / "history.json")


def costs(search_seconds: dict[str, float], member_dirs: dict[str, Path]) -> dict[str, Any]:
    """Cost record: search parts, training per member, totals (all device-seconds, ≥ 0)."""
    train = {n: member_seconds(d) for n, d in member_dirs.items()}
    s, t = sum(search_seconds.values()), sum(train.values())
    return {"search": search_seconds, "search_seconds": s, "train": train, "train_seconds": t, "total_seconds": s + t}


# ---------------------------------------------------------------------------------------------
# Running a baseline
# ---------------------------------------------------------------------------------------------
def baseline_dir(run: Path, method: str, seed: int) -> Path:
    return Path(run) / "baselines" / f"{method}_s{seed}"


def run_baseline(run: str | Path, method: str, members: int = 3, seed: int = 0, budget: int | None = None,
                 n_edges: int = 2, population: int = 4, sample: int = 2, preset: str | None = None,
                 sets: dict[str, str] | None = None, device: str | None = None, progress=None) -> dict[str, Any]:
    """Produce the method's genotypes, retrain them, select M members (forward selection on val
    for the NES methods), and write RUN/baselines/<method>_s<seed>/baseline.json."""
    from .config import SearchConfig, TrainConfig, from_dict, from_preset, to_dict
    from .diversity import lam_grid
    from .hypernet import fixed_lambda_search, hypernet_config, lam_range, load_search
    from .runview import RunView
    from .search import search
    from .train import retrain

    if method not in METHODS:
        raise ValueError(f"unknown baseline {method!r}; choose one of {', '.join(METHODS)}")
    if members < 1:
        raise ValueError(f"members must be >= 1, got {members}")
    run = Path(run)
    search_cfg, layout, _, star = load_search(run)
    info = read_json(run / "run.json") if (run / "run.json").exists() else {}
    preset = preset or info.get("preset", "paper")
    tsets = {**(info.get("train_sets") or {}), "dataset": info.get("dataset", search_cfg.dataset), **(sets or {})}
    out = baseline_dir(run, method, seed)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "run.json", {**info, "train_sets": tsets, "baseline": method, "seed": seed})
    rng = random.Random(f"{method}-{seed}")
    budget = budget or 2 * members
    total = {"deepens": members, "darts": 2 * members, "random": members, "nes-rs": budget, "nes-re": budget,
             "per-lambda": 2 * members}.get(method, budget)
    done = 0

    def tick(what: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done * 1000, total * 1000, {"stage": what})

    def sub(step: int, steps: int, metrics: dict) -> None:
        """Progress inside one training: keeps the store's progress moving and lets a cancel
        request stop the job within seconds (the job's reporter raises on it)."""
        if progress is not None:
            progress(done * 1000 + int(1000 * step / max(steps, 1)), total * 1000, metrics)

    def train(g: Genotype, name: str, member_seed: int = 0) -> Trained:
        cfg = from_preset(TrainConfig, preset, {**tsets, "seed": str(member_seed)})
        res = retrain(cfg, g, out, name, device, sub, extra_meta={"baseline": method})
        tick(name)
        return Trained(name, g, float(res.metrics.get("val_nll", float("inf"))), res.seconds)

    if progress is not None:
        progress(0, total * 1000, {"stage": "start"})
    search_seconds = {"search": history_seconds(run / "search" / "history.json")}
    trained: list[Trained] = []
    if method == "deepens":
        trained = [train(star, f"star_seed{i}", seed * 1000 + i) for i in range(members)]
    elif method == "random":
        trained = [train(random_deviation(star, n_edges, rng), f"dev{n_edges}_{i}", seed * 1000 + i)
                   for i in range(members)]
    elif method == "darts":
        search_seconds = {}
        for i in range(members):
            cfg_i = from_dict(SearchConfig, {**to_dict(search_cfg), "seed": seed * 1000 + i})
            res = search(cfg_i, out / f"search_{i}", device, sub)
            search_seconds[f"search_{i}"] = res.seconds
            tick(f"search_{i}")
            trained.append(train(res.genotype, f"darts_{i}", seed * 1000 + i))
    elif method == "per-lambda":
        # the per-λ searches live in the run (RUN/fixed_lambda/lam_X, shared with `nes fixed-lambda`)
        hcfg = hypernet_config(run, preset, {"regularizer": "edges"})
        lo, hi = lam_range(hcfg, star)
        for lam in lam_grid(lo, hi, members):
            res = fixed_lambda_search(hcfg, run, lam, device, sub)
            search_seconds[f"lam_{lam:g}"] = res.seconds
            tick(f"lam_{lam:g}")
            trained.append(train(res.genotype, f"lam_{lam:g}".replace(".", "_"), seed * 1000))
    elif method == "nes-rs":
        search_seconds = {}
        trained = [train(random_genotype(layout, rng), f"rs_{i:03d}", seed * 1000 + i) for i in range(budget)]
    elif method.startswith("edgenes-"):
        from .diversity import sample_architectures, unique_genotypes
        from .hypernet import load_hypernet

        reg = method.split("-", 1)[1]
        hyper, meta = load_hypernet(run, reg)
        samples = sample_architectures(hyper, layout, star, lam_grid(meta["lam_min"], meta["lam_max"], budget),
                                       meta["config"]["tau"])
        search_seconds[f"hypernet_{reg}"] = history_seconds(run / "hypernet" / reg / "history.json")
        for i, (g, lams) in enumerate(unique_genotypes(samples)):
            trained.append(train(g, f"{reg}_lam_{lams[0]:.2f}".replace(".", "_"), seed * 1000 + i))
    else:  # nes-re
        search_seconds = {}
        trained = regularized_evolution(lambda g, name: train(g, name, seed * 1000 + int(name[3:])), layout, rng,
                                        min(population, budget), min(sample, population, budget), budget)
    names = [t.name for t in trained]
    if method in ("nes-rs", "nes-re") or method.startswith("edgenes-"):
        selected = RunView(out).greedy_selection(names, members)
    else:
        selected = names
    view = RunView(out)
    ens = view.ensemble_curve(selected)
    record = {
        "method": method, "seed": seed, "members": selected, "pool": names,
        "genotypes": {t.name: t.genotype.to_dict() for t in trained},
        "matched_edges": {t.name: t.genotype.matched_edges(star) for t in trained},
        "ensemble": ens[-1][1] if ens else {},
        "by_size": [m for _, m in view.size_curve(selected)],
        "members_metrics": {n: view.member_curve(n)[-1][1] for n in names},
        "costs": costs(search_seconds, {n: out / "members" / n for n in names}),
        "selected_costs": costs(search_seconds, {n: out / "members" / n for n in selected}),
    }
    write_json(out / "baseline.json", record)
    return record
