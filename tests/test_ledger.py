"""The gain ledger: exact identities (ensemble = member strength − diversity, for NLL and Brier),
terms that agree with the metrics computed elsewhere, and intervals on differences that cover."""
from __future__ import annotations

import pytest
import torch

from nes.method.ensemble import ensemble_metrics, member_metrics
from nes.method.ledger import TERMS, ledger, ledger_difference, per_image


def _dirichlet(m: int, n: int, k: int, seed: int, conc: float = 0.5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch._standard_gamma(torch.full((m, n, k), conc, dtype=torch.float64), generator=g)
    return x / x.sum(-1, keepdim=True)


def _labels(n: int, k: int, seed: int) -> torch.Tensor:
    return torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("m", [1, 2, 5])
def test_both_identities_hold_on_every_image(m):
    mp, y = _dirichlet(m, 400, 10, m), _labels(400, 10, m)
    t = per_image(mp, y)
    assert set(t) == set(TERMS), f"terms {sorted(t)} are not TERMS"
    for score in ("nll", "brier"):
        gap = (t[score] - (t[f"mean_member_{score}"] - t[f"diversity_{score}"])).abs().max()
        assert gap < 1e-6, f"{score} = mean member {score} − diversity fails by {gap:.2e}"
        assert bool((t[f"diversity_{score}"] >= -1e-12).all()), f"diversity_{score} is negative on some image"


def test_the_terms_are_the_metrics_computed_elsewhere():
    mp, y = _dirichlet(4, 300, 7, 11), _labels(300, 7, 11)
    led, ens = ledger(mp, y), ensemble_metrics(mp, y)
    members = [member_metrics(p, y) for p in mp]
    for key in ("accuracy", "nll", "brier"):
        assert led[key] == pytest.approx(ens[key], abs=1e-9), f"ledger {key} is not the ensemble's {key}"
        mean = sum(m[key] for m in members) / len(members)
        assert led[f"mean_member_{key}"] == pytest.approx(mean, abs=1e-9), f"mean_member_{key} is not the members' mean"


def test_identical_members_have_no_diversity():
    p = _dirichlet(1, 200, 5, 3).expand(4, -1, -1)
    led = ledger(p, _labels(200, 5, 3))
    assert led["diversity_nll"] == pytest.approx(0.0, abs=1e-12), "identical members show NLL diversity"
    assert led["diversity_brier"] == pytest.approx(0.0, abs=1e-12), "identical members show Brier diversity"


def test_difference_intervals_cover_the_population_difference():
    """Two ensembles on a population of 20 000 images; on 20 random test sets of 1000 the 95 %
    intervals of every term must cover the population's difference in most draws."""
    big_a, big_b, y = _dirichlet(3, 20000, 5, 1, 0.6), _dirichlet(3, 20000, 5, 2, 0.3), _labels(20000, 5, 7)
    truth = {k: (100.0 if k.endswith("accuracy") else 1.0) * (ledger(big_a, y)[k] - ledger(big_b, y)[k]) for k in TERMS}
    g = torch.Generator().manual_seed(0)
    covered = {k: 0 for k in TERMS}
    for _ in range(20):
        idx = torch.randperm(20000, generator=g)[:1000]
        for k, d in ledger_difference(big_a[:, idx], big_b[:, idx], y[idx]).items():
            covered[k] += d.lo <= truth[k] <= d.hi
    for k, n in covered.items():
        assert n >= 15, f"{k}: the interval covered the population difference in {n} of 20 draws"


def test_a_difference_splits_into_strength_and_diversity():
    a, b, y = _dirichlet(3, 500, 6, 4), _dirichlet(5, 500, 6, 5), _labels(500, 6, 4)
    d = ledger_difference(a, b, y)
    for score in ("nll", "brier"):
        split = d[f"mean_member_{score}"].value - d[f"diversity_{score}"].value
        assert d[score].value == pytest.approx(split, abs=1e-9), f"the {score} difference is not strength − diversity"
