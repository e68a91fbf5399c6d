"""Invariant tests for nes.method.ensemble (no hard-coded results of random data)."""
from __future__ import annotations

import math

import pytest
import torch

from nes.method.ensemble import (
    accuracy,
    brier,
    calibrated_metrics,
    disagreement,
    ece,
    ensemble_metrics,
    ensemble_probs,
    fit_temperature,
    greedy_selection,
    member_metrics,
    nll,
    oracle_nll,
    predictive_js,
    temperature_scale,
)

LN2 = math.log(2.0)


def _dirichlet(m: int, n: int, k: int, seed: int = 0, conc: float = 0.5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch._standard_gamma(torch.full((m, n, k), conc, dtype=torch.float64), generator=g)
    return (x / x.sum(-1, keepdim=True)).to(torch.float32)  # [M, N, K]


def _labels(n: int, k: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- single-prediction metrics
def test_one_hot_correct_is_perfect():
    y = torch.tensor([0, 2, 1, 3, 3])
    p = torch.nn.functional.one_hot(y, 4).float()
    assert accuracy(p, y) == 1.0
    assert nll(p, y) == pytest.approx(0.0, abs=1e-9)
    assert brier(p, y) == pytest.approx(0.0, abs=1e-12)
    assert ece(p, y) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("k", [2, 5, 10])
def test_uniform_probs(k):
    y = _labels(50, k)
    p = torch.full((50, k), 1.0 / k)
    assert nll(p, y) == pytest.approx(math.log(k), rel=1e-6)
    assert brier(p, y) == pytest.approx(1.0 - 1.0 / k, rel=1e-6)


def test_ece_perfectly_calibrated_is_zero():
    # 10 samples with confidence 0.8 (same bin), 8 of them correct
    p = torch.tensor([[0.8, 0.2]] * 10, dtype=torch.float64)
    y = torch.tensor([0] * 8 + [1] * 2)
    assert ece(p, y) == pytest.approx(0.0, abs=1e-9)
    # two bins, each calibrated: conf 0.6 with 3/5 correct, conf 1.0 all correct
    p2 = torch.tensor([[0.6, 0.4]] * 5 + [[0.0, 1.0]] * 4, dtype=torch.float64)
    y2 = torch.tensor([0, 0, 0, 1, 1] + [1] * 4)
    assert ece(p2, y2) == pytest.approx(0.0, abs=1e-9)


def test_ece_overconfident_positive_and_bounded():
    p = torch.tensor([[0.99, 0.01]] * 10)
    y = torch.tensor([0] * 5 + [1] * 5)  # 50 % accuracy at 99 % confidence
    assert ece(p, y) == pytest.approx(0.49, abs=1e-6)
    mp = _dirichlet(1, 300, 7, seed=3)[0]
    for bins in (1, 5, 10, 20):
        assert 0.0 <= ece(mp, _labels(300, 7), bins=bins) <= 1.0


def test_half_precision_inputs():
    p = _dirichlet(1, 100, 5)[0]
    y = _labels(100, 5)
    full, half = member_metrics(p, y), member_metrics(p.half(), y)
    assert set(full) == {"accuracy", "nll", "ece", "brier"}
    for key in full:
        assert half[key] == pytest.approx(full[key], abs=5e-3)
    assert ensemble_probs(_dirichlet(3, 4, 5).half()).dtype == torch.float32


# ----------------------------------------------------------------------------- ensemble metrics
def test_ensemble_probs_is_mean():
    mp = _dirichlet(4, 20, 6)
    ens = ensemble_probs(mp)
    assert ens.shape == (20, 6)
    assert torch.allclose(ens, mp.mean(0), atol=1e-6)
    assert torch.allclose(ens.sum(1), torch.ones(20), atol=1e-5)


def test_identical_members_equal_single_member():
    p = _dirichlet(1, 80, 5)[0]
    y = _labels(80, 5)
    mp = p.expand(3, -1, -1).clone()
    ens, single = ensemble_metrics(mp, y), member_metrics(p, y)
    for key in single:
        assert ens[key] == pytest.approx(single[key], abs=1e-9)
    assert ens["member_accuracy"] == pytest.approx(single["accuracy"])
    assert ens["oracle_nll"] == pytest.approx(single["nll"], abs=1e-9)
    assert ens["disagreement"] == 0.0
    assert ens["predictive_js"] == pytest.approx(0.0, abs=1e-9)
    assert ens["size"] == 3.0
    assert torch.allclose(predictive_js(mp), torch.zeros(3, 3, dtype=torch.float64), atol=1e-9)


def test_metric_keys_and_single_member():
    mp = _dirichlet(1, 30, 4)
    out = ensemble_metrics(mp, _labels(30, 4))
    assert set(out) == {"accuracy", "nll", "ece", "brier", "oracle_nll", "member_accuracy",
                        "disagreement", "predictive_js", "size"}
    assert out["disagreement"] == 0.0, f"one member disagrees with itself: {out['disagreement']}"
    assert out["predictive_js"] == 0.0, f"one member's predictive JS is {out['predictive_js']}"
    assert out["size"] == 1.0, f"one member's ensemble size is {out['size']}"
    assert all(isinstance(v, float) for v in out.values())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_oracle_and_jensen_bounds(seed):
    mp = _dirichlet(5, 200, 10, seed=seed)
    y = _labels(200, 10, seed=seed + 10)
    member_nlls = [nll(q, y) for q in mp]
    ens_nll = nll(ensemble_probs(mp), y)
    orc = oracle_nll(mp, y)
    assert all(orc <= m + 1e-9 for m in member_nlls)
    assert orc <= ens_nll + 1e-9
    assert ens_nll <= sum(member_nlls) / len(member_nlls) + 1e-9  # Jensen
    assert ensemble_metrics(mp, y)["member_accuracy"] == pytest.approx(
        sum(accuracy(q, y) for q in mp) / 5)


def test_predictive_js_properties():
    mp = _dirichlet(4, 100, 6, seed=5)
    js = predictive_js(mp)
    assert js.shape == (4, 4)
    assert torch.allclose(js, js.T)
    assert torch.all(js.diagonal() == 0)
    assert torch.all(js >= 0), f"negative JS: {float(js.min())}"
    assert torch.all(js <= LN2 + 1e-12), f"JS above ln 2: {float(js.max())}"
    assert torch.all(js[~torch.eye(4, dtype=torch.bool)] > 0)
    off = js[~torch.eye(4, dtype=torch.bool)].mean().item()
    assert ensemble_metrics(mp, _labels(100, 6))["predictive_js"] == pytest.approx(off)


def test_predictive_js_disjoint_one_hot_is_ln2():
    a = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0]), 3).float()
    b = torch.nn.functional.one_hot(torch.tensor([1, 2, 0, 2]), 3).float()
    js = predictive_js(torch.stack([a, b]))
    assert js[0, 1].item() == pytest.approx(LN2, abs=1e-9)
    assert js[1, 0].item() == pytest.approx(LN2, abs=1e-9)


def test_disagreement():
    a = torch.nn.functional.one_hot(torch.tensor([0, 1, 0, 1]), 2).float()
    assert disagreement(torch.stack([a, 1 - a])) == 1.0
    assert disagreement(torch.stack([a, a])) == 0.0
    assert disagreement(a[None]) == 0.0
    d = disagreement(_dirichlet(5, 100, 4), _labels(100, 4))
    assert 0.0 <= d <= 1.0


# ----------------------------------------------------------------------------- greedy selection
@pytest.mark.parametrize("metric", ["nll", "accuracy"])
def test_greedy_basic_invariants(metric):
    mp = _dirichlet(6, 150, 5, seed=7)
    y = _labels(150, 5, seed=8)
    scores = [nll(q, y) if metric == "nll" else -accuracy(q, y) for q in mp]
    best = min(range(6), key=lambda i: (scores[i], i))
    for size in (1, 3, 6, 10):
        sel = greedy_selection(mp, y, size, metric=metric)
        assert sel[0] == best
        assert len(sel) == min(size, 6)
        assert len(set(sel)) == len(sel)
        assert all(0 <= i < 6 for i in sel)


def test_greedy_tie_breaks_by_lower_index():
    p = _dirichlet(1, 40, 3)[0]
    mp = p.expand(4, -1, -1).clone()
    assert greedy_selection(mp, _labels(40, 3), 4) == [0, 1, 2, 3]


def test_greedy_prefers_complementary_member():
    # Member 0 (and its duplicate 1) is confident and right on the first half, wrong on the second;
    # member 2 is the reverse but slightly worse overall. Adding 2 lowers NLL, adding 1 does not.
    n = 20
    y = torch.zeros(n, dtype=torch.long)
    good, bad = torch.tensor([0.9, 0.1]), torch.tensor([0.2, 0.8])
    a = torch.stack([good if i < n // 2 else bad for i in range(n)])  # [N, 2]
    c = torch.stack([torch.tensor([0.15, 0.85]) if i < n // 2 else torch.tensor([0.85, 0.15])
                     for i in range(n)])
    mp = torch.stack([a, a.clone(), c])  # [3, N, 2]
    assert nll(a, y) < nll(c, y)
    assert nll(ensemble_probs(mp[[0, 2]]), y) < nll(a, y)
    assert greedy_selection(mp, y, 2) == [0, 2]
    assert greedy_selection(mp, y, 5) == [0, 2, 1]


@pytest.mark.parametrize("size,metric", [(0, "nll"), (-1, "nll"), (2, "ece"), (2, "NLL")])
def test_greedy_bad_args(size, metric):
    with pytest.raises(ValueError):
        greedy_selection(_dirichlet(3, 10, 4), _labels(10, 4), size, metric=metric)


# ----------------------------------------------------------------------------- validation
def test_bad_shapes_raise():
    mp = _dirichlet(3, 10, 4)
    y = _labels(10, 4)
    with pytest.raises(ValueError, match="3-D"):
        ensemble_probs(mp[0])
    with pytest.raises(ValueError, match="3-D"):
        ensemble_metrics(mp[0], y)
    with pytest.raises(ValueError, match="2-D"):
        accuracy(mp, y)
    with pytest.raises(ValueError, match="shape"):
        nll(mp[0], y[:9])
    with pytest.raises(ValueError, match="shape"):
        oracle_nll(mp, y[:, None])
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        brier(mp[0], torch.full((10,), 4))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        ece(mp[0], torch.full((10,), -1))
    with pytest.raises(ValueError, match="integer"):
        member_metrics(mp[0], y.float())
    with pytest.raises(ValueError):
        greedy_selection(mp, y[:5], 2)
    with pytest.raises(ValueError):
        disagreement(mp, y[:5])
    with pytest.raises(ValueError, match="3-D"):
        predictive_js(mp[0])


# ----------------------------------------------------------------------------- temperature scaling
def _calibrated_task(n: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits z and labels drawn from softmax(z): softmax(z) is calibrated by construction."""
    g = torch.Generator().manual_seed(seed)
    z = 2.0 * torch.randn(n, k, generator=g, dtype=torch.float64)
    y = torch.multinomial(torch.softmax(z, -1), 1, generator=g).squeeze(1)
    return z, y


@pytest.mark.parametrize("k_sharp", [2.0, 0.5])  # overconfident (T ≈ 2) and underconfident (T ≈ 0.5)
def test_fit_temperature_recovers_a_known_miscalibration(k_sharp):
    z, y = _calibrated_task(6000, 10, seed=3)
    p = torch.softmax(k_sharp * z, -1)  # = temperature_scale(calibrated, 1 / k_sharp)
    t = fit_temperature(p[:3000], y[:3000])  # fitted on one half ("validation") ...
    assert 0.8 * k_sharp < t < 1.25 * k_sharp
    fixed = temperature_scale(p[3000:], t)  # ... applied to the other ("test")
    assert torch.equal(fixed.argmax(1), p[3000:].argmax(1))  # accuracy unchanged
    assert ece(fixed, y[3000:]) < ece(p[3000:], y[3000:]), \
        f"sharpness {k_sharp}: temperature {t} did not lower the test ECE"
    assert nll(fixed, y[3000:]) < nll(p[3000:], y[3000:]), \
        f"sharpness {k_sharp}: temperature {t} did not lower the test NLL"
    assert torch.allclose(temperature_scale(p, 1.0), p.double(), atol=1e-9)
    assert torch.allclose(fixed.sum(1), torch.ones(3000, dtype=fixed.dtype))


def test_calibrated_metrics_fit_on_validation_only():
    z, y = _calibrated_task(4000, 5, seed=4)
    members = torch.stack([torch.softmax(0.4 * (z + 0.3 * torch.randn_like(z)), -1) for _ in range(3)])  # underconfident
    val, test = members[:, :2000], members[:, 2000:]
    out = calibrated_metrics(val, y[:2000], test, y[2000:])
    assert out["temperature"] == pytest.approx(fit_temperature(val.mean(0), y[:2000]))
    assert out["temperature"] < 1.0  # underconfident: sharpened
    assert out["accuracy"] == pytest.approx(accuracy(test.mean(0), y[2000:]))
    assert out["ece"] < out["ece_before"] == pytest.approx(ece(test.mean(0), y[2000:]))
    # the test split's labels play no part in T
    shuffled = calibrated_metrics(val, y[:2000], test, y[2000:].flip(0))
    assert shuffled["temperature"] == out["temperature"]
