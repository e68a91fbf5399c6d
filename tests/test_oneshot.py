"""A click on the architecture map (issue 26, item 3): the path point it names, the architecture's
one-shot accuracy from the search's shared weights, and how far that estimate ranks the run's
retrained members right. Real parts: the bundled demo's search, supernet weights and members."""
import json
import math

import pytest
import torch

from nes.explorer.archmap import build_map
from nes.explorer.demo import DEMO_DIR
from nes.explorer.mapclick import estimate_text, picked, trust
from nes.explorer.runview import RunView
from nes.method.oneshot import discrete_weights, one_shot_accuracy, rank_agreement

pytestmark = pytest.mark.skipif(not (DEMO_DIR / "demo.json").exists(), reason="no bundled demo (assets/demo)")


@pytest.fixture(scope="module")
def demo():
    from nes.explorer.demo import dataset_available
    if not dataset_available("fashion-mnist"):
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    amap = build_map(DEMO_DIR)
    return RunView(DEMO_DIR), amap, trust(DEMO_DIR, amap)


def test_discrete_weights_are_exactly_the_genotypes_choices(demo):
    view, _, _ = demo
    for ct, (op_w, in_w) in discrete_weights(view.layout, view.star).items():
        kept = [i for i in range(len(in_w)) if in_w[i] == 1]
        assert len(kept) == view.star.num_kept_edges() // len(view.layout.cell_types), f"{ct}: kept inputs {kept}"
        assert set(op_w.flatten().tolist()) <= {0.0, 1.0}, f"{ct}: op weights are not one-hot"
        assert torch.equal(op_w.sum(1), in_w), f"{ct}: one op per kept edge, none elsewhere"


def test_one_shot_accuracy_is_a_deterministic_fraction(demo):
    view, _, t = demo
    a, b = one_shot_accuracy(t.setup, view.star), one_shot_accuracy(t.setup, view.star)
    assert 0.0 <= a <= 1.0, f"α*'s one-shot accuracy {a} is not a fraction"
    assert a == b, f"the same architecture scored {a} then {b}"
    assert a > 0.2, f"α* with its own search's weights scores {a}, no better than chance on 10 classes"


def test_trust_scores_every_finished_member_and_states_a_rank_correlation(demo):
    view, _, t = demo
    names = [m[0] for m in t.members]
    assert names == view.finished_members(), f"one-shot scored {names}, finished {view.finished_members()}"
    assert t.rho is not None and -1.0 <= t.rho <= 1.0, f"Spearman ρ {t.rho} over {len(names)} members"


def test_a_click_on_a_path_point_names_that_architecture(demo):
    _, amap, _ = demo
    reg, ix = next(iter(amap.paths.items()))
    far = ix[-1]
    p = picked(amap, [{"curve_number": 0, "point_index": len(ix) - 1, "customdata": far}])
    assert p is amap.points[far], f"a click on {reg}'s far end gave {p}"
    assert picked(amap, [{"customdata": [far]}]) is amap.points[far], "customdata as a list was not read"


@pytest.mark.parametrize("points", [[], None, [{"x": 1.0}], [{"customdata": 10 ** 6}], [{"customdata": "a"}]])
def test_no_selection_or_a_stale_one_names_nothing(demo, points):
    _, amap, _ = demo
    assert picked(amap, points) is None, f"selection {points} named an architecture"


def test_a_click_on_a_member_is_not_a_path_architecture(demo):
    _, amap, _ = demo
    members = [i for i, p in enumerate(amap.points) if p.kind == "member"]
    assert members and picked(amap, [{"customdata": members[0]}]) is None, "a member point was taken as a path point"


def test_the_estimate_sentence_states_the_estimate_and_its_trust(demo):
    _, amap, t = demo
    point = amap.points[next(iter(amap.paths.values()))[-1]]
    text = estimate_text(point, 0.5, t)
    assert "50.0%" in text, f"the estimate is missing: {text}"
    assert f"ρ = {t.rho:.2f}" in text, f"the rank correlation is missing: {text}"


def test_rank_agreement_is_one_for_the_same_order_and_none_below_three():
    assert math.isclose(rank_agreement([0.1, 0.2, 0.3], [0.7, 0.8, 0.95]), 1.0), "same order should give ρ = 1"
    assert math.isclose(rank_agreement([0.1, 0.2, 0.3], [0.9, 0.8, 0.7]), -1.0), "reversed order should give ρ = −1"
    assert rank_agreement([0.1, 0.2], [0.5, 0.6]) is None, "two points cannot give a rank correlation"
    with pytest.raises(ValueError):
        rank_agreement([0.1, 0.2, 0.3], [0.5, 0.6])


def _copy_search(tmp_path):
    """A run folder holding only a copy of the demo's search (all `trust` reads besides the map)."""
    import shutil
    run = tmp_path / "run"
    shutil.copytree(DEMO_DIR / "search", run / "search")
    return run


def test_trust_keeps_its_estimates_and_reads_them_back(demo, tmp_path):
    from nes.artifacts import read_json, write_json
    from nes.explorer.mapclick import TRUST_FILE

    _, amap, t = demo
    run = _copy_search(tmp_path)
    first = trust(run, amap)
    assert [m[1] for m in first.members] == [m[1] for m in t.members], "a copy of the search scored differently"
    saved = read_json(run / TRUST_FILE, dict)
    assert saved["estimates"] == [m[1] for m in first.members], "the saved estimates are not the computed ones"
    planted = [round(0.1 + 0.1 * i, 3) for i in range(len(saved["estimates"]))]
    write_json(run / TRUST_FILE, {**saved, "estimates": planted})
    assert [m[1] for m in trust(run, amap).members] == planted, "a matching saved file was not read back"


@pytest.mark.parametrize("damage", ["key", "nan", "garbage"])
def test_a_stale_or_damaged_trust_file_is_recomputed_and_replaced(demo, tmp_path, damage):
    from nes.artifacts import read_json
    from nes.explorer.mapclick import TRUST_FILE

    _, amap, t = demo
    run = _copy_search(tmp_path)
    trust(run, amap)
    path = run / TRUST_FILE
    saved = read_json(path, dict)
    if damage == "key":
        path.write_text(json.dumps({**saved, "key": "another supernet", "estimates": [0.5] * len(saved["estimates"])}))
    elif damage == "nan":
        path.write_text(json.dumps({**saved, "estimates": [float("nan")] * len(saved["estimates"])}))
    else:
        path.write_text("{not json")
    got = [m[1] for m in trust(run, amap).members]
    assert got == [m[1] for m in t.members], f"a {damage} file gave {got}, not the recomputed estimates"
    assert read_json(path, dict)["key"] == saved["key"], f"the {damage} file was not replaced"


def test_the_bundled_demo_ships_its_current_estimates(demo):
    """The demo's first click reads its members' estimates instead of scoring them."""
    from nes.artifacts import read_json
    from nes.explorer.mapclick import TRUST_FILE, _trust_key

    _, amap, t = demo
    members = [p for p in amap.of_kind("member") if p.accuracy is not None]
    saved = read_json(DEMO_DIR / TRUST_FILE, dict)
    assert saved["key"] == _trust_key(DEMO_DIR, t.setup, members), \
        f"assets/demo/{TRUST_FILE} is stale: delete it and click the map once (or run mapclick.trust) to renew it"
