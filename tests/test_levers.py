"""Training-free levers on strength vs diversity (issue 27, nes.method.levers): forward selection and
temperatures that see only the validation split, hybrid pools, and the ledger's exact split of each
lever's NLL difference. Synthetic probabilities for the invariants, the bundled demo for the rows."""
from __future__ import annotations

import pytest
import torch

from nes.artifacts import ArtifactError
from nes.method import levers
from nes.method.scoring import MemberProbs


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
    assert len(rows) == 5, f"{len(rows)} lever rows"
    for r in rows:
        assert len(r.members) == 5, f"{r.lever}: {len(r.members)} members"
        g = {k: v["value"] for k, v in r.gap.items()}
        assert abs(g["nll"] - (g["mean_member_nll"] - g["diversity_nll"])) < 1e-9, f"{r.lever}: {g}"
    hybrid = next(r for r in rows if r.lever.startswith("hybrid pool (α*"))
    assert all(n.split("/")[0] in ("edgenes", "deepens") for n in hybrid.members), f"hybrid members {hybrid.members}"


def test_strong_and_diverse_takes_the_most_distant_of_the_strong_first():
    cands = [("near strong", 0.63, 0.1), ("far weak", 0.20, 0.9), ("far strong", 0.625, 0.5), ("mid weak", 0.40, 0.3)]
    got = levers.strong_and_diverse(cands, star_estimate=0.64, n=3, margin=0.02)
    assert got[:2] == ["far strong", "near strong"], f"the strong ones, most distant first: {got}"
    assert got[2] == "mid weak", f"with too few strong ones the next best estimate fills in: {got}"
    assert levers.strong_and_diverse(cands, 0.64, 9) == got + ["far weak"], "asking for more than there are"
