"""A click on the architecture map: the architecture at that point of a hypernetwork's path, at
once and without training, with a one-shot accuracy estimate from the search's shared weights and
how far that estimate ranked the run's retrained members right (`nes.method.oneshot`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..method.oneshot import OneShot, one_shot_accuracy, one_shot_setup, rank_agreement
from .archmap import ArchMap, MapPoint


def picked(amap: ArchMap, points: Sequence[Any]) -> MapPoint | None:
    """The path point of AMAP a plotly selection names (Streamlit's `event.selection.points`: each
    a mapping with the point's `customdata`, its index into amap.points); None for no selection, a
    click off the paths or a stale index."""
    for p in points or []:
        data = p.get("customdata") if hasattr(p, "get") else None
        index = data[0] if isinstance(data, (list, tuple)) and data else data
        if isinstance(index, (int, float)) and not isinstance(index, bool) and 0 <= int(index) < len(amap.points):
            point = amap.points[int(index)]
            if point.kind in ("path", "alpha_star"):
                return point
    return None


@dataclass
class Trust:
    """One-shot estimates of the run's retrained members beside their test accuracy, and the
    Spearman ρ between the two (None with fewer than 3 members)."""

    setup: OneShot
    members: list[tuple[str, float, float]]  # (name, one-shot accuracy, retrained test accuracy)
    rho: float | None


def trust(run_dir: str | Path, amap: ArchMap, device: str | None = None) -> Trust:
    """The run's one-shot scorer and its rank agreement on the retrained members AMAP holds (their
    genotypes and test accuracies, read once by `archmap.build_map`; members without an accuracy
    are left out). An ArtifactError from the search passes through."""
    setup = one_shot_setup(run_dir, device=device)
    rows = [(p.label, one_shot_accuracy(setup, p.genotype), p.accuracy)
            for p in amap.of_kind("member") if p.accuracy is not None]
    return Trust(setup, rows, rank_agreement([r[1] for r in rows], [r[2] for r in rows]))


def estimate_text(point: MapPoint, estimate: float, t: Trust) -> str:
    """One sentence for the page: the clicked architecture's one-shot estimate and how far to trust it."""
    where = "α*" if point.kind == "alpha_star" else f"λ = {point.lam:.3g} on the {point.regularizer} path"
    base = (f"One-shot estimate at {where}: **{estimate:.1%}** on {len(t.setup.loader.y)} validation images "
            "with the search's shared weights (no training; retrained members score far higher).")
    if t.rho is None:
        return base + " Fewer than 3 retrained members: how well it ranks architectures is not known yet."
    return base + (f" On this run's {len(t.members)} retrained members it ranks architectures with Spearman "
                   f"ρ = {t.rho:.2f} against their test accuracy" + (": trust its order, not its value."
                                                                   if t.rho >= 0.5 else ": a rough guide at best."))
