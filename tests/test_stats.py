"""Paired bootstrap intervals: coverage of a known difference, 0 for identical predictors, and the
live ensemble that keeps unfinished members out of its headline."""
from __future__ import annotations

import json

import pytest
import torch

from nes.method.stats import Difference, best_member_index, bootstrap_mean, paired_difference, vs_best_member


def predictor(y: torch.Tensor, correct: torch.Tensor, k: int = 10, conf: float = 0.8) -> torch.Tensor:
    """[N, K] probabilities whose top-1 is the label where `correct`, another class elsewhere."""
    n = y.shape[0]
    top = torch.where(correct, y, (y + 1) % k)
    p = torch.full((n, k), (1 - conf) / (k - 1), dtype=torch.float64)
    p[torch.arange(n), top] = conf
    return p


def test_identical_predictors_give_zero_inside_the_interval():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (500,), generator=g)
    p = torch.softmax(torch.randn(500, 10, generator=g), 1)
    diff = paired_difference(p, p.clone(), y)
    for d in diff.values():
        assert d.value == 0.0 and d.lo == 0.0 and d.hi == 0.0 and d.within_noise
    assert "within noise" in diff["accuracy"].text()


def test_intervals_cover_a_known_difference():
    """A is right on a fixed 75 % of the images' population, B on 70 %: over 40 independent test
    sets of 1000 images the 95 % interval covers the true +5 points about 95 % of the time (≥ 85 %
    here), is never degenerate, and is beyond noise for most sets."""
    covered, beyond = 0, 0
    for trial in range(40):
        g = torch.Generator().manual_seed(100 + trial)
        y = torch.randint(0, 10, (1000,), generator=g)
        u = torch.rand(1000, generator=g)
        a, b = predictor(y, u < 0.75), predictor(y, u < 0.70)  # paired: B's right images are A's too
        d = paired_difference(a, b, y, resamples=500, seed=trial)["accuracy"]
        assert d.lo < d.value < d.hi
        covered += d.lo <= 5.0 <= d.hi
        beyond += not d.within_noise
    assert covered >= 34 and beyond >= 36


def test_bootstrap_mean_checks_its_input_and_is_repeatable():
    d = torch.randn(300, generator=torch.Generator().manual_seed(1))
    assert bootstrap_mean(d, seed=3) == bootstrap_mean(d, seed=3)
    m, lo, hi = bootstrap_mean(d)
    assert lo < m < hi
    with pytest.raises(ValueError):
        bootstrap_mean(torch.zeros(0))
    with pytest.raises(ValueError):
        bootstrap_mean(d, level=1.5)
    with pytest.raises(ValueError):
        paired_difference(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))


def test_difference_round_trips_through_json():
    g = torch.Generator().manual_seed(2)
    y = torch.randint(0, 10, (200,), generator=g)
    d = paired_difference(torch.softmax(torch.randn(200, 10, generator=g), 1),
                          torch.softmax(torch.randn(200, 10, generator=g), 1), y)["nll"]
    back = Difference.from_dict(json.loads(json.dumps(d.to_dict())))
    assert back == d and back.within_noise == d.to_dict()["within_noise"]


def test_best_member_is_chosen_on_validation_not_test():
    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, 10, (400,), generator=g)
    good, bad = predictor(y, torch.rand(400, generator=g) < 0.9), predictor(y, torch.rand(400, generator=g) < 0.5)
    val = torch.stack([bad, good])
    assert best_member_index(val, y) == 1
    # on the test split member 0 is the better one: the comparison still uses member 1
    test = torch.stack([good, bad])
    vs = vs_best_member(val, y, test, y, ["m0", "m1"])
    assert vs["best_member"] == "m1"
    assert vs["accuracy"]["value"] == pytest.approx(100 * (float((test.mean(0).argmax(1) == y).double().mean())
                                                           - float((bad.argmax(1) == y).double().mean())))


def test_live_ensemble_keeps_unfinished_members_out_of_the_headline(tmp_path):
    from helpers import digits_members
    from nes.layout import RunDir
    from nes.method.ensemble import calibrated_metrics, ensemble_metrics
    from nes.method.members import final_probs, live_ensemble

    run = digits_members(tmp_path / "run", ["a", "b", "c"], 7)
    # member c is still in its first epoch: one saved epoch, no final weights yet
    c = RunDir(run).member("c")
    c.weights.unlink()
    for e, f in c.probs_files()[1:]:
        f.unlink()
    ens = live_ensemble(run, ["a", "b", "c"])
    assert sorted(ens.finished) == ["a", "b"] and [n for n, _, _ in ens.training] == ["c"]
    assert ens.training[0][1] == 1
    done = final_probs(run, ens.finished)
    assert ens.metrics == ensemble_metrics(done["test"], done["test_y"])
    assert [n for n, _ in ens.joins] == ens.finished and ens.joins[0][1]["size"] == 1.0
    assert ens.vs_best["best_member"] in ("a", "b") and ens.test_images == done["test_y"].shape[0]
    # temperature scaling of the finished members, fitted on their validation split
    assert ens.calibrated == calibrated_metrics(done["val"], done["val_y"], done["test"], done["test_y"])
    assert ens.calibrated["accuracy"] == ens.metrics["accuracy"] and ens.calibrated["temperature"] > 0
    # nothing finished yet: no headline at all
    only_c = live_ensemble(run, ["c"])
    assert only_c.metrics is None and only_c.finished == [] and only_c.vs_best is None
