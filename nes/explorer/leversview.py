"""What the Compare page, the CLI and the demo show of a run's levers report (RUN/levers.json,
`nes.method.levers.report`): every lever's NLL gap to DeepEns split into member strength and
diversity, clean and per shift severity, and the verdict in words for the lever picked on
validation, at equal members and at equal cost. Reading costs JSON only, and a key check of the
members' saved probabilities (is the report still about these members?).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..method import levers
from ..method.scoring import members_stamp
from ..method.stats import Difference

_FRESH: dict[tuple, bool] = {}


def load(run: str | Path) -> dict | None:
    """The run's levers report, or None when it has none (`levers.load_report`: ArtifactError when
    the file is damaged)."""
    return levers.load_report(run)


def fresh(run: str | Path, rep: dict) -> bool:
    """The report was made from the members the run has now (`levers.pool_key`); False when a
    member was added, retrained or removed since. Cached on the members' file stamps."""
    try:
        sets = levers.report_sets(run, rep.get("reference", "deepens_s0"), rep.get("source"))
    except ValueError:
        return False
    stamp = tuple((str(r.path), members_stamp(r.path, names)) for r, names in sets)
    if stamp not in _FRESH:
        if len(_FRESH) > 32:
            _FRESH.clear()
        _FRESH[stamp] = levers.pool_key(sets) == rep.get("key")
    return _FRESH[stamp]


PROTOCOLS = {"clean": "clean validation", "shifted": "the validation corruptions"}


def protocols(rep: dict) -> list[str]:
    """Where the report's levers were chosen: "clean" validation, and "shifted" (the validation
    corruptions, `levers.report`'s "shift_selected") when it was scored under shift."""
    return ["clean"] + (["shifted"] if rep.get("shift_selected") else [])


def _shift(rep: dict, protocol: str) -> dict:
    return (rep.get("shift") if protocol == "clean" else rep.get("shift_selected")) or {}


def severities(rep: dict, protocol: str = "clean") -> list[int]:
    """0 (the full clean test set, for levers chosen on clean validation) and every shift severity."""
    found = [int(b["severity"]) for b in _shift(rep, protocol).get("by_severity", [])]
    return ([0] if protocol == "clean" else []) + found


def rows_at(rep: dict, severity: int, protocol: str = "clean") -> list[dict]:
    """The report's lever rows at `severity` (0: the full clean test set) for levers chosen on
    `protocol` validation."""
    if severity == 0 and protocol == "clean":
        return rep["clean"]["rows"]
    return next((b["rows"] for b in _shift(rep, protocol).get("by_severity", []) if int(b["severity"]) == severity), [])


def _short(names: list[str]) -> str:
    return ", ".join(n.replace("edgenes/", "").replace("deepens/", "DeepEns ") for n in names)


def table(rep: dict, severity: int = 0, protocol: str = "clean") -> list[dict[str, Any]]:
    """One row per lever for a table: networks trained, members, ensemble NLL, its gap to DeepEns
    with the interval, the strength and diversity terms (gap = strength − diversity), accuracy."""
    out = []
    for r in rows_at(rep, severity, protocol):
        g = {k: Difference.from_dict(v) for k, v in r["gap"].items()}
        out.append({"lever": r["lever"], "networks trained": r["networks"],
                    "equal cost": "yes" if r["networks"] <= rep["size"] else "no",
                    "NLL": round(r["ledger"]["nll"], 4), "NLL − DeepEns (95 % CI)": g["nll"].text(),
                    "strength term": round(g["mean_member_nll"].value, 4),
                    "diversity term": round(g["diversity_nll"].value, 4),
                    "accuracy − DeepEns": g["accuracy"].text(), "members": _short(r["members"])})
    return out


def _where(severity: int, rep: dict) -> str:
    if severity == 0:
        return f"on the clean test set ({rep['clean']['images']} images)"
    return f"at shift severity {severity} (8 corruptions × {rep['shift']['images']} images)"


def sentence(rep: dict, lever: str, severity: int, protocol: str = "clean") -> str | None:
    """One lever at one severity in words: its gap to DeepEns and the ledger's split."""
    row = next((r for r in rows_at(rep, severity, protocol) if r["lever"] == lever), None)
    if row is None:
        return None
    g = {k: Difference.from_dict(v) for k, v in row["gap"].items()}
    verdict = ("within noise" if g["nll"].within_noise else
               "better than DeepEns" if g["nll"].value < 0 else "worse than DeepEns")
    s, d = g["mean_member_nll"], g["diversity_nll"]
    return (f"{_where(severity, rep).capitalize()}: NLL {g['nll'].text()}, {verdict}. Member strength "
            f"{s.value:+.4f} ({'weaker' if s.value > 0 else 'stronger'} members), diversity {d.value:+.4f} "
            f"({'more' if d.value > 0 else 'less'} diverse than DeepEns's seeds).")


def verdict(rep: dict, shift_severities: tuple[int, ...] = (3, 5), protocol: str = "clean") -> list[str]:
    """The verdict in sentences: for the lever picked on `protocol` validation at equal members and
    the one at equal cost, clean (clean protocol only) and at the given shift severities."""
    picks, lines = (rep if protocol == "clean" else rep["shift_selected"])["best"], []
    where = "" if protocol == "clean" else ", chosen on the validation corruptions"
    for kind, lever in (("at equal members", picks["equal_members"]), ("at equal cost", picks["equal_cost"])):
        row = next(r for r in rep["clean"]["rows"] if r["lever"] == lever)
        lines.append(f"**Best EdgeNES-derived ensemble {kind}{where}** (picked by NLL on {PROTOCOLS[protocol]}, never "
                     f"on test): {lever}, {rep['size']} members from {row['networks']} networks trained "
                     f"(DeepEns: {rep['size']}; hypernetworks not counted).")
        for sev in [s for s in (0, *shift_severities) if s in severities(rep, protocol)]:
            lines.append(sentence(rep, lever, sev, protocol))
    return [line for line in lines if line]


def caption(rep: dict, protocol: str = "clean") -> str:
    """What the lever table's numbers are, for its caption."""
    m = rep["size"]
    return (f"Members, forward selections and temperatures chosen on {PROTOCOLS[protocol]}. Ensembles of {m} "
            f"members; each row minus DeepEns ({rep['reference']}: α* with {m} seeds), with the same temperatures "
            "on both sides where the row says per-member temperature; the test set is scored once. NLL gap = "
            "strength term − diversity term, exactly: a positive strength term means weaker members, a positive "
            "diversity term more diversity than DeepEns's seeds. Paired bootstrap 95 % intervals over the test "
            "images; under shift, each source image is drawn with its 8 corrupted copies. They do not cover "
            "training seeds: each side here is one draw of seeds, and retrained with other seeds the same levers "
            "changed sign under shift (benchmarks/results/README.md, bench_frontier's replicates). Equal cost: no "
            "more networks trained than DeepEns (the hypernetwork's training is not counted).")
