"""A click on the architecture map: the architecture at that point of a hypernetwork's path, at
once and without training, with a one-shot accuracy estimate from the search's shared weights and
how far that estimate ranked the run's retrained members right (`nes.method.oneshot`)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..artifacts import ArtifactError, read_json, write_json
from ..layout import RunDir
from ..method.oneshot import OneShot, one_shot_accuracy, one_shot_setup, rank_agreement
from .archmap import ArchMap, MapPoint

TRUST_FILE = "oneshot_trust.json"  # RUN/oneshot_trust.json: the members' one-shot estimates, keyed by their inputs


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
    are left out). An ArtifactError from the search passes through.

    Scoring the members is most of a first click (about 0.1 s each on one core), so the estimates
    are kept in RUN/oneshot_trust.json under a key of everything they depend on (the supernet's
    bytes, the slice size, each member's genotype): a later server, or a copy of the run (the
    bundled demo ships its file), reads them instead; a store it cannot write to just recomputes."""
    setup = one_shot_setup(run_dir, device=device)
    members = [p for p in amap.of_kind("member") if p.accuracy is not None]
    estimates = _saved_estimates(run_dir, setup, members)
    rows = [(p.label, e, p.accuracy) for p, e in zip(members, estimates)]
    return Trust(setup, rows, rank_agreement([r[1] for r in rows], [r[2] for r in rows]))


def _trust_key(run_dir: str | Path, setup: OneShot, members: Sequence[MapPoint]) -> str:
    h = hashlib.sha256(RunDir(run_dir).search.supernet.read_bytes())
    h.update(json.dumps([len(setup.loader.y), [(p.label, p.genotype.to_dict()) for p in members]]).encode())
    return h.hexdigest()


def _saved_estimates(run_dir: str | Path, setup: OneShot, members: Sequence[MapPoint]) -> list[float]:
    """The members' one-shot estimates from RUN/oneshot_trust.json when its key matches, else
    computed (and saved for the next time, atomically; an unwritable store is no error)."""
    path, key = Path(run_dir) / TRUST_FILE, _trust_key(run_dir, setup, members)
    try:
        saved = read_json(path, dict, "the saved one-shot estimates") if path.exists() else {}
    except ArtifactError:
        saved = {}  # a damaged cache is recomputed, and replaced below
    found = saved.get("estimates")
    if (saved.get("key") == key and isinstance(found, list) and len(found) == len(members)
            and all(isinstance(e, (int, float)) and 0.0 <= e <= 1.0 for e in found)):  # NaN fails the bounds
        return [float(e) for e in found]
    estimates = [one_shot_accuracy(setup, p.genotype) for p in members]
    try:
        write_json(path, {"key": key, "members": [p.label for p in members], "estimates": estimates})
    except OSError:
        pass
    return estimates


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
