"""Baselines to compare EdgeNES ensembles with, and the cost of every method.

Each baseline produces genotypes and retrains them with the run's member settings (the same
`retrain` as every other member), into RUN/baselines/<method>_s<seed>/members/<name>:

- `deepens`     genotype* retrained with M seeds (Deep Ensembles);
- `darts`       M independent DARTS searches (seeds), each genotype retrained (DARTS ensemble);
- `random`      genotype* with `n` edges replaced at random, M times (random deviation);
- `nes-rs`      NES random search: `budget` random genotypes trained, then forward selection of M;
- `nes-re`      NES regularized evolution: population P, tournament size S, one-edge mutations,
                `budget` member trainings in total, then forward selection of M;
- `per-lambda`  one `edges` search per λ on an even grid of M values (the cost α(λ) avoids);
- `edgenes-edges`, `edgenes-js-target`, `edgenes-js`  the method itself under the same protocol.

Every method's member i trains with seed `seed·1000 + i`, so EdgeNES and DeepEns differ only in
their architectures.

Costs are device-seconds of training as recorded by the loops themselves (`seconds` in the
histories): search (the run's search, the extra searches, hypernetwork training) and member
training, per member. Everything is resumable: finished searches and members are not redone.
"""
from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..artifacts import write_json
from ..config import MAX_MEMBERS, SearchConfig, TrainConfig, from_dict, from_preset, to_dict
from ..layout import STAR, MemberDir, RunDir, fixed_lambda_name, member_name
from .darts import load_search, search
from .diversity import collapse_warning, lam_grid, unique_genotypes
from .hypernet import fixed_lambda_search, hypernet_config, load_hypernet
from .loop import Progress
from .regularizers import LamRange
from .scoring import MemberProbs, compare, greedy_names, score, size_curve
from .space import OPS, ArchLayout, Genotype
from .train import retrain

BASELINES = ("deepens", "darts", "random", "nes-rs", "nes-re", "per-lambda")
# EdgeNES itself, run the same way for comparisons: a pool of α(λ) members on an even λ grid
# (`budget` λ values, distinct genotypes only), then forward selection of M on val.
METHODS = BASELINES + ("edgenes-edges", "edgenes-js-target", "edgenes-js")


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


def regularized_evolution(evaluate: Callable[[Genotype, int], Trained], layout: ArchLayout, rng: random.Random,
                          population: int, tournament: int, budget: int) -> list[Trained]:
    """Regularized evolution (Real et al. 2019) as NES-RE uses it: returns every trained member.
    `evaluate(genotype, i)` trains the i-th member (i counts trainings from 0: it picks the seed).

    The population starts with `population` random genotypes; each step draws a tournament of
    `tournament` members, mutates the one with the lowest validation NLL, trains the child, adds
    it and removes the oldest member. `budget` counts member trainings, the initial population
    included."""
    if not 1 <= tournament <= population <= budget:
        raise ValueError(f"NES-RE needs 1 <= tournament ({tournament}) <= population ({population}) "
                         f"<= budget ({budget})")
    pop: deque[Trained] = deque()
    history: list[Trained] = []
    while len(history) < population:
        t = evaluate(random_genotype(layout, rng), len(history))
        pop.append(t)
        history.append(t)
    while len(history) < budget:
        parent = min(rng.sample(list(pop), tournament), key=lambda t: t.val_nll)
        t = evaluate(mutate(parent.genotype, rng), len(history))
        pop.append(t)
        pop.popleft()  # the oldest dies (the "regularized" part)
        history.append(t)
        assert len(pop) == population
    return history


# ---------------------------------------------------------------------------------------------
# Costs
# ---------------------------------------------------------------------------------------------
def costs(search_seconds: dict[str, float], member_dirs: dict[str, Path]) -> dict[str, Any]:
    """Cost record: search parts, training per member, totals (all device-seconds, ≥ 0)."""
    train = {n: MemberDir(d).seconds() for n, d in member_dirs.items()}
    s, t = sum(search_seconds.values()), sum(train.values())
    return {"search": search_seconds, "search_seconds": s, "train": train, "train_seconds": t, "total_seconds": s + t}


# ---------------------------------------------------------------------------------------------
# Running a baseline
# ---------------------------------------------------------------------------------------------
@dataclass
class BaselineRun:
    """What a method's generator works with: the run and its α*, the baseline's own folder, the
    members' settings, the random source, and the progress over `total` trainings."""

    run: RunDir
    out: RunDir  # RUN/baselines/<method>_s<seed>
    method: str
    seed: int
    members: int
    budget: int
    total: int
    preset: str
    train_sets: dict[str, Any]
    device: str | None = None
    progress: Progress | None = None
    done: int = 0
    search_seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # e.g. a collapsed EdgeNES pool

    def __post_init__(self) -> None:
        self.search = load_search(self.run.path)
        self.search_cfg, self.layout, self.star = self.search.config, self.search.layout, self.search.star
        self.rng = random.Random(f"{self.method}-{self.seed}")

    def member_seed(self, i: int) -> int:
        return self.seed * 1000 + i

    def tick(self, what: str) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done * 1000, self.total * 1000, {"stage": what})

    def sub(self, step: int, steps: int, metrics: dict) -> None:
        """Progress inside one training: keeps the store's progress moving and lets a cancel
        request stop the job within seconds (the job's reporter raises on it)."""
        if self.progress is not None:
            self.progress(self.done * 1000 + int(1000 * step / max(steps, 1)), self.total * 1000, metrics)

    def train(self, g: Genotype, name: str, member_seed: int = 0) -> Trained:
        cfg = from_preset(TrainConfig, self.preset, {**self.train_sets, "seed": str(member_seed)})
        res = retrain(cfg, g, self.out.path, name, self.device, self.sub, extra_meta={"baseline": self.method})
        self.tick(name)
        return Trained(name, g, float(res.metrics.get("val_nll", float("inf"))), res.seconds)

    def member(self, g: Genotype, origin: str, i: int, lam: float | None = None) -> Trained:
        """Train member i of this method: seed `member_seed(i)`, named by `member_name` from its
        origin, λ and that seed (the seed comes from i, never from a name)."""
        return self.train(g, member_name(origin, lam, self.member_seed(i)), self.member_seed(i))

    def count_search(self) -> None:
        """The run's own search is part of this method's cost."""
        self.search_seconds["search"] = self.run.search.seconds()


def _deepens(b: BaselineRun) -> list[Trained]:
    b.count_search()
    return [b.member(b.star, STAR, i) for i in range(b.members)]


def _random(b: BaselineRun, n_edges: int) -> list[Trained]:
    b.count_search()
    return [b.member(random_deviation(b.star, n_edges, b.rng), f"dev{n_edges}", i) for i in range(b.members)]


def _darts(b: BaselineRun) -> list[Trained]:
    out = []
    for i in range(b.members):
        cfg_i = from_dict(SearchConfig, {**to_dict(b.search_cfg), "seed": b.member_seed(i)})
        res = search(cfg_i, b.out.path / f"search_{i}", b.device, b.sub)
        b.search_seconds[f"search_{i}"] = res.seconds
        b.tick(f"search_{i}")
        out.append(b.member(res.genotype, "darts", i))
    return out


def _per_lambda(b: BaselineRun) -> list[Trained]:
    """The per-λ searches live in the run (RUN/fixed_lambda/lam_X, shared with `nes fixed-lambda`)."""
    b.count_search()
    hcfg = hypernet_config(b.run.path, b.preset, {"regularizer": "edges"})
    out = []
    for i, lam in enumerate(lam_grid(*LamRange.from_config(hcfg, b.star).target, b.members)):
        res = fixed_lambda_search(hcfg, b.run.path, lam, b.device, b.sub)
        b.search_seconds[fixed_lambda_name(lam)] = res.seconds
        b.tick(fixed_lambda_name(lam))
        out.append(b.member(res.genotype, "per-lambda", i, lam))
    return out


def _nes_rs(b: BaselineRun) -> list[Trained]:
    return [b.member(random_genotype(b.layout, b.rng), "rs", i) for i in range(b.budget)]


def _nes_re(b: BaselineRun, population: int, tournament: int) -> list[Trained]:
    return regularized_evolution(lambda g, i: b.member(g, "re", i), b.layout, b.rng,
                                 min(population, b.budget), min(tournament, population, b.budget), b.budget)


def _edgenes(b: BaselineRun, regularizer: str) -> list[Trained]:
    b.count_search()
    trained = load_hypernet(b.run.path, regularizer)
    samples = trained.sample(b.search, lam_grid(*trained.lam_range.target, b.budget))
    b.search_seconds[f"hypernet_{regularizer}"] = b.run.hypernet(regularizer).seconds()
    pool = unique_genotypes(samples)
    warning = collapse_warning({"distinct": len(pool), "samples": len(samples)}, b.members, regularizer)
    if warning:
        b.warnings.append(warning)
    return [b.member(g, regularizer, i, lams[0]) for i, (g, lams) in enumerate(pool)]


# method → (generator, member trainings it does for M members and a budget, forward selection of M?)
GENERATORS: dict[str, tuple[Callable[..., list[Trained]], Callable[[int, int], int], bool]] = {
    "deepens": (_deepens, lambda m, budget: m, False),
    "darts": (_darts, lambda m, budget: 2 * m, False),
    "random": (_random, lambda m, budget: m, False),
    "nes-rs": (_nes_rs, lambda m, budget: budget, True),
    "nes-re": (_nes_re, lambda m, budget: budget, True),
    "per-lambda": (_per_lambda, lambda m, budget: 2 * m, False),
    "edgenes-edges": (lambda b: _edgenes(b, "edges"), lambda m, budget: budget, True),
    "edgenes-js-target": (lambda b: _edgenes(b, "js-target"), lambda m, budget: budget, True),
    "edgenes-js": (lambda b: _edgenes(b, "js"), lambda m, budget: budget, True),
}
# the keyword options each generator takes (from run_baseline's)
MAX_BUDGET = 4 * MAX_MEMBERS  # the most member trainings one baseline may ask for
_OPTIONS = {"random": ("n_edges",), "nes-re": ("population", "tournament")}


def _record(b: BaselineRun, trained: list[Trained], select: bool) -> dict[str, Any]:
    names = [t.name for t in trained]
    out = b.out.path
    selected = greedy_names(out, names, b.members) if select else names
    pool = MemberProbs.load(out, names)
    report = score(pool.subset(selected))
    return {
        "method": b.method, "seed": b.seed, "members": selected, "pool": names,
        "genotypes": {t.name: t.genotype.to_dict() for t in trained},
        "matched_edges": {t.name: t.genotype.matched_edges(b.star) for t in trained},
        "ensemble": report.metrics,
        "by_size": [m for _, m in size_curve(out, selected)],
        "members_metrics": pool.member_metrics(),
        "costs": costs(b.search_seconds, {n: b.out.member(n).path for n in names}),
        "selected_costs": costs(b.search_seconds, {n: b.out.member(n).path for n in selected}),
        "warnings": b.warnings,
        "vs_best_member": report.vs_best,
    }


def method_differences(run: str | Path, records: list[dict[str, Any]], reference: str) -> list[dict[str, Any]]:
    """Every record's ensemble against the `reference` method's ensemble of the same seed, on the
    same test images: [{"method", "seed", "reference", "accuracy", "nll"}] (paired bootstrap
    `stats.Difference` dicts, A = the method). Records without a same-seed reference, or whose test
    images differ from it, are left out."""
    rd = RunDir(run)

    def probs(rec: dict[str, Any]) -> MemberProbs:
        return MemberProbs.load(rd.baseline(rec["method"], int(rec["seed"])).path, list(rec["members"]))

    refs = {int(r["seed"]): r for r in records if r["method"] == reference}
    out = []
    for rec in records:
        ref = refs.get(int(rec["seed"]))
        if ref is None or rec["method"] == reference:
            continue
        diff = compare(probs(rec), probs(ref))
        if diff is not None:
            out.append({"method": rec["method"], "seed": int(rec["seed"]), "reference": reference,
                        **{k: v.to_dict() for k, v in diff.items()}})
    return out


def check_baseline_args(method: str, members: int, budget: int | None, star: Genotype, n_edges: int,
                        population: int, tournament: int) -> None:
    """ValueError naming the option (as the CLI spells it) when a baseline's arguments are out of
    range; run before anything is written, so a refused baseline leaves the run as it was.
    `budget` counts trainings (the pool M members are selected from), so it is at least M."""
    if method not in GENERATORS:
        raise ValueError(f"unknown baseline {method!r}; choose one of {', '.join(METHODS)}")
    if not 1 <= members <= MAX_MEMBERS:
        raise ValueError(f"--members must be between 1 and {MAX_MEMBERS}, got {members}")
    if budget is not None and not members <= budget <= MAX_BUDGET:
        raise ValueError(f"--budget must be between --members ({members}) and {MAX_BUDGET} trainings, got {budget}; "
                         f"leave it out for the default 2·M = {2 * members}")
    slots = len(_edge_slots(star))
    if method == "random" and not 1 <= n_edges <= slots:
        raise ValueError(f"--n-edges must be between 1 and {slots} (the edges of genotype*), got {n_edges}")
    if method == "nes-re" and not 1 <= tournament <= population:
        raise ValueError(f"NES-RE needs 1 <= --tournament ({tournament}) <= --population ({population})")


def _check_rerun(out: RunDir, train_sets: dict[str, Any]) -> None:
    """A rerun of a baseline resumes it with the same member settings; other settings are refused
    (naming them) before its run.json is rewritten, so its members never mix two settings."""
    if not out.run_json.exists():
        return
    old = out.info().get("train_sets") or {}
    differ = sorted(k for k in set(old) | set(train_sets) if old.get(k) != train_sets.get(k))
    if differ:
        raise ValueError(f"{out.path}: this baseline was made with other member settings ({', '.join(differ)} "
                         f"differ); pass another --seed, or delete {out.path} to make it again")


def run_baseline(run: str | Path, method: str, members: int = 3, seed: int = 0, budget: int | None = None,
                 n_edges: int = 2, population: int = 4, tournament: int = 2, preset: str | None = None,
                 sets: dict[str, str] | None = None, device: str | None = None,
                 progress: Progress | None = None) -> dict[str, Any]:
    """Produce the method's genotypes, retrain them, select M members (forward selection on val
    for the NES methods), and write RUN/baselines/<method>_s<seed>/baseline.json."""
    rd = RunDir(run)
    searched = load_search(rd.path)
    check_baseline_args(method, members, budget, searched.star, n_edges, population, tournament)
    info = rd.info()
    preset = preset or info.get("preset", "paper")
    tsets = {**(info.get("train_sets") or {}), "dataset": info.get("dataset", searched.config.dataset), **(sets or {})}
    from_preset(TrainConfig, preset, tsets)  # a bad setting is refused here, before anything is written
    out = rd.baseline(method, seed)
    _check_rerun(out, tsets)
    out.path.mkdir(parents=True, exist_ok=True)
    write_json(out.run_json, {**info, "train_sets": tsets, "baseline": method, "seed": seed})
    generate, trainings, select = GENERATORS[method]
    budget = budget if budget is not None else 2 * members
    b = BaselineRun(rd, out, method, seed, members, budget, trainings(members, budget), preset, tsets, device,
                    progress)
    if progress is not None:
        progress(0, b.total * 1000, {"stage": "start"})
    options = {"n_edges": n_edges, "population": population, "tournament": tournament}
    trained = generate(b, **{k: options[k] for k in _OPTIONS.get(method, ())})
    record = _record(b, trained, select)
    write_json(out.baseline_json, record)
    return record
