"""Paired bootstrap intervals: coverage of a known difference, 0 for identical predictors, JSON
round-trips (the ensemble's use of them is tested in test_scoring.py)."""
from __future__ import annotations

import json

import pytest
import torch

from helpers import predictor
from nes.method.stats import Difference, bootstrap_mean, paired_difference


def test_identical_predictors_give_zero_inside_the_interval():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (500,), generator=g)
    p = torch.softmax(torch.randn(500, 10, generator=g), 1)
    diff = paired_difference(p, p.clone(), y)
    for d in diff.values():
        assert d.value == 0.0, f"{d.metric}: identical predictors differ by {d.value}"
        assert d.lo == 0.0, f"{d.metric}: interval low end {d.lo}, expected 0"
        assert d.hi == 0.0, f"{d.metric}: interval high end {d.hi}, expected 0"
        assert d.within_noise, f"{d.metric}: a zero difference is not within noise"
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
    assert covered >= 34, f"the interval covered the true difference in {covered} of 40 test sets, expected at least 34"
    assert beyond >= 36, f"the difference was beyond noise in {beyond} of 40 test sets, expected at least 36"


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
    assert back == d, f"JSON round trip changed the difference: {back} vs {d}"
    assert back.within_noise == d.to_dict()["within_noise"], "within_noise read back differs from the one written"


def test_copies_of_the_same_images_are_drawn_together():
    d = torch.randn(300, generator=torch.Generator().manual_seed(3))
    one = bootstrap_mean(d)
    grouped = bootstrap_mean(d.repeat(8), groups=8)
    naive = bootstrap_mean(d.repeat(8))
    assert grouped == pytest.approx(one, abs=1e-12), f"8 identical copies drawn together gave {grouped}, one copy {one}"
    assert naive[2] - naive[1] < one[2] - one[1], "8 copies drawn one by one should look narrower: that is the bias"
    assert abs(grouped[0] - naive[0]) < 1e-12, "grouping changed the mean"
    with pytest.raises(ValueError, match="equal groups"):
        bootstrap_mean(d, groups=7)
