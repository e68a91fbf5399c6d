"""What the pages say about a run's own numbers, as plain text (no Streamlit).

A teaching note above a headline must not contradict it: an ensemble is not automatically better
calibrated than its members. With label smoothing every member is trained to be less sure than it
could be (underconfident), and averaging members that disagree spreads the probabilities further,
so the ensemble can be more accurate and still have a worse NLL and ECE than its best member;
one temperature fitted on the validation split (T < 1 sharpens) removes most of that. The note
below is built from the numbers the page shows, so it says which of these happened.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from ..layout import RunDir
from ..method.scoring import EnsembleReport
from ..method.stats import Difference


def member_origin(lam: float | None, regularizer: str | None) -> str:
    """Where a member's architecture came from, for a table: "edges, λ = 1"; "α* or a given
    genotype" without λ; "λ = 1 (hypernetwork not recorded)" for members of runs older than that record."""
    if lam is None:
        return "α* or a given genotype"
    return f"{regularizer}, λ = {lam:g}" if regularizer else f"λ = {lam:g} (hypernetwork not recorded)"


def _label_smoothing(run_dir: str | Path, name: str) -> float:
    cfg = RunDir(run_dir).member(name).read("config.json", {}) or {}
    return float(cfg.get("label_smoothing") or 0.0)


def _accuracy_sentence(acc: Difference, best: str) -> str:
    if acc.within_noise:
        return (f"Against its best member ({best}) the ensemble's accuracy differs by {acc.text()}: this test "
                "set cannot tell the two apart.")
    more = "more" if acc.value > 0 else "less"
    return f"The ensemble is {more} accurate than its best member ({best}): {acc.text()}."


def _calibration_sentence(ens: Mapping[str, float], best: Mapping[str, float], cal: Mapping[str, float] | None,
                          smoothing: float) -> str:
    """Whether the ensemble's NLL and ECE beat the best member's, and why not when they do not."""
    worse = [k.upper() for k in ("nll", "ece") if ens[k] > best[k]]
    figures = f"NLL {ens['nll']:.3f} vs {best['nll']:.3f}, ECE {ens['ece']:.3f} vs {best['ece']:.3f}"
    if not worse:
        return f"Its NLL and ECE are as good as the best member's or better ({figures})."
    under = cal is not None and cal["temperature"] < 1.0
    why = ""
    if under:
        why = (" The ensemble is underconfident: " + (f"label smoothing ({smoothing:g}) trains each member to be "
               "less sure than it could be, and " if smoothing > 0 else "")
               + "averaging members that disagree spreads the probabilities further.")
    fix = (f" Temperature scaling (T = {cal['temperature']:.2f}, fitted on the validation split) brings the ensemble "
           f"to NLL {cal['nll']:.3f} and ECE {cal['ece']:.3f}." if cal else "")
    verb = "are" if len(worse) > 1 else "is"
    return f"Its {' and '.join(worse)} {verb} worse than the best member's ({figures}).{why}{fix}"


def ensemble_note(report: EnsembleReport | None, run_dir: str | Path) -> str | None:
    """What the headline ensemble's numbers show against its best member (chosen by validation
    NLL), and why its calibration is what it is; None without a best member to compare with."""
    vs = report.vs_best if report is not None else None
    if not vs or vs.get("best_member") not in report.members:
        return None
    best_name = vs["best_member"]
    acc = Difference.from_dict(vs["accuracy"])
    return " ".join([_accuracy_sentence(acc, best_name),
                     _calibration_sentence(report.metrics, report.members[best_name], report.calibrated,
                                           _label_smoothing(run_dir, best_name))])


def ledger_text(led: dict | None) -> str | None:
    """Where an ensemble's score comes from (`nes.method.ledger`), as one line; None without a ledger."""
    if not led or not all(k in led for k in ("nll", "mean_member_nll", "diversity_nll", "brier")):
        return None
    return (f"Where the gain comes from: NLL {led['nll']:.4f} = mean member NLL {led['mean_member_nll']:.4f} − "
            f"diversity {led['diversity_nll']:.4f}; Brier {led['brier']:.4f} = mean member "
            f"{led['mean_member_brier']:.4f} − diversity {led['diversity_brier']:.4f}; accuracy "
            f"{100 * led['accuracy']:.2f} % against {100 * led['mean_member_accuracy']:.2f} % for the mean member. "
            "Stronger members lower the first term, members that disagree usefully raise the second.")


def eta_text(step: int, total: int | None, started: float | None, now: float) -> str | None:
    """"≈ 3 min left" for a running job at `step` of `total`, from its pace since `started`
    (wall-clock seconds); None before its first step or without a total."""
    if not total or step <= 0 or started is None or now <= started or step >= total:
        return None
    left = (now - started) / step * (total - step)
    return f"≈ {left:.0f} s left" if left < 90 else f"≈ {left / 60:.0f} min left"


def distance_note(positions: list[float], distances: list[float], js_from_first: list[float]) -> str | None:
    """Why the Explore page's "Distance to α*" and the heatmap's JS for the same pair differ, with
    the run's numbers: the heatmap averages the JS over every categorical choice of the cell (each
    possible edge's op and each node's inputs), the distance JS_g over genotype*'s own kept edges
    and nodes only, where α(λ) moves most. `positions[0]` must be 0 (α*), `distances[i]` the JS_g
    of position i, `js_from_first[i]` the heatmap's row 0; None when the heatmap has no α* row."""
    if not positions or positions[0] != 0.0 or len(positions) < 2:
        return None
    pairs = "; ".join(f"d = {d:g}: {g:.3f} vs {j:.3f}" for d, g, j in zip(positions[1:], distances[1:], js_from_first[1:]))
    return ("The heatmap's row d = 0 is not the **Distance to α\\*** above: the heatmap averages JS over every "
            "choice the cell could make (each possible edge's operation and each node's inputs), the distance "
            "JS_g only over α\\*'s own kept edges and nodes, where the architecture moves most; so the distance "
            f"reads higher. Distance to α\\* vs heatmap JS: {pairs}.")
