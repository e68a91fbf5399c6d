"""The strength frontier (issue 27, item 1) on the bundled demo run, read only: each member's
validation NLL and its D with α* against its distance from α*, α*'s seeds from the DeepEns baseline
as the band, the figure, its caption, the cases with nothing to draw, and the Ensemble page drawing it."""
import json
import math
import os
import shutil

import pytest
import torch
from streamlit.testing.v1 import AppTest

from helpers import ROOT
from nes.artifacts import load_tensors, save_tensors
from nes.explorer import diversityview, frontier
from nes.explorer.demo import DEMO_DIR
from nes.explorer.runview import RunView
from nes.layout import STAR, RunDir
from nes.method.ledger import ledger
from nes.method.scoring import MemberProbs

pytestmark = pytest.mark.skipif(not (DEMO_DIR / "demo.json").exists(), reason="no bundled demo (assets/demo)")


@pytest.fixture(scope="module")
def view():
    return RunView(DEMO_DIR)


@pytest.fixture(scope="module")
def fr(view):
    return frontier.frontier(view)


@pytest.fixture
def linked_demo(tmp_path):
    """A copy of the demo whose files are links to the bundled ones (a test replaces a file before
    changing it, so the demo itself never changes)."""
    run = tmp_path / "demo"
    shutil.copytree(DEMO_DIR, run, copy_function=os.symlink)
    return run


def test_something_to_draw_on_the_demo(fr):
    assert fr.reason is None, f"the demo has nothing to draw: {fr.reason}"


def test_one_point_per_finished_member(view, fr):
    names = [p["member"] for p in fr.points]
    assert sorted(names) == sorted(view.finished_members()), \
        f"points for {sorted(names)}, finished members {sorted(view.finished_members())}"


def test_distance_is_the_accuracy_chart_distance(view, fr):
    want = {p["member"]: p["distance"] for p in diversityview.member_points(view)}
    for p in fr.points:
        assert p["distance"] == want[p["member"]], \
            f"{p['member']}: distance {p['distance']}, the accuracy-against-diversity chart says {want[p['member']]}"


def test_d_lies_between_zero_and_log_k(fr):
    assert fr.classes > 1, f"{fr.classes} classes"
    for p in fr.points:
        assert 0.0 <= p["d"] <= math.log(fr.classes), f"{p['member']}: D {p['d']} outside [0, log {fr.classes}]"


def test_alpha_star_sits_at_distance_zero_with_no_diversity(fr):
    assert fr.reference == STAR, f"D is measured against {fr.reference}, not {STAR}"
    star, = [p for p in fr.points if p["member"] == STAR]
    assert star["distance"] == 0.0, f"{STAR} at distance {star['distance']}"
    assert star["d"] == 0.0, f"{STAR} has D {star['d']} with itself"


def test_d_is_the_jensen_gap_of_the_pair_on_validation(fr):
    names = [p["member"] for p in fr.points]
    probs = MemberProbs.load(DEMO_DIR, names)
    r = names.index(STAR)
    for i, p in enumerate(fr.points):
        want = ledger(probs.val[[r, i]], probs.val_y)["diversity_nll"]
        assert p["d"] == pytest.approx(want, abs=1e-12), f"{p['member']}: D {p['d']}, the ledger says {want}"


def test_strength_is_validation_nll_not_test(fr):
    names = [p["member"] for p in fr.points]
    val = MemberProbs.load(DEMO_DIR, names).member_metrics("val")
    for p in fr.points:
        assert p["val_nll"] == pytest.approx(val[p["member"]]["nll"]), \
            f"{p['member']}: val NLL {p['val_nll']}, its validation probabilities say {val[p['member']]['nll']}"


def test_band_comes_from_the_demos_deepens_seeds(fr):
    base = RunDir(DEMO_DIR).baseline("deepens", 0)
    assert fr.band is not None, f"no band although the demo has {base.path.name}: {fr.notes}"
    assert list(fr.band.members) == base.finished_members(), \
        f"band of {fr.band.members}, the baseline's finished members {base.finished_members()}"
    assert fr.band.pairs == len(fr.band.members) - 1, f"{fr.band.pairs} pairs of {len(fr.band.members)} seeds"


def test_band_numbers_match_the_seeds(fr):
    base = RunDir(DEMO_DIR).baseline("deepens", 0)
    probs = MemberProbs.load(base.path, list(fr.band.members))
    nll = [m["nll"] for m in probs.member_metrics("val").values()]
    assert min(nll) <= fr.band.nll_mean <= max(nll), f"band mean {fr.band.nll_mean} outside the seeds' {nll}"
    assert fr.band.nll_sd > 0.0, f"seeds' NLL sd {fr.band.nll_sd}"
    assert 0.0 < fr.band.d_mean <= math.log(fr.classes), f"two α* seeds' D {fr.band.d_mean}"


def test_band_is_skipped_when_validated_on_other_images(linked_demo):
    base = RunDir(linked_demo).baseline("deepens", 0)
    for n in base.finished_members():
        labels = base.member(n).labels
        tensors, _ = load_tensors(labels)
        labels.unlink()  # the link, not the demo's file
        save_tensors(labels, {**tensors, "val_y": torch.roll(tensors["val_y"], 1)})
    got = frontier.frontier(RunView(linked_demo))
    assert got.band is None, "a band from seeds validated on other images"
    assert any("other images" in n for n in got.notes), f"the notes do not say why: {got.notes}"
    assert "other images" in frontier.frontier_caption(got), "the caption does not say why the band is missing"


def test_band_is_skipped_without_a_baseline(linked_demo):
    shutil.rmtree(linked_demo / "baselines")
    got = frontier.frontier(RunView(linked_demo))
    assert got.reason is None, f"nothing drawn without a baseline: {got.reason}"
    assert got.band is None, "a band without a DeepEns baseline"
    assert any("no DeepEns baseline" in n for n in got.notes), f"the notes do not say why: {got.notes}"


def test_fewer_than_two_members_say_why(linked_demo):
    for n in RunDir(linked_demo).finished_members()[1:]:
        shutil.rmtree(linked_demo / "members" / n)
    got = frontier.frontier(RunView(linked_demo))
    assert got.reason and "at least 2" in got.reason, f"reason {got.reason!r}"
    assert got.points == (), f"points drawn for one member: {got.points}"


def test_figure_has_two_panels_and_the_bands(fr):
    fig = frontier.frontier_figure(fr)
    assert fig.layout.xaxis2 is not None and fig.layout.xaxis2.anchor == "y2", "no second x axis"
    rects = [s for s in fig.layout.shapes if s.type == "rect"]
    assert {s.yref for s in rects} == {"y", "y2"}, f"band rectangles on {[s.yref for s in rects]}"
    labels = [a.text for a in fig.layout.annotations]
    assert frontier.BAND_LABEL in labels, f"the band is not labelled {frontier.BAND_LABEL!r}: {labels}"


def test_figure_plots_every_member_in_both_panels(fr):
    fig = frontier.frontier_figure(fr)
    for axis in ("x", "x2"):
        shown = sorted(t for tr in fig.data if tr.xaxis == axis for t in tr.text)
        assert shown == sorted(p["member"] for p in fr.points), f"panel {axis} shows {shown}"


def test_hover_names_member_lambda_and_validation_metrics(fr):
    for tr in frontier.frontier_figure(fr).data:
        for word in ("λ", "val NLL", "val accuracy"):
            assert word in tr.hovertemplate, f"trace {tr.name}: no {word!r} in its hover"


def test_caption_names_a_real_member_and_the_validation_split(view, fr):
    text = frontier.frontier_caption(fr)
    best = fr.strongest_diverse()
    assert best is not None and best["member"] in view.finished_members(), f"strongest diverse member {best}"
    assert f"**{best['member']}**" in text, f"the caption does not name {best['member']}: {text!r}"
    assert "validation" in text and "not the test set" in text, f"the caption does not say validation: {text!r}"


def test_ensemble_page_shows_the_frontier(app_home):
    at = AppTest.from_file(str(ROOT / "explorer_app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/ensemble.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Strength against diversity" in [s.value for s in at.subheader], \
        f"no subheader in {[s.value for s in at.subheader]}"
    titles = [json.dumps(json.loads(c.proto.spec)["layout"].get("title", ""), ensure_ascii=False).replace("<br>", " ")
              for c in at.get("plotly_chart")]
    assert any("strength and diversity against distance" in t for t in titles), f"no frontier chart in {titles}"
    assert any("α* seeds" in c.value for c in at.caption), "no caption about α*'s seeds"
    assert not at.error, [e.value for e in at.error]
