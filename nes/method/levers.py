"""Levers on the strength-for-diversity trade (issue 27), each scored with the gain ledger.

An EdgeNES ensemble can lose to DeepEns (α*'s own seeds) although its members disagree more,
because its members are weaker: with the ledger's NLL identity (`ledger`), ensemble NLL = mean
member NLL − D. A lever changes which members are averaged or how, and its row says how much of
its NLL difference to the reference ensemble is member strength and how much diversity, each
with its paired bootstrap interval over the same test images. The levers here need no training:

- `select`: NES forward selection (Zaidi et al. 2021) of M members on **validation** NLL;
- `union`: a hybrid pool, α*'s seeds and EdgeNES members together, then `select`;
- `calibrate`: one temperature per member fitted on **validation**, applied before averaging.

Nothing is chosen on the test set: selection and temperatures see only the validation split, and
the test split is scored once per row.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..artifacts import ArtifactError
from .ensemble import fit_temperature, greedy_selection, temperature_scale
from .ledger import ledger, ledger_difference
from .scoring import MemberProbs


def _needs_val(p: MemberProbs, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if p.val is None or p.val_y is None:
        raise ArtifactError(f"{what} needs the members' validation probabilities on the same images; "
                            f"members {', '.join(p.names)} have none in common")
    return p.val, p.val_y


def select(p: MemberProbs, size: int) -> MemberProbs:
    """The `size` members NES forward selection picks by validation NLL, in the order picked."""
    val, val_y = _needs_val(p, "forward selection")
    return p.subset([p.names[i] for i in greedy_selection(val, val_y, size, "nll")])


def union(*pools: tuple[str, MemberProbs]) -> MemberProbs:
    """One pool from several (prefix, probabilities) on the same test and validation images; each
    member named `prefix/name`. A member identical to one already in the pool (the same network
    trained twice: a pipeline's α* member is DeepEns's seed 0) is left out, so forward selection
    cannot weight it twice. ArtifactError when the images differ."""
    first = pools[0][1]
    for prefix, p in pools[1:]:
        if not torch.equal(p.test_y, first.test_y):
            raise ArtifactError(f"pool {prefix!r} was tested on other images than {pools[0][0]!r}")
        if p.val_y is None or first.val_y is None or not torch.equal(p.val_y, first.val_y):
            raise ArtifactError(f"pool {prefix!r} was validated on other images than {pools[0][0]!r}")
    kept: list[tuple[str, int, torch.Tensor, torch.Tensor]] = []  # (name, epoch, test [N, K], val [Nv, K])
    for prefix, p in pools:
        for i, n in enumerate(p.names):
            if not any(torch.equal(p.test[i], t) and torch.equal(p.val[i], v) for _, _, t, v in kept):
                kept.append((f"{prefix}/{n}", p.epochs[i], p.test[i], p.val[i]))
    names, epochs, test, val = zip(*kept)
    return MemberProbs(names, epochs, torch.stack(test), first.test_y, torch.stack(val), first.val_y)


def calibrate(p: MemberProbs) -> tuple[MemberProbs, list[float]]:
    """Every member temperature-scaled with its own T fitted on validation (val and test alike),
    and the temperatures."""
    val, val_y = _needs_val(p, "per-member temperature scaling")
    temps = [fit_temperature(v, val_y) for v in val]
    scale = lambda probs: torch.stack([temperature_scale(q, t) for q, t in zip(probs, temps)])  # noqa: E731
    return MemberProbs(p.names, p.epochs, scale(p.test), p.test_y, scale(val), val_y), temps


@dataclass(frozen=True)
class LeverRow:
    """One ensemble against the reference on the same test images: its ledger, and the paired
    differences (this − reference) of NLL, mean member NLL (strength) and D (diversity; the NLL
    difference = strength difference − diversity difference)."""

    lever: str
    members: tuple[str, ...]
    ledger: dict[str, float]
    gap: dict  # Difference.to_dict() per ledger term: "nll", "mean_member_nll", "diversity_nll", "accuracy"

    def to_dict(self) -> dict:
        return {"lever": self.lever, "members": list(self.members), "ledger": self.ledger, "gap": self.gap}


def lever_row(lever: str, ens: MemberProbs, reference: MemberProbs) -> LeverRow:
    """ENS scored once on the test split against REFERENCE (same images)."""
    if not torch.equal(ens.test_y, reference.test_y):
        raise ArtifactError(f"{lever}: the ensemble and the reference were tested on different images")
    diff = ledger_difference(ens.test, reference.test, ens.test_y)
    return LeverRow(lever, ens.names, ledger(ens.test, ens.test_y),
                    {k: diff[k].to_dict() for k in ("nll", "mean_member_nll", "diversity_nll", "accuracy")})


def lever_rows(edgenes: MemberProbs, deepens: MemberProbs, size: int) -> list[LeverRow]:
    """Every training-free lever at `size` members against DeepEns's first `size` seeds: EdgeNES
    as trained, its forward selection, the hybrid pool's, and the three again with per-member
    temperatures (against DeepEns with per-member temperatures, so calibration is not a lever of
    one side only)."""
    ref = deepens.subset(deepens.names[:size])
    hybrid = union(("edgenes", edgenes), ("deepens", deepens))
    rows = [lever_row("EdgeNES as trained", edgenes.subset(edgenes.names[:size]), ref),
            lever_row("EdgeNES, forward selection on validation NLL", select(edgenes, size), ref),
            lever_row("hybrid pool (α* seeds + EdgeNES), forward selection", select(hybrid, size), ref)]
    cal_deepens, cal_edge = calibrate(deepens)[0], calibrate(edgenes)[0]  # one T per member, fitted once
    cal_ref = cal_deepens.subset(cal_deepens.names[:size])
    cal_hybrid = union(("edgenes", cal_edge), ("deepens", cal_deepens))
    rows += [lever_row("EdgeNES, per-member temperature", cal_edge.subset(cal_edge.names[:size]), cal_ref),
             lever_row("hybrid pool, per-member temperature, forward selection", select(cal_hybrid, size), cal_ref)]
    return rows


def strong_and_diverse(candidates: list[tuple[object, float, float]], star_estimate: float, n: int,
                       margin: float = 0.02) -> list[object]:
    """N architectures chosen without training: of the candidates (architecture, one-shot estimate,
    distance to α*; α* itself left out by the caller), those whose estimate is within `margin` of
    α*'s count as strong, and the N most distant of them are taken; when fewer are strong, the
    next best estimates fill in. The margin is fixed beforehand, never fitted to retrained scores."""
    strong = sorted((c for c in candidates if c[1] >= star_estimate - margin), key=lambda c: -c[2])
    rest = sorted((c for c in candidates if c[1] < star_estimate - margin), key=lambda c: -c[1])
    return [c[0] for c in (strong + rest)[:n]]
