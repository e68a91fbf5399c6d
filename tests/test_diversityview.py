"""Accuracy against diversity (issue 26, item 6) on the bundled demo run, read only: each member's
accuracy against its distance to α*, the validation forward-selection curve with its intervals,
and the Ensemble page drawing both."""
import json
import math

import pytest
from streamlit.testing.v1 import AppTest

from helpers import ROOT
from nes.explorer import diversityview
from nes.explorer.demo import DEMO_DIR
from nes.explorer.runview import RunView
from nes.method.scoring import MemberProbs
from nes.method.stats import best_member_index

pytestmark = pytest.mark.skipif(not (DEMO_DIR / "demo.json").exists(), reason="no bundled demo (assets/demo)")


@pytest.fixture(scope="module")
def view():
    return RunView(DEMO_DIR)


@pytest.fixture(scope="module")
def points(view):
    return diversityview.member_points(view)


@pytest.fixture(scope="module")
def curve(view):
    return diversityview.selection_curve(DEMO_DIR, view.finished_members())


def test_one_point_per_trained_member(view, points):
    names = [p["member"] for p in points]
    assert sorted(names) == sorted(view.finished_members()), \
        f"points for {sorted(names)}, trained members {sorted(view.finished_members())}"


def test_distances_lie_within_the_js_bounds(points):
    for p in points:
        assert 0.0 <= p["distance"] <= math.log(2), f"{p['member']}: distance {p['distance']} outside [0, ln 2]"


def test_alpha_stars_genotype_sits_at_distance_zero(view, points):
    seed_only = [p for p in points if view.member(p["member"]).genotype == view.star]
    assert seed_only, "the demo has no member with α*'s genotype"
    for p in seed_only:
        assert p["distance"] == 0.0, f"{p['member']} has α*'s genotype but distance {p['distance']}"
        assert p["seed_only"], f"{p['member']} has α*'s genotype but is not marked seed-only"


def test_other_architectures_are_away_from_alpha_star(view, points):
    for p in points:
        if view.member(p["member"]).genotype != view.star:
            assert p["distance"] > 0.0, f"{p['member']} differs from α* but sits at distance 0"


def test_accuracies_are_the_members_test_accuracies(view, points):
    names = [p["member"] for p in points]
    want = MemberProbs.load(DEMO_DIR, names).member_metrics("test")
    for p in points:
        assert p["accuracy"] == pytest.approx(want[p["member"]]["accuracy"]), \
            f"{p['member']}: accuracy {p['accuracy']}, its test probabilities say {want[p['member']]['accuracy']}"


def test_selection_starts_with_the_best_validation_member(view, curve):
    names = view.finished_members()
    probs = MemberProbs.load(DEMO_DIR, names)
    best = names[best_member_index(probs.val, probs.val_y)]
    assert curve[0]["member"] == best, f"selection starts with {curve[0]['member']}, best on validation is {best}"


def test_selection_never_repeats_a_member(curve):
    order = [r["member"] for r in curve]
    assert len(set(order)) == len(order), f"a member is selected twice: {order}"


def test_selection_order_uses_only_the_members_given(view, curve):
    order = [r["member"] for r in curve]
    assert sorted(order) == sorted(view.finished_members()), f"order {order} is not the finished members"


def test_curve_has_one_point_per_step(view, curve):
    steps = [r["step"] for r in curve]
    assert steps == list(range(1, len(view.finished_members()) + 1)), f"steps {steps}"
    for r in curve:
        assert r["members"] == [c["member"] for c in curve[: r["step"]]], \
            f"step {r['step']}: members {r['members']} are not the first {r['step']} of the order"


def test_intervals_contain_their_estimate(curve):
    for r in curve:
        for metric, d in r["gain"].items():
            assert d["lo"] <= d["value"] <= d["hi"], \
                f"step {r['step']} ({r['member']}): {metric} gain {d['value']} outside [{d['lo']}, {d['hi']}]"


def test_gain_is_over_the_first_selected_member(curve):
    for r in curve:
        assert r["best_member"] == curve[0]["member"], \
            f"step {r['step']}: gain over {r['best_member']}, the best validation member is {curve[0]['member']}"


def test_gain_matches_the_ensemble_minus_its_best_member(curve):
    for r in curve:
        want = 100 * (r["accuracy"] - r["best_accuracy"])
        assert r["gain"]["accuracy"]["value"] == pytest.approx(want, abs=1e-6), \
            f"step {r['step']}: accuracy gain {r['gain']['accuracy']['value']} pts, metrics say {want}"


def test_one_step_marks_the_validation_minimum(curve):
    marked = [r["step"] for r in curve if r["val_minimum"]]
    low = min(curve, key=lambda r: r["val_nll"])["step"]
    assert marked == [low], f"validation minimum marked at {marked}, lowest validation NLL at step {low}"


def test_figures_hold_every_member_and_step(points, curve):
    fig = diversityview.diversity_figure(points)
    labels = sorted(t for tr in fig.data for t in tr.text)
    assert labels == sorted(p["member"] for p in points), f"the scatter labels {labels}"
    assert fig.layout.xaxis.range[0] < 0.0, "the x axis starts at 0: seed-only members would sit on its edge"
    sel = diversityview.selection_figure(curve)
    assert [len(tr.x) for tr in sel.data] == [len(curve)] * 2, f"curve traces of {[len(tr.x) for tr in sel.data]} points"


def test_ensemble_page_shows_both_charts(app_home):
    at = AppTest.from_file(str(ROOT / "explorer_app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/ensemble.py").run()
    assert not at.exception, [e.value for e in at.exception]
    titles = [json.dumps(json.loads(c.proto.spec)["layout"].get("title", ""), ensure_ascii=False)
              for c in at.get("plotly_chart")]
    assert any("vs architecture distance to α*" in t for t in titles), f"no accuracy-vs-distance chart in {titles}"
    assert any("forward selection" in t for t in titles), f"no forward-selection chart in {titles}"
    caption = " ".join(c.value for c in at.caption if "forward selection" in c.value)
    assert "validation" in caption and "never chooses" in caption, \
        f"the selection's caption does not say the order comes from validation only: {caption!r}"
    assert not at.error, [e.value for e in at.error]
