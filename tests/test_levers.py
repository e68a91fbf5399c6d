"""Training-free levers on strength vs diversity (issue 27, nes.method.levers): forward selection and
temperatures that see only the validation split, hybrid pools, and the ledger's exact split of each
lever's NLL difference. Synthetic probabilities for the invariants, the bundled demo for the rows."""
from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest
import torch

from nes.artifacts import ArtifactError, read_json
from nes.method import levers
from nes.method.scoring import MemberProbs
from nes.method.space import Genotype
from helpers import nes


def pool(m: int, seed: int, n: int = 400, k: int = 5, sharp: float = 3.0) -> MemberProbs:
    """M members' probabilities on shared val/test images: each member a noisy copy of the labels."""
    g = torch.Generator().manual_seed(seed)
    y_val, y_test = torch.randint(0, k, (n,), generator=g), torch.randint(0, k, (n,), generator=g)

    def probs(y: torch.Tensor) -> torch.Tensor:
        logits = torch.randn(m, n, k, generator=g) + sharp * torch.nn.functional.one_hot(y, k)
        return torch.softmax(logits * torch.linspace(0.5, 1.5, m)[:, None, None], -1)
    return MemberProbs(tuple(f"m{i}" for i in range(m)), (0,) * m, probs(y_test), y_test, probs(y_val), y_val)


def test_select_picks_distinct_members_and_sees_only_validation():
    p = pool(6, 0)
    chosen = levers.select(p, 4)
    assert len(set(chosen.names)) == 4, f"forward selection picked {chosen.names}"
    shuffled_test = MemberProbs(p.names, p.epochs, p.test[torch.randperm(6)], p.test_y, p.val, p.val_y)
    assert levers.select(shuffled_test, 4).names == chosen.names, "the selection changed with the test split"


def test_union_prefixes_names_and_refuses_other_images():
    a, b = pool(2, 1), pool(3, 1)
    both = levers.union(("a", a), ("b", b))
    assert both.names == ("a/m0", "a/m1", "b/m0", "b/m1", "b/m2"), f"union named {both.names}"
    assert both.test.shape[0] == 5 and both.val.shape[0] == 5, "the union does not hold all five members"
    with pytest.raises(ArtifactError, match="other images"):
        levers.union(("a", a), ("c", pool(2, 2)))
    twice = levers.union(("a", a), ("again", a.subset(["m1"])))
    assert twice.names == ("a/m0", "a/m1"), f"a member already in the pool came in twice: {twice.names}"


def test_calibrate_lowers_each_members_validation_nll_and_keeps_its_votes():
    p = pool(4, 3, sharp=6.0)  # overconfident members: T > 1 helps
    cal, temps = levers.calibrate(p)
    for i, t in enumerate(temps):
        assert t > 0, f"member {i}: temperature {t}"
        before = -p.val[i].gather(1, p.val_y[:, None]).log().mean()
        after = -cal.val[i].gather(1, p.val_y[:, None]).log().mean()
        assert after <= before + 1e-9, f"member {i}: val NLL {float(before):.4f} → {float(after):.4f} after T = {t:.3f}"
        assert torch.equal(cal.test[i].argmax(1), p.test[i].argmax(1)), f"member {i}: T changed its test votes"


def test_a_lever_rows_nll_gap_is_strength_minus_diversity_exactly():
    ens, ref = pool(4, 4), pool(4, 4, sharp=2.0)
    row = levers.lever_row("x", ens, ref)
    g = {k: v["value"] for k, v in row.gap.items()}
    assert abs(g["nll"] - (g["mean_member_nll"] - g["diversity_nll"])) < 1e-9, f"the gap does not split: {g}"
    for k, d in row.gap.items():
        assert d["lo"] <= d["value"] <= d["hi"], f"{k}: the interval [{d['lo']}, {d['hi']}] misses {d['value']}"
    same = levers.lever_row("same", ref, ref)
    assert all(abs(d["value"]) < 1e-12 for d in same.gap.values()), f"the reference against itself: {same.gap}"


def test_levers_refuse_members_without_shared_validation():
    p = pool(3, 5)
    blind = MemberProbs(p.names, p.epochs, p.test, p.test_y, None, None)
    with pytest.raises(ArtifactError, match="validation"):
        levers.select(blind, 2)


@pytest.fixture(scope="module")
def demo_pools():
    from nes.explorer.demo import DEMO_DIR
    from nes.layout import RunDir
    if not (DEMO_DIR / "demo.json").exists():
        pytest.skip("no bundled demo (assets/demo)")
    run = RunDir(DEMO_DIR)
    base = run.baseline("deepens", 0)
    return MemberProbs.load(DEMO_DIR, run.finished_members()), MemberProbs.load(base.path, base.finished_members())


def test_every_lever_on_the_demo_has_five_members_and_a_split_gap(demo_pools):
    edgenes, deepens = demo_pools
    rows = levers.lever_rows(edgenes, deepens, 5)
    assert len(rows) == 6, f"{len(rows)} lever rows, expected 6 (4 levers, 2 of them again with temperatures)"
    for r in rows:
        assert len(r.members) == 5, f"{r.lever}: {len(r.members)} members"
        g = {k: v["value"] for k, v in r.gap.items()}
        assert abs(g["nll"] - (g["mean_member_nll"] - g["diversity_nll"])) < 1e-9, f"{r.lever}: {g}"
    hybrid = next(r for r in rows if r.lever.startswith("hybrid pool (α*"))
    assert all(n.split("/")[0] in ("edgenes", "deepens") for n in hybrid.members), f"hybrid members {hybrid.members}"


def cand(name: str, estimate: float, distance: float, probs: torch.Tensor | None = None) -> levers.Candidate:
    """A candidate architecture standing for a sample named NAME at DISTANCE from α*."""
    return levers.Candidate(SimpleNamespace(name=name, distance=distance), probs if probs is not None
                            else torch.full((4, 2), 0.5), estimate)


def test_strong_and_diverse_takes_the_most_distant_of_the_strong_first():
    cands = [cand("near strong", 0.63, 0.1), cand("far weak", 0.20, 0.9), cand("far strong", 0.625, 0.5),
             cand("mid weak", 0.40, 0.3)]
    got = [x.name for x in levers.strong_and_diverse(cands, star_estimate=0.64, n=3, margin=0.02)]
    assert got[:2] == ["far strong", "near strong"], f"the strong ones, most distant first: {got}"
    assert got[2] == "mid weak", f"with too few strong ones the next best estimate fills in: {got}"
    assert [x.name for x in levers.strong_and_diverse(cands, 0.64, 9)] == got + ["far weak"], "asking for more than there are"


def test_choose_untrained_takes_a_flawed_genotype_only_when_no_sound_one_is_left():
    """A pool-only genotype estimated as strong as α* and the most distant is passed over for a
    sound one (the one-shot estimate is least trustworthy there), for either pick."""
    conv = Genotype(reduce=(((("sep_conv_3x3", 1),), (("max_pool_3x3", 2),))))
    pools = Genotype(reduce=(((("skip_connect", 1),), (("max_pool_3x3", 2),))))
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    labels = torch.tensor([0, 1, 0, 1])
    cands = [levers.Candidate(SimpleNamespace(name=n, distance=d, genotype=g), probs, 1.0)
             for n, d, g in (("far pools", 0.9, pools), ("near conv", 0.2, conv))]
    for how in ("strong", "predicted"):
        one = [x.name for x in levers.choose_untrained(cands, probs, labels, 1, how, layers=2)]
        assert one == ["near conv"], f"{how}: picked {one}, expected the sound genotype"
        two = [x.name for x in levers.choose_untrained(cands, probs, labels, 2, how, layers=2)]
        assert two == ["near conv", "far pools"], f"{how}: {two}: the flawed one fills in last"
    unchecked = [x.name for x in levers.choose_untrained(cands, probs, labels, 1, "strong")]
    assert unchecked == ["far pools"], f"without layers the most distant strong one: {unchecked}"


def votes(right: torch.Tensor, k: int = 4, sure: float = 0.8) -> torch.Tensor:
    """Probabilities [N, K] that put `sure` on the label 0 where RIGHT, else on label 1."""
    p = torch.full((len(right), k), (1 - sure) / (k - 1))
    p[torch.arange(len(right)), torch.where(right, 0, 1)] = sure
    return p


def test_predicted_selection_adds_the_candidate_that_errs_where_alpha_star_is_right():
    n = 200
    y = torch.zeros(n, dtype=torch.long)
    star_right = torch.arange(n) % 4 != 0  # α* wrong on every 4th image
    twin = cand("twin", 0.75, 0.2, votes(star_right))  # α*'s errors again: as strong, no diversity
    other = cand("other", 0.75, 0.2, votes(torch.arange(n) % 4 != 1))  # as strong, errs elsewhere
    weak = cand("weak", 0.40, 0.9, votes(torch.arange(n) % 5 < 2))
    got = [x.name for x in levers.predicted_selection([twin, weak, other], votes(star_right), y, 2)]
    assert got[0] == "other", f"the first pick is not the equally strong candidate that errs elsewhere: {got}"
    assert len(set(got)) == 2, f"a candidate was picked twice: {got}"
    assert len(levers.predicted_selection([twin, weak, other], votes(star_right), y, 5)) == 3, \
        "asking for more candidates than there are did not return each once"


def test_forward_selection_keeps_its_start_and_refuses_a_bad_one():
    from nes.method.ensemble import greedy_selection
    p = pool(5, 7)
    got = greedy_selection(p.val, p.val_y, 3, start=(4,))
    assert got[0] == 4, f"the start member is not first: {got}"
    assert len(set(got)) == 3, f"a member was picked twice: {got}"
    with pytest.raises(ValueError, match="start"):
        greedy_selection(p.val, p.val_y, 3, start=(5,))


def test_every_choice_is_made_on_validation_alone():
    edgenes, deepens = pool(6, 6), pool(5, 6, sharp=2.5)
    _, temps, choices = levers.plan(edgenes, deepens, 4)
    perm = torch.randperm(len(edgenes.test_y))
    scrambled = MemberProbs(edgenes.names, edgenes.epochs, edgenes.test[:, perm], edgenes.test_y[perm],
                            edgenes.val, edgenes.val_y)
    ref_scrambled = MemberProbs(deepens.names, deepens.epochs, deepens.test[:, perm], deepens.test_y[perm],
                                deepens.val, deepens.val_y)
    _, temps2, again = levers.plan(scrambled, ref_scrambled, 4)
    assert again == choices, "a lever's members or validation NLL changed when only the test split changed"
    assert temps2 == temps, "the temperatures changed when only the test split changed"
    assert levers.best(again) == levers.best(choices), "the best lever changed with the test split"


def test_equal_cost_levers_train_no_more_networks_than_deepens_and_pools_hold_no_network_twice():
    edgenes, deepens = pool(5, 7), pool(5, 7, sharp=2.5)
    edgenes = MemberProbs(edgenes.names, edgenes.epochs, torch.cat([deepens.test[:1], edgenes.test[1:]]), edgenes.test_y,
                          torch.cat([deepens.val[:1], edgenes.val[1:]]), edgenes.val_y)  # member 0 is DeepEns's seed 0
    _, _, choices = levers.plan(edgenes, deepens, 4)
    by_name = {c.lever: c for c in choices}
    mix = by_name["hybrid at equal cost (α* seeds + EdgeNES)"]
    assert mix.networks == 4, f"the equal-cost mix counts {mix.networks} networks, DeepEns trains 4"
    assert any(n.startswith("edgenes/") for n in mix.members), f"the equal-cost mix holds no EdgeNES member: {mix.members}"
    hybrid = by_name["hybrid pool (α* seeds + EdgeNES), forward selection"]
    assert hybrid.networks == 9, f"the hybrid pool counts {hybrid.networks} networks; 5 + 5 with one shared is 9"
    assert not {"edgenes/m0", "deepens/m0"} <= set(hybrid.members), f"the shared network was picked twice: {hybrid.members}"
    cheap = levers.best(choices, max_networks=4)
    assert cheap.networks <= 4, f"the best lever at equal cost trained {cheap.networks} networks"
    assert all(c.edgenes for c in choices if c.lever != levers.REFERENCE and not c.lever.startswith(levers.REFERENCE)), \
        "a lever other than DeepEns is marked as the reference"


def test_identical_corrupted_copies_do_not_narrow_the_interval():
    edgenes, deepens = pool(4, 8), pool(4, 8, sharp=2.0)
    p, temps, choices = levers.plan(edgenes, deepens, 3)
    once = levers.evaluate(p, temps, choices)
    copies = torch.cat([p.test] * 4, dim=1), p.test_y.repeat(4)
    grouped = levers.evaluate(p, temps, choices, *copies, groups=4)
    naive = levers.evaluate(p, temps, choices, *copies)
    for a, b, c in zip(once, grouped, naive):
        ga, gb, gc = a.gap["nll"], b.gap["nll"], c.gap["nll"]
        assert abs(ga["value"] - gb["value"]) < 1e-12, f"{a.lever}: copies changed the gap {ga['value']} → {gb['value']}"
        assert abs((ga["hi"] - ga["lo"]) - (gb["hi"] - gb["lo"])) < 1e-9, \
            f"{a.lever}: copies drawn together should give the one-copy interval, got {gb} vs {ga}"
        assert gc["hi"] - gc["lo"] < ga["hi"] - ga["lo"], f"{a.lever}: copies drawn one by one should look narrower"


@pytest.fixture(scope="module")
def demo_copy(tmp_path_factory):
    """The bundled demo without its levers report or shift caches, in a scratch folder."""
    from nes.explorer.demo import DEMO_DIR
    if not (DEMO_DIR / "demo.json").exists():
        pytest.skip("no bundled demo (assets/demo)")
    run = tmp_path_factory.mktemp("levers") / "demo"
    shutil.copytree(DEMO_DIR, run, ignore=lambda d, names: [n for n in names if n in ("shift", levers.LEVERS_FILE)])
    return run


def test_the_levers_command_writes_a_report_that_reads_back_and_knows_when_it_is_stale(demo_copy):
    from nes.explorer import leversview
    r = nes("levers", "--run", str(demo_copy), "--images", "8", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    rep = read_json(demo_copy / levers.LEVERS_FILE)
    assert rep["kind"] == "levers" and rep["size"] == 5, f"report kind {rep['kind']!r}, size {rep['size']}"
    assert leversview.severities(rep) == [0, 1, 2, 3, 4, 5], f"severities {leversview.severities(rep)}"
    levers_shown = [row["lever"] for row in leversview.table(rep, 3)]
    assert levers_shown == [row["lever"] for row in rep["clean"]["rows"]], "severity 3 lacks a lever of the clean table"
    for sev in leversview.severities(rep):
        for row in leversview.rows_at(rep, sev):
            g = {k: v["value"] for k, v in row["gap"].items()}
            assert abs(g["nll"] - (g["mean_member_nll"] - g["diversity_nll"])) < 1e-9, f"severity {sev}, {row['lever']}"
    assert "Best EdgeNES-derived ensemble at equal cost" in r.stdout, "the command does not print the verdict"
    assert leversview.protocols(rep) == ["clean", "shifted"], f"protocols {leversview.protocols(rep)}"
    assert leversview.severities(rep, "shifted") == [1, 2, 3, 4, 5], "levers chosen on the validation corruptions"
    picked = rep["shift_selected"]["best"]["equal_cost"]
    assert any(r["lever"] == picked for r in leversview.rows_at(rep, 3, "shifted")), f"no severity-3 row for {picked}"
    for row in leversview.rows_at(rep, 3, "shifted"):
        g = {k: v["value"] for k, v in row["gap"].items()}
        assert abs(g["nll"] - (g["mean_member_nll"] - g["diversity_nll"])) < 1e-9, f"shifted protocol, {row['lever']}"
    assert leversview.fresh(demo_copy, rep), "a report just made reads as stale"
    probs = sorted((demo_copy / "members" / "lam_1_00" / "probs").glob("epoch_*.safetensors"))[-1]
    other = sorted((demo_copy / "members" / "lam_3_50" / "probs").glob("epoch_*.safetensors"))[-1]
    shutil.copy(other, probs)  # as if lam_1_00 had been retrained
    assert not leversview.fresh(demo_copy, rep), "a report about a retrained member still reads as fresh"


def test_the_levers_command_refuses_a_run_without_deepens_and_writes_nothing(tmp_path):
    from nes.explorer.demo import DEMO_DIR
    run = tmp_path / "nodeep"
    shutil.copytree(DEMO_DIR, run, ignore=lambda d, names: [n for n in names if n in ("shift", "baselines", levers.LEVERS_FILE)])
    r = nes("levers", "--run", str(run), "--no-shift")
    assert r.returncode == 2, f"exit code {r.returncode}, expected 2: {r.stderr}"
    assert "baseline" in r.stderr and "deepens" in r.stderr, f"the message does not say what to run: {r.stderr}"
    assert not (run / levers.LEVERS_FILE).exists(), "a refused command wrote a levers report"


def test_compare_py_reports_the_levers_verdict_and_a_missing_pool_is_named(demo_copy):
    import importlib.util

    from helpers import ROOT
    from nes.explorer.demo import DEMO_DIR
    spec = importlib.util.spec_from_file_location("compare_bench_levers", ROOT / "benchmarks" / "compare.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rep = levers.load_report(DEMO_DIR)
    assert rep is not None, "the bundled demo ships no levers report"
    text = "\n".join(bench.levers_section([{"levers": rep}]))
    for kind in ("at equal members", "at equal cost"):
        assert f"seed 0: Best EdgeNES-derived ensemble {kind}" in text, f"no verdict {kind} in compare.py's report:\n{text}"
    with pytest.raises(ArtifactError, match="edgenes-edges_s0"):
        levers.report_sets(demo_copy, source="edgenes-edges_s0")


def test_a_strong_pick_takes_members_as_strong_as_alpha_star_before_weaker_ones(demo_copy):
    from nes.method.darts import load_search
    from nes.method.oneshot import one_shot_accuracy, one_shot_setup
    from nes.runs.tasks import sample_task
    out = sample_task(demo_copy, {"members": 4, "regularizer": "js-target", "preset": "quick", "pick": "strong"})
    picked = read_json(demo_copy / "samples.json")["samples"]
    assert out["members"] == len(picked) == 4, f"asked for 4 members, got {out['members']} ({len(picked)} saved)"
    assert picked[0]["diversity"] == min(p["diversity"] for p in picked), "the first member is not the α* end"
    from nes.method.space import Genotype
    genotypes = [Genotype.from_dict(p["genotype"]) for p in picked[1:]]
    star = load_search(demo_copy).star
    assert len(set(genotypes)) == 3 and star not in genotypes, "the diverse members repeat a genotype or are α*"
    setup = one_shot_setup(demo_copy)
    bar = one_shot_accuracy(setup, star) - 0.02
    strong = [one_shot_accuracy(setup, g) >= bar for g in genotypes]
    assert strong == sorted(strong, reverse=True), f"a weaker member came before a strong one: {strong}"
    assert any(strong), "no member within 2 points of α*'s one-shot estimate (the demo's js-target axis has some)"


def test_a_predicted_pick_takes_alpha_star_then_distinct_architectures(demo_copy):
    from nes.method.darts import load_search
    from nes.method.space import Genotype
    from nes.runs.tasks import sample_task
    before = (demo_copy / "samples.json").read_bytes() if (demo_copy / "samples.json").exists() else None
    with pytest.raises(ValueError, match="--pick"):
        sample_task(demo_copy, {"members": 4, "regularizer": "js-target", "preset": "quick", "pick": "best"})
    after = (demo_copy / "samples.json").read_bytes() if (demo_copy / "samples.json").exists() else None
    assert after == before, "a refused pick changed samples.json"
    out = sample_task(demo_copy, {"members": 4, "regularizer": "js-target", "preset": "quick", "pick": "predicted"})
    picked = read_json(demo_copy / "samples.json")["samples"]
    assert out["members"] == len(picked) == 4, f"asked for 4 members, got {out['members']} ({len(picked)} saved)"
    assert picked[0]["diversity"] == min(p["diversity"] for p in picked), "the first member is not the α* end"
    genotypes = [Genotype.from_dict(p["genotype"]) for p in picked[1:]]
    assert len(set(genotypes)) == 3, f"the predicted pick repeats a genotype: {[g.compact() for g in genotypes]}"
    assert load_search(demo_copy).star not in genotypes, "the predicted pick took α* as a diverse member"


def test_a_damaged_levers_report_is_named_with_the_command_that_remakes_it(tmp_path):
    (tmp_path / levers.LEVERS_FILE).write_text('{"kind": "levers", "version": 1, "clean": {}}')
    with pytest.raises(ArtifactError, match="nes levers"):
        levers.load_report(tmp_path)
    (tmp_path / levers.LEVERS_FILE).write_text("{not json")
    with pytest.raises(ArtifactError, match=levers.LEVERS_FILE):
        levers.load_report(tmp_path)
    assert levers.load_report(tmp_path / "nowhere") is None, "a run without a report should read as None"
