"""Diversity control (issue 14): the distance to α*, the js-target regularizer, the pinned α*
end, the one diversity axis, grid quality and the collapse warning; the js-target CLI on digits."""
import json

import pytest
import torch

from helpers import nes
from nes.config import HypernetConfig
from nes.method.divergence import StarDistance, js_divergence
from nes.method.diversity import (ArchSample, collapse_warning, grid_quality, pick_members, sample_architectures,
                                  spearman)
from nes.method.hypernet import PiecewiseLinearHypernet
from nes.method.regularizers import AXES, REGULARIZERS, JsTargetRegularizer, LamRange, diversity_lam, lam_diversity
from nes.method.flaws import structural_flaws, structural_flaws_note, unused_cells
from nes.method.space import ArchLayout, Genotype, edge_index

LAY = ArchLayout(4, ("normal", "reduce"), 1)
STAR = Genotype(normal=((("sep_conv_3x3", 0),), (("skip_connect", 1),), (("avg_pool_3x3", 2),), (("dil_conv_3x3", 0),)),
                reduce=((("sep_conv_3x3", 1),), (("dil_conv_5x5", 0),), (("skip_connect", 2),), (("max_pool_3x3", 3),)))


def theta_star(seed=0):
    return LAY.genotype_logits(STAR, 1.5) + 0.3 * torch.randn(LAY.size, generator=torch.Generator().manual_seed(seed))


def reversed_order(ts):
    """α*'s logits with each distribution's order reversed (its strongest entry on its weakest)."""
    def reverse(row):
        order = torch.argsort(row)
        out = torch.empty_like(row)
        out[order] = row[order.flip(0)]
        return out
    parts = LAY.split(ts.clone())
    for ct, (alpha, betas) in parts.items():
        alpha.copy_(torch.stack([reverse(r) for r in alpha]))
        for b in betas:
            b.copy_(reverse(b))
    return LAY.join(parts)


def vertex_bound(ts):
    """The largest JS_g any θ can reach: per distribution of genotype*, JS to the one-hot vertex
    farthest from α*'s (JS is convex in each argument, so its maximum sits at a vertex)."""
    vals = []
    for ct, (alpha, betas) in LAY.split(ts).items():
        kept = [edge_index(i, inp) for ct_, i, inp, _ in STAR.edges() if ct_ == ct]
        for p in [*torch.softmax(alpha[kept], -1), *(torch.softmax(b, -1) for b in betas)]:
            vals.append(max(float(js_divergence(p, torch.eye(len(p))[k])) for k in range(len(p))))
    return sum(vals) / len(vals)


def test_distance_to_alpha_star_is_zero_there_and_bounded():
    ts = theta_star()
    d = StarDistance(LAY, STAR, ts)
    assert float(d(ts)) == 0.0
    far = vertex_bound(ts)
    assert 0 < far <= torch.log(torch.tensor(2.0)).item()
    for seed in range(20):
        th = 4 * torch.randn(LAY.size, generator=torch.Generator().manual_seed(seed))
        assert 0 <= float(d(th)) <= far + 1e-6
    # the maximum is reached: each of genotype*'s distributions one-hot on its least likely entry
    parts = LAY.split(ts.clone())
    for ct, (alpha, betas) in parts.items():
        alpha.copy_(-50 * torch.nn.functional.one_hot(alpha.argmax(-1), 7) + 50 * torch.nn.functional.one_hot(alpha.argmin(-1), 7))
        for b in betas:
            b.copy_(torch.where(b == b.min(), 50.0, -50.0))
    assert float(d(LAY.join(parts))) == pytest.approx(far, abs=1e-3)
    # the reachable distance lies inside the vertex bound and is reached exactly by α*'s own
    # logits in reverse order (an architecture as confident as α*, strongest on its weakest)
    near = d.reachable()
    assert 0 < near < far

    assert float(d(reversed_order(ts))) == pytest.approx(near, abs=1e-5)
    # batched θ gives the same values
    batch = torch.stack([ts, 3 * torch.randn(LAY.size)])
    assert torch.allclose(d(batch), torch.stack([d(batch[0]), d(batch[1])]))
    assert float(js_divergence(torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5]))) == 0.0


@pytest.mark.parametrize("weight", [0.0, HypernetConfig().overconfidence_weight])
@pytest.mark.parametrize("lam_frac", [0.1, 0.6])
def test_js_target_gradient_moves_the_distance_toward_lambda_from_both_sides(lam_frac, weight):
    ts = theta_star(1)
    reg = JsTargetRegularizer(LAY, STAR, ts, overconfidence_weight=weight)
    d = reg.distance
    lam = lam_frac * d.reachable()
    reversed_star = reversed_order(ts)
    assert float(d(reversed_star)) == pytest.approx(d.reachable(), abs=1e-5)  # as confident as α*, farthest
    starts = [ts + 0.05 * torch.randn(LAY.size), reversed_star]  # below and above the target
    if not weight:  # random logits are far surer than α* in places: the overconfidence term pulls there first
        starts.append(ts + 3.0 * torch.randn(LAY.size))
    for start in starts:
        th = start.clone()
        before = abs(float(d(th)) - lam)
        for _ in range(30):
            th.requires_grad_()
            reg(lam, th, 1.0).backward()
            th = (th - 0.002 * th.grad).detach()
        assert abs(float(d(th)) - lam) < before  # from below and from above


def test_overconfidence_term_keeps_architectures_no_surer_than_alpha_star():
    ts = theta_star(3)
    weight = HypernetConfig().overconfidence_weight
    assert weight > 0  # js-target trains with it by default
    reg = JsTargetRegularizer(LAY, STAR, ts, overconfidence_weight=weight)
    d = reg.distance
    assert float(d.overconfidence(ts)) == pytest.approx(0.0, abs=1e-10)
    # α*'s logits in reverse order are as confident as α* (the reachable distance's architecture)
    assert float(d.overconfidence(reversed_order(ts))) == pytest.approx(0.0, abs=1e-6)
    # flatter than α* costs nothing; saturated logits are pulled back toward α*'s confidence by the
    # regularizer's gradient (a saturated softmax alone passes no JS gradient)
    assert float(d.overconfidence(0.25 * ts)) == 0.0
    th = 4.0 * ts
    before = float(d.overconfidence(th))
    assert before > 0
    for _ in range(30):
        th.requires_grad_()
        reg(0.3 * d.reachable(), th, 1.0).backward()
        th = (th - 0.01 * th.grad).detach()
    assert float(d.overconfidence(th)) < before
    with pytest.raises(ValueError, match="overconfidence_weight"):
        JsTargetRegularizer(LAY, STAR, ts, overconfidence_weight=-1.0)


def test_axis_ends_and_round_trip():
    assert set(AXES) == set(REGULARIZERS)
    assert AXES["edges"].star_end == "hi", f"edges: α* at the {AXES['edges'].star_end!r} end of λ, expected hi"
    assert AXES["js"].star_end == "lo", f"js: α* at the {AXES['js'].star_end!r} end of λ, expected lo"
    assert AXES["js-target"].star_end == "lo", \
        f"js-target: α* at the {AXES['js-target'].star_end!r} end of λ, expected lo"
    lo, hi = 0.0, 4.0
    assert diversity_lam("edges", 0.0, lo, hi) == 4.0, \
        f"edges: diversity 0 at λ {diversity_lam('edges', 0.0, lo, hi)}, expected 4"
    assert diversity_lam("edges", 1.0, lo, hi) == 0.0, \
        f"edges: diversity 1 at λ {diversity_lam('edges', 1.0, lo, hi)}, expected 0"
    assert diversity_lam("js-target", 0.0, lo, hi) == 0.0, \
        f"js-target: diversity 0 at λ {diversity_lam('js-target', 0.0, lo, hi)}, expected 0"
    assert diversity_lam("js", 1.0, lo, hi) == 4.0, \
        f"js: diversity 1 at λ {diversity_lam('js', 1.0, lo, hi)}, expected 4"
    for reg in REGULARIZERS:
        for d in (0.0, 0.3, 1.0):
            assert lam_diversity(reg, diversity_lam(reg, d, lo, hi), lo, hi) == pytest.approx(d)


@pytest.mark.parametrize("pin", ["lo", "hi"])
def test_pinned_end_is_exactly_alpha_star_and_does_not_move(pin):
    ts = theta_star(2)
    h = PiecewiseLinearHypernet(ts, LamRange.exact(0.0, 1.0), 4, init_noise=0.5, pin=pin, train_pivots=False)
    end = 0.0 if pin == "lo" else 1.0
    assert torch.equal(h(end), ts)
    opt = torch.optim.Adam(h.parameters(), 0.1)
    for lam in torch.rand(20):
        opt.zero_grad()
        (h(float(lam)) ** 2).sum().backward()
        (h(end) ** 2).sum().backward()
        opt.step()
    assert torch.equal(h(end), ts)  # the pinned anchor got no update
    assert not torch.equal(h(0.5), ts), f"pin {pin}: training did not move the middle of the curve"
    assert not h.pivot_logits.requires_grad, f"pin {pin}: train_pivots=False left the pivots trainable"
    samples = sample_architectures(h, LAY, STAR, [end], theta_star=ts)
    assert samples[0].genotype == LAY.discretize(ts), f"pin {pin}: the pinned end's genotype is not α*'s"
    assert samples[0].distance == 0.0, f"pin {pin}: the pinned end is at distance {samples[0].distance} from α*"


def test_grid_quality_and_the_collapse_warning():
    def sample(d, g, dist):
        return ArchSample(d, torch.zeros(1), g, g.matched_edges(STAR), 0.0, dist, d)

    other = Genotype(normal=STAR.normal, reduce=((("max_pool_3x3", 0),),) + STAR.reduce[1:])
    collapsed = [sample(0.0, STAR, 0.0)] + [sample(d / 8, other, 0.3) for d in range(1, 9)]
    q = grid_quality(collapsed)
    assert q["distinct"] == 2, f"{q['distinct']} distinct genotypes, expected 2"
    assert q["star_end_distance"] == 0.0, f"the α* end is at distance {q['star_end_distance']}"
    assert q["star_end_matched"] == 8, f"the α* end matches {q['star_end_matched']} edges, expected 8"
    msg = collapse_warning(q, 3, "js")
    assert msg, "no warning for a collapsed grid"
    assert "only 2 distinct" in msg, f"the warning does not count the 2 distinct genotypes: {msg!r}"
    assert "js-target" in msg, f"the warning does not suggest js-target: {msg!r}"
    assert collapse_warning(q, 2, "js") is None
    assert spearman([0, 1, 2, 3], [0, 2, 4, 9]) == pytest.approx(1.0)
    assert spearman([0, 1, 2, 3], [3, 2, 1, 0]) == pytest.approx(-1.0)


def test_js_target_hypernet_cli_on_digits(tmp_path):
    run = tmp_path / "run"
    assert nes("search", "--dataset", "digits", "--preset", "smoke", "--run", str(run)).returncode == 0
    r = nes("hypernet", "--run", str(run), "--regularizer", "js-target", "--preset", "smoke")
    assert r.returncode == 0, r.stderr
    assert "js-target" in r.stdout, f"hypernet does not name js-target:\n{r.stdout}"
    assert "distance at the α* end 0.0000" in r.stdout, \
        f"hypernet does not report distance 0 at the α* end:\n{r.stdout}"
    r = nes("sample", "--run", str(run), "--regularizer", "js-target", "--json")
    rows = json.loads(r.stdout)
    star = json.loads((run / "search" / "genotype.json").read_text())["genotype"]
    at_star = min(rows, key=lambda x: x["diversity"])
    assert at_star["diversity"] == 0.0, f"the sample nearest α* is at diversity {at_star['diversity']}"
    assert at_star["distance"] == 0.0, f"the sample at diversity 0 is at distance {at_star['distance']}"
    assert at_star["genotype"] == star, "the sample at diversity 0 is not genotype*"
    assert all(0.0 <= x["diversity"] <= 1.0 and x["distance"] >= 0.0 for x in rows)


def test_search_records_how_sure_it_is(tmp_path):
    from nes.config import SearchConfig, from_preset
    from nes.explorer.runview import RunView
    from nes.method.darts import confidence, search

    assert confidence(LAY, torch.zeros(LAY.size)) == {"genotype": LAY.discretize(torch.zeros(LAY.size)).compact(),
                                                      "kept_top_op": pytest.approx(1 / 7), "input_margin": 0.0}
    sure = confidence(LAY, LAY.genotype_logits(STAR, 10.0))
    assert sure["kept_top_op"] > 0.99, f"sharp logits: kept top-op probability {sure['kept_top_op']}"
    assert sure["input_margin"] > 0.99, f"sharp logits: input margin {sure['input_margin']}"
    search(from_preset(SearchConfig, "smoke", {"epochs": 2}), tmp_path / "r", "cpu")
    view = RunView(tmp_path / "r")
    hist = view.search_history()
    assert all({"genotype", "kept_top_op", "input_margin"} <= set(h) for h in hist)
    conf = view.search_confidence()
    assert conf["epochs"] == 2, f"confidence over {conf['epochs']} epochs, expected 2"
    assert 1 <= conf["stable_epochs"] <= 2, f"{conf['stable_epochs']} stable epochs, outside [1, 2]"
    assert conf["genotype"] == view.star.compact(), \
        f"confidence genotype {conf['genotype']} is not genotype* {view.star.compact()}"
    assert 1 / 7 - 1e-6 <= conf["kept_top_op"] <= 1.0


def _reduce_only(first_input: int, op: str) -> Genotype:
    return Genotype(reduce=(((op, first_input),), (("max_pool_3x3", 2),), (("max_pool_3x3", 3),), (("max_pool_3x3", 4),)))


def test_pick_members_spreads_distinct_genotypes_and_passes_over_flawed_ones():
    """Members are α*'s end, then distinct genotypes other than α* nearest 1/(n−1), …, 1 on the
    axis; a genotype with a structural flaw (a cell unused, a cell without a convolution) is taken
    only when nothing else is left."""
    star = _reduce_only(1, "sep_conv_5x5")
    ops = ["sep_conv_5x5", "sep_conv_3x3", "dil_conv_3x3", "avg_pool_3x3", "dil_conv_5x5"]
    # diversity 0 … 1 over 9 samples: α*, then each op twice, reading input 1 (odd) or only input 0 (even)
    genos = [star] + [_reduce_only(i % 2, ops[(i + 1) // 2 % len(ops)]) for i in range(1, 9)]
    samples = [ArchSample(float(i), torch.zeros(1), g, 0, 0.0, float(i) / 8, i / 8) for i, g in enumerate(genos)]
    assert unused_cells(genos[2], 2) == (1,), \
        f"a genotype reading only input 0 leaves cells {unused_cells(genos[2], 2)} unused, expected (1,)"
    assert structural_flaws(genos[1], 2) == [], f"{genos[1].compact()} is sound: {structural_flaws(genos[1], 2)}"
    assert structural_flaws(genos[5], 2) == ["no convolution in the reduce cell"], \
        f"{genos[5].compact()} (pools only): {structural_flaws(genos[5], 2)}"
    for n in (1, 2, 3, 4):
        picked = pick_members(samples, n, star, layers=2)
        assert len(picked) == n, f"asked for {n} members, picked {len(picked)}"
        assert picked[0] is samples[0], f"n={n}: the first member is not the α* end"
        rest = [p.genotype for p in picked[1:]]
        assert len(set(rest)) == len(rest), f"n={n}: a genotype picked twice"
        assert star not in rest, f"n={n}: α* picked again after the α* end"
        flawed = [g.compact() for g in rest if structural_flaws(g, 2)]
        assert not flawed, f"n={n}: flawed {flawed} picked while 3 sound genotypes other than α* exist"
        assert [p.diversity for p in picked] == sorted(p.diversity for p in picked)
    assert pick_members(samples, 2, star, layers=2)[1].diversity == 7 / 8  # nearest sound to 1
    assert pick_members(samples, 2, star)[1].diversity == 1.0  # without layers: the far end itself
    # more members than sound genotypes: the rest come from the flawed ones
    six = pick_members(samples, 6, star, layers=2)
    assert len(six) == 6, f"asked for 6 members, picked {len(six)}"
    assert sum(1 for p in six[1:] if structural_flaws(p.genotype, 2)) == 2, \
        f"{[p.genotype.compact() for p in six[1:]]}: expected 3 sound members, then 2 flawed ones"
    # a collapsed family gives what it has (α* end only)
    assert len(pick_members(samples[:1] * 5, 3, star, layers=2)) == 1


def test_structural_flaws_look_only_at_the_cells_the_stack_uses():
    pools = (((("max_pool_3x3", 1),), (("avg_pool_3x3", 2),)))
    convs = (((("sep_conv_3x3", 1),), (("max_pool_3x3", 2),)))
    g = Genotype(normal=pools, reduce=convs)
    assert structural_flaws(g, 2) == [], f"2 cells are both reductions; the pool-only normal cell is not built: {structural_flaws(g, 2)}"
    assert structural_flaws(g, 3) == ["no convolution in the normal cell"], f"3 cells: {structural_flaws(g, 3)}"
    skips = Genotype(reduce=(((("skip_connect", 1),), (("max_pool_3x3", 2),))))
    assert structural_flaws(skips, 2) == ["no convolution in the reduce cell"], \
        f"a stride-2 skip is 1×1 convolutions only: {structural_flaws(skips, 2)}"
    assert structural_flaws_note(g, 2) is None, f"a sound genotype gets a warning: {structural_flaws_note(g, 2)!r}"
    assert "reduce cell holds only pools and skips" in (structural_flaws_note(skips, 2) or ""), \
        f"the warning does not name the pool-only cell: {structural_flaws_note(skips, 2)!r}"


def test_the_edges_axis_is_measured_against_its_target_not_called_exact():
    from nes.explorer.demo import DEMO_DIR
    from nes.explorer.runview import RunView
    from nes.method.diversity import edge_tracking
    if not (DEMO_DIR / "demo.json").exists():
        pytest.skip("no bundled demo (assets/demo)")
    view = RunView(DEMO_DIR)
    t = view.edge_tracking(33)
    assert t["points"] == 33, f"tracked {t['points']} grid points, asked for 33"
    assert 1 <= t["on_target"] <= 33, f"{t['on_target']} points on target: the α* end at least must be"
    assert 0 <= t["max_off"] <= view.star.num_kept_edges(), f"off by {t['max_off']} edges, more than α* has"
    star_end = view.sample("edges", [view.lam_range("edges").target[1]])
    assert edge_tracking(star_end) == {"points": 1, "on_target": 1, "max_off": 0.0}, "the α* end is off its target"
