"""The gain ledger: an ensemble's score split exactly into member strength and diversity.

Over the test images, with the members' probabilities p_i [M, N, K], their mean p̄ and the labels y
(Wood et al., "A Unified Theory of Diversity in Ensemble Learning", arXiv 2301.03962):

    NLL:    −log p̄(y)   = mean_i(−log p_i(y))  −  D,  D = log p̄(y) − mean_i log p_i(y) ≥ 0 (Jensen gap)
    Brier:  ‖p̄ − e_y‖²  = mean_i ‖p_i − e_y‖²  −  mean_i ‖p_i − p̄‖²   (Krogh & Vedelsby's ambiguity)

Both hold image by image, so they hold for the means over a test set and for the difference of two
ensembles scored on the same images, term by term: a gain is member strength plus diversity, and
each term of a difference gets its paired bootstrap interval. Accuracy has no such identity; the
ledger shows the ensemble's, the mean member's and their difference. NLL clamps p_y at 1e-12 like
`ensemble.nll`, on both sides, so the identity stays exact.
"""
from __future__ import annotations

import torch

from .stats import Difference, bootstrap_mean

TERMS = ("accuracy", "mean_member_accuracy", "nll", "mean_member_nll", "diversity_nll",
         "brier", "mean_member_brier", "diversity_brier")
"""The ledger's keys: nll = mean_member_nll − diversity_nll, brier = mean_member_brier − diversity_brier."""

_EPS = 1e-12


def per_image(member_probs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every ledger term per test image, float64 [N] (accuracies as 0/1)."""
    mp = member_probs.detach().to(torch.float64)  # [M, N, K]
    y = torch.as_tensor(labels).to(device=mp.device, dtype=torch.int64)
    if mp.dim() != 3 or y.shape != (mp.shape[1],):
        raise ValueError(f"member_probs must be [M, N, K] and labels [N], got {tuple(mp.shape)} and {tuple(y.shape)}")
    mean = mp.mean(0)  # [N, K]
    py = mp.gather(2, y.expand(mp.shape[0], -1)[..., None]).squeeze(2).clamp_min(_EPS)  # [M, N]
    log_mean_y = mean.gather(1, y[:, None]).squeeze(1).clamp_min(_EPS).log()  # [N]
    onehot = torch.nn.functional.one_hot(y, mp.shape[2]).to(torch.float64)  # [N, K]
    return {
        "accuracy": (mean.argmax(1) == y).to(torch.float64),
        "mean_member_accuracy": (mp.argmax(2) == y).to(torch.float64).mean(0),
        "nll": -log_mean_y,
        "mean_member_nll": -py.log().mean(0),
        "diversity_nll": log_mean_y - py.log().mean(0),
        "brier": ((mean - onehot) ** 2).sum(1),
        "mean_member_brier": ((mp - onehot) ** 2).sum(2).mean(0),
        "diversity_brier": ((mp - mean) ** 2).sum(2).mean(0),
    }


def ledger(member_probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """The ensemble's ledger on one test set: the mean over images of every term in `TERMS`."""
    return {k: float(v.mean()) for k, v in per_image(member_probs, labels).items()}


def ledger_difference(a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor, groups: int = 1) -> dict[str, Difference]:
    """A − B of every ledger term for two ensembles (a [Ma, N, K], b [Mb, N, K]) on the same images,
    each with its paired bootstrap interval (accuracies in points, the rest in their own units;
    `groups`: corrupted copies of the same source images, drawn together, `stats.bootstrap_mean`)."""
    pa, pb = per_image(a, labels), per_image(b, labels)
    out = {}
    for k in TERMS:
        scale = 100.0 if k.endswith("accuracy") else 1.0
        value, lo, hi = bootstrap_mean(scale * (pa[k] - pb[k]), groups=groups)
        out[k] = Difference(k, value, lo, hi, int(pa[k].shape[0]))
    return out
