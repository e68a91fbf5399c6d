"""What the pages, the demo and `compare.py` show of the saved shift reports (`nes.method.shift`).

A report is one member set's shift table (RUN/shift/<set>.json: "ensemble" is the run's own
EdgeNES ensemble, "<method>_s<seed>" a baseline's), with per severity (0 = the same test images
clean, 1–5 = the eight test corruptions pooled) the ensemble's ledger, ECE before and after T and
its gain over its best member, and, where a DeepEns report exists, its difference to it term by
term with paired intervals. Reading them costs JSON only: no model, no data.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..method.shift import load_reports
from ..method.stats import Difference
from .verdict import OWN, label

OWN_REPORT = "ensemble"


def method_of(report_label: str) -> str:
    """The Compare page's method name of a report label ("ensemble" → the run's own EdgeNES)."""
    return OWN if report_label == OWN_REPORT else report_label.rsplit("_s", 1)[0]


def reports(run: str | Path, select: str = "clean") -> dict[str, dict]:
    """{label: report} of the run's saved shift reports whose best member and T were chosen on
    `select` validation ("clean" or "shifted"), the run's own ensemble first."""
    found = {rep.get("label", stem): rep for stem, rep in load_reports(run).items()
             if rep.get("select", "clean") == select}
    return dict(sorted(found.items(), key=lambda kv: (kv[0] != OWN_REPORT, kv[0])))


def protocols(run: str | Path) -> list[str]:
    """The selection protocols the run has shift reports for ("clean" first)."""
    return sorted({rep.get("select", "clean") for rep in load_reports(run).values()}, key=lambda s: s != "clean")


def severities(found: dict[str, dict]) -> list[int]:
    """The severities every report has (0 = clean, 1–5)."""
    sets = [{int(r["severity"]) for r in rep["by_severity"]} for rep in found.values()]
    return sorted(set.intersection(*sets)) if sets else []


def _at(rep: dict, severity: int) -> dict | None:
    return next((r for r in rep["by_severity"] if int(r["severity"]) == severity), None)


def severity_rows(found: dict[str, dict], severity: int) -> list[dict[str, Any]]:
    """One table row per member set at `severity`: accuracy (ensemble, mean member), NLL split into
    member strength − diversity, Brier alike, ECE before → after T, the gain over the best member."""
    rows = []
    for name, rep in found.items():
        r = _at(rep, severity)
        if r is None:
            continue
        cal, vs = r.get("calibrated") or {}, r.get("vs_best")
        rows.append({
            "method": label(method_of(name)), "members": len(rep["members"]),
            "accuracy %": round(100 * r["accuracy"], 2), "mean member acc %": round(100 * r["mean_member_accuracy"], 2),
            "NLL": round(r["nll"], 4), "mean member NLL": round(r["mean_member_nll"], 4),
            "diversity D": round(r["diversity_nll"], 4), "Brier": round(r["brier"], 4),
            "ECE": round(r["ece"], 4), "ECE after T": round(cal["ece"], 4) if "ece" in cal else None,
            "NLL vs best member": Difference.from_dict(vs["nll"]).text() if vs else "n/a"})
    return rows


def difference_rows(found: dict[str, dict], severity: int) -> list[dict[str, str]]:
    """Each set minus its reference (DeepEns) at `severity`: NLL, member strength, diversity, accuracy."""
    rows = []
    for name, rep in found.items():
        vs = rep.get("vs") or {}
        d = next((x for x in vs.get("by_severity", []) if int(x["severity"]) == severity), None)
        if d is None:
            continue
        rows.append({"method": label(method_of(name)), "vs": label(method_of(vs["reference"])),
                     "Δ NLL": Difference.from_dict(d["nll"]).text(),
                     "Δ mean member NLL (strength)": Difference.from_dict(d["mean_member_nll"]).text(),
                     "Δ diversity D": Difference.from_dict(d["diversity_nll"]).text(),
                     "Δ accuracy": Difference.from_dict(d["accuracy"]).text()})
    return rows


def _side(value: float, worse: str, better: str) -> str:
    return worse if value > 0 else better


def sentence(rep: dict, severity: int) -> str | None:
    """The verdict of one report against its reference at `severity`, in words a class reads."""
    vs = rep.get("vs") or {}
    d = next((x for x in vs.get("by_severity", []) if int(x["severity"]) == severity), None)
    if d is None:
        return None
    a, b = label(method_of(rep.get("label", OWN_REPORT))), label(method_of(vs["reference"]))
    nll, strength, div = (Difference.from_dict(d[k]) for k in ("nll", "mean_member_nll", "diversity_nll"))
    where = "on the clean images" if severity == 0 else f"at shift severity {severity}"
    verdict = ("the two ensembles cannot be told apart" if nll.within_noise else
               f"{a}'s ensemble is {_side(nll.value, 'worse', 'better')} than {b}'s")
    members = ("as strong as" if strength.within_noise else _side(strength.value, "weaker than", "stronger than"))
    diversity = ("about as large as" if div.within_noise else _side(div.value, "larger than", "smaller than"))
    return (f"{where.capitalize()}, {verdict} in NLL, by {nll.text()}. Its members are {members} {b}'s "
            f"(mean member NLL {strength.text()}), and its diversity D is {diversity} {b}'s, by {div.text()}.")


def summary(found: dict[str, dict]) -> dict[str, Any] | None:
    """What the demo records of its shift reports: per severity each set's headline numbers, the
    run's ensemble against DeepEns term by term, and the sentences (None without reports)."""
    own = found.get(OWN_REPORT)
    if own is None:
        return None
    keep = ("accuracy", "mean_member_accuracy", "nll", "mean_member_nll", "diversity_nll", "brier", "ece")
    sets = {name: [{"severity": r["severity"], **{k: r[k] for k in keep},
                    "ece_calibrated": (r.get("calibrated") or {}).get("ece"),
                    "nll_vs_best_member": (r.get("vs_best") or {}).get("nll")} for r in rep["by_severity"]]
            for name, rep in found.items()}
    vs = own.get("vs") or {}
    return {"images_per_condition": own["images"], "select": own.get("select"),
            "corruptions": own.get("corruptions"), "sets": sets, "reference": vs.get("reference"),
            "edgenes_vs_reference": vs.get("by_severity"),
            "text": [t for s in severities(found) if (t := sentence(own, s))]}
