"""Baselines (nes.method.baselines): generators, regularized evolution, costs, and each method on digits/smoke."""
import random

import pytest

from nes.method.baselines import (BASELINES, Trained, costs, mutate, random_deviation, random_genotype, regularized_evolution,
                           run_baseline)
from nes.method.space import ArchLayout, Genotype
from nes.runs.tasks import hypernet_task, search_task

LAYOUTS = [ArchLayout(4, ("reduce",), 1), ArchLayout(4, ("normal", "reduce"), 2), ArchLayout(3, ("normal",), 1)]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_random_genotypes_fit_the_space_and_are_reproducible(layout):
    gs = [random_genotype(layout, random.Random(s)) for s in range(30)]
    for g in gs:
        layout.check_genotype(g)
        assert all(len(node) == min(layout.inputs_per_node, 2 + i)
                   for ct in layout.cell_types for i, node in enumerate(g.cell(ct)))
    assert len(set(gs)) > 20  # they vary
    assert random_genotype(layout, random.Random(3)) == gs[3]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_random_deviation_changes_exactly_n_edges(layout):
    star = random_genotype(layout, random.Random(0))
    lam = star.num_kept_edges()
    for seed in range(20):
        for n in range(lam + 1):
            g = random_deviation(star, n, random.Random(seed * 100 + n))
            layout.check_genotype(g)
            assert g.num_kept_edges() == lam, \
                f"seed {seed}, n={n}: the deviation keeps {g.num_kept_edges()} edges, α* keeps {lam}"
            assert star.matched_edges(g) == lam - n, \
                f"seed {seed}, n={n}: the deviation shares {star.matched_edges(g)} edges with α*, expected {lam - n}"
    with pytest.raises(ValueError, match="n must be in"):
        random_deviation(star, lam + 1, random.Random(0))


def test_mutation_changes_one_edge():
    layout = LAYOUTS[1]
    g = random_genotype(layout, random.Random(1))
    for s in range(50):
        m = mutate(g, random.Random(s))
        assert m.matched_edges(g) == g.num_kept_edges() - 1


def test_regularized_evolution_keeps_its_population_and_budget():
    layout = LAYOUTS[0]
    target = random_genotype(layout, random.Random(42))
    calls = []

    def evaluate(g: Genotype, name: str) -> Trained:
        calls.append(name)
        return Trained(name, g, float(g.num_kept_edges() - g.matched_edges(target)), 1.0)

    hist = regularized_evolution(evaluate, layout, random.Random(0), population=5, tournament=3, budget=40)
    # (regularized_evolution asserts the population size inside)
    assert len(hist) == 40 == len(calls), f"{len(hist)} in the history, {len(calls)} evaluations, budget 40"
    assert len(set(calls)) == 40, f"{40 - len(set(calls))} evaluations reused a name"
    assert min(t.val_nll for t in hist[20:]) <= min(t.val_nll for t in hist[:5])  # evolution does not get worse
    with pytest.raises(ValueError, match="tournament"):
        regularized_evolution(evaluate, layout, random.Random(0), population=5, tournament=6, budget=40)


def test_cost_records_are_non_negative_and_add_up(tmp_path):
    for name, s in (("a", 2.5), ("b", 4.0)):
        d = tmp_path / name
        d.mkdir()
        (d / "metrics.json").write_text(f'{{"seconds": {s}}}')
    c = costs({"search": 3.0, "extra": 1.0}, {"a": tmp_path / "a", "b": tmp_path / "b", "none": tmp_path / "none"})
    assert c["search_seconds"] == 4.0, f"search seconds {c['search_seconds']}, expected 3 + 1"
    assert c["train"] == {"a": 2.5, "b": 4.0, "none": 0.0}, f"training seconds per member {c['train']}"
    assert c["total_seconds"] == c["search_seconds"] + c["train_seconds"] == 10.5


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    r = tmp_path_factory.mktemp("base") / "run"
    search_task(r, {"preset": "smoke"})
    return r


@pytest.mark.parametrize("method", BASELINES)
def test_each_baseline_produces_valid_distinct_members(run, method):
    rec = run_baseline(run, method, members=2, budget=3, population=2, tournament=1, n_edges=1, preset="smoke")
    assert rec["method"] == method, f"{method}: the record says method {rec['method']!r}"
    assert len(rec["members"]) == 2, f"{method}: {len(rec['members'])} members, asked for 2"
    assert set(rec["members"]) <= set(rec["pool"]), \
        f"{method}: members {rec['members']} not all in the pool {rec['pool']}"
    genos = [Genotype.from_dict(rec["genotypes"][n]) for n in rec["members"]]
    for g in genos:
        g.validate(nodes=4)
    if method == "random":
        assert all(m == 3 for m in rec["matched_edges"].values())  # Λ = 4, one edge replaced
    if method in ("nes-rs", "nes-re"):
        assert len(rec["pool"]) == 3, f"{method}: pool of {len(rec['pool'])}, budget 3"
        assert len(set(rec["members"])) == 2, f"{method}: the members {rec['members']} are not distinct"
    if method == "deepens":
        assert genos[0] == genos[1]
    c = rec["costs"]
    assert c["total_seconds"] == pytest.approx(c["search_seconds"] + c["train_seconds"])
    assert all(v >= 0 for v in [*c["search"].values(), *c["train"].values()]), \
        f"{method}: a negative cost among {c['search']}, {c['train']}"
    assert c["train_seconds"] > 0, f"{method}: no training time recorded"
    assert 0 <= rec["ensemble"]["accuracy"] <= 1, f"{method}: ensemble accuracy {rec['ensemble']['accuracy']}"
    assert rec["ensemble"]["size"] == 2, f"{method}: ensemble size {rec['ensemble']['size']}, expected 2"
    if method in ("darts", "per-lambda"):  # per-λ searches need genotype*: the run's search counts too
        assert len(c["search"]) == (2 if method == "darts" else 3), f"{method}: search costs {sorted(c['search'])}"
        assert all(v > 0 for v in c["search"].values()), f"{method}: a search cost is not positive: {c['search']}"
    if method in ("nes-rs", "nes-re"):
        assert c["search_seconds"] == 0, \
            f"{method}: search seconds {c['search_seconds']}, expected 0 (the pool's training is its search)"
        assert len(c["train"]) == 3, f"{method}: training costs for {sorted(c['train'])}, expected the pool of 3"
    again = run_baseline(run, method, members=2, budget=3, population=2, tournament=1, n_edges=1, preset="smoke")
    assert again["members"] == rec["members"]  # resumable: the same, nothing retrained differently


def test_edgenes_under_the_same_protocol(run):
    hypernet_task(run, {"preset": "smoke", "regularizer": "edges"})
    rec = run_baseline(run, "edgenes-edges", members=2, budget=5, preset="smoke")
    assert 1 <= len(rec["members"]) <= 2, f"edgenes: {len(rec['members'])} members, asked for 1 to 2"
    assert len(rec["pool"]) <= 5, f"edgenes: pool of {len(rec['pool'])}, budget 5"
    assert set(rec["costs"]["search"]) == {"search", "hypernet_edges"}, \
        f"edgenes: search costs {sorted(rec['costs']['search'])}"
    assert rec["costs"]["search"]["hypernet_edges"] > 0, "edgenes: the hypernetwork's training time is not counted"
    sizes = rec["by_size"]
    assert [int(m["size"]) for m in sizes] == list(range(1, len(rec["members"]) + 1))
    assert sizes[-1]["accuracy"] == pytest.approx(rec["ensemble"]["accuracy"])


def test_methods_are_compared_with_paired_intervals(run):
    from nes.layout import RunDir
    from nes.method.baselines import method_differences

    for method in ("deepens", "random"):  # resumes: the members trained above are reused
        rec = run_baseline(run, method, members=2, budget=3, population=2, tournament=1, n_edges=1, preset="smoke")
        vs = rec["vs_best_member"]
        assert vs["best_member"] in rec["members"], \
            f"{method}: best member {vs['best_member']} not among {rec['members']}"
        assert vs["accuracy"]["lo"] <= vs["accuracy"]["value"] <= vs["accuracy"]["hi"], \
            f"{method}: accuracy difference {vs['accuracy']} outside its interval"
    records = RunDir(run).baseline_records()
    diffs = {d["method"]: d for d in method_differences(run, records, "deepens")}
    assert "deepens" not in diffs, "the reference method deepens is compared with itself"
    assert "random" in diffs, f"random is not compared with deepens: {sorted(diffs)}"
    d = diffs["random"]
    assert d["reference"] == "deepens", f"reference {d['reference']!r}, expected deepens"
    assert d["seed"] == 0, f"seed {d['seed']}, expected 0"
    for metric in ("accuracy", "nll"):
        assert d[metric]["lo"] <= d[metric]["value"] <= d[metric]["hi"], \
            f"random vs deepens {metric}: {d[metric]['value']} outside [{d[metric]['lo']}, {d[metric]['hi']}]"
        assert d[metric]["n"] > 0, f"random vs deepens {metric}: measured on no images"
