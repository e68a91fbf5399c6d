"""A click on the architecture map: the architecture at that point of a hypernetwork's path, at
once and without training, with a one-shot accuracy estimate from the search's shared weights and
how far that estimate ranked the run's retrained members right (`nes.method.oneshot`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..artifacts import ArtifactError
from ..layout import RunDir
from ..method.oneshot import OneShot, one_shot_accuracy, one_shot_setup, rank_agreement
from ..method.train import read_member
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


def trust(run_dir: str | Path, device: str | None = None) -> Trust:
    """The run's one-shot scorer and its rank agreement on every finished member with a test
    accuracy (an ArtifactError from the search passes through; a broken member is skipped)."""
    setup = one_shot_setup(run_dir, device=device)
    run, rows = RunDir(run_dir), []
    for name in run.list_members():
        d = run.member(name)
        if not d.finished:
            continue
        try:
            g = read_member(d).genotype
            acc = d.read("metrics.json", {}).get("metrics", {}).get("test_accuracy")
        except (ArtifactError, AttributeError):
            continue
        if isinstance(acc, (int, float)):
            rows.append((name, one_shot_accuracy(setup, g), float(acc)))
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
