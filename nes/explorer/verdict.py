"""Budget-matched verdicts: each method's ensemble against a reference, at equal members and at equal cost.

A *record* is what the Compare page lists: a finished baseline (RUN/baselines/<method>_s<seed>/baseline.json)
or the run's own EdgeNES ensemble (`own_record`: the finished members of RUN/members/, α* included),
with the keys "method", "seed", "members", "ensemble", "by_size", "costs", "vs_best_member", plus
"budget" (`budget`): what the method trained and the device-seconds it spent.

Networks trained: every member trained (the whole pool for the NES and EdgeNES pool methods) plus
every search: 1 for the run's search (every method built on α*), M for the DARTS ensemble (its own
searches, not the run's), 1 + one per λ for the per-λ search, none for NES-RS / NES-RE. Hypernetworks
are counted apart. Device-seconds split into search, hypernetwork and members, as the training loops
recorded them (`costs["search"]` keys: "search", "search_<i>", "lam_<λ>" are searches,
"hypernet_<regularizer>" hypernetworks).

`budget_verdict` compares A with B on the same test images through `nes.method.scoring` (the one
scoring path): the paired differences of accuracy and NLL and of every ledger term (member
strength and diversity), each with its 95 % bootstrap interval, at equal members (the first m of each
ensemble, in the order the method built it: seeds, or forward selection on validation), and at equal
cost (how many members the cheaper method could have trained with the other's device-seconds; scored
when it trained that many). Nothing is chosen on the test set. The sentences say "within noise"
exactly where an interval holds 0.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..layout import RunDir
from ..method.baselines import costs
from ..method.scoring import MemberProbs, compare, compare_ledger, score, size_curve
from ..method.stats import Difference

OWN = "edgenes (this run)"  # the method label of the run's own ensemble
LABELS = {OWN: "EdgeNES (this run)", "deepens": "DeepEns", "darts": "the DARTS ensemble",
          "random": "random deviation", "nes-rs": "NES-RS", "nes-re": "NES-RE", "per-lambda": "the per-λ search",
          "edgenes-edges": "EdgeNES (edges)", "edgenes-js-target": "EdgeNES (js-target)", "edgenes-js": "EdgeNES (js)"}
LEDGER_SHOWN = ("mean_member_nll", "diversity_nll", "mean_member_brier", "diversity_brier")
_CACHE: dict[tuple, Any] = {}


def label(method: str) -> str:
    """How a sentence names a method ("DeepEns", "EdgeNES (this run)", …)."""
    return LABELS.get(method, method)


# ----------------------------------------------------------------------------- records and budgets
def own_record(run: str | Path) -> dict[str, Any] | None:
    """The run's own EdgeNES ensemble as a Compare-page record, or None below 2 finished members.

    Members in the order they were trained for (their recorded seed, α* first), like a baseline's
    member i; costs: the run's search, each hypernetwork a member came from, each member's training."""
    rd = RunDir(run)
    order = rd.members_as_trained()
    if len(order) < 2:
        return None
    recs = {n: rd.member(n).record() for n in order}
    regs = sorted({r.regularizer for r in recs.values() if r.regularizer})
    search = {"search": rd.search.seconds(), **{f"hypernet_{r}": rd.hypernet(r).seconds() for r in regs}}
    report = score(MemberProbs.load(rd.path, order))
    seeds = [r.seed // 1000 for r in recs.values() if r.seed is not None]
    return {"method": OWN, "seed": min(seeds, default=0), "members": order, "pool": order,
            "regularizers": regs, "ensemble": report.metrics, "ledger": report.ledger,
            "by_size": [m for _, m in size_curve(rd.path, order)],
            "costs": costs(search, {n: rd.member(n).path for n in order}), "vs_best_member": report.vs_best}


def budget(record: dict[str, Any]) -> dict[str, Any]:
    """{"networks": {members, searches, hypernetworks, total}, "seconds": {search, hypernetwork,
    members, total}} of a record (see the module's docstring for what counts); total networks =
    members + searches (hypernetworks apart), total seconds = the sum of the three parts."""
    c = record.get("costs") or {}
    parts = c.get("search") or {}
    hyper = {k: float(v) for k, v in parts.items() if k.startswith("hypernet_")}
    searches = {k: float(v) for k, v in parts.items() if k not in hyper}
    train = c.get("train") or {}
    members = len(train) if train else len(record.get("pool") or record.get("members") or [])
    seconds = {"search": sum(searches.values()), "hypernetwork": sum(hyper.values()),
               "members": float(c.get("train_seconds", sum(train.values())))}
    seconds["total"] = seconds["search"] + seconds["hypernetwork"] + seconds["members"]
    return {"networks": {"members": members, "searches": len(searches), "hypernetworks": len(hyper),
                        "total": members + len(searches)}, "seconds": seconds}


def affordable(record: dict[str, Any], seconds: float) -> int:
    """Members the method could have trained with `seconds` device-seconds: what is left after its
    searches and hypernetworks, over its mean seconds per member trained (≥ 0)."""
    b = budget(record)
    fixed = b["seconds"]["search"] + b["seconds"]["hypernetwork"]
    per_member = b["seconds"]["members"] / max(b["networks"]["members"], 1)
    if per_member <= 0:
        return 0
    return max(0, math.floor((seconds - fixed) / per_member + 1e-9))


def records(run: str | Path) -> list[dict[str, Any]]:
    """The run's own ensemble (when it has ≥ 2 finished members) and its finished baselines, each
    with its "budget"; cached until a member or a baseline of the run is (re)written."""
    key = ("records", str(Path(run).resolve()), _stamp(run))
    if key not in _CACHE:
        own = own_record(run)
        recs = ([own] if own else []) + RunDir(run).baseline_records()
        _remember(key, [{**r, "budget": budget(r)} for r in recs])
    return _CACHE[key]


def _stamp(run: str | Path) -> tuple:
    """Modification times of what the records are made of: members' weights and metrics, baselines' records."""
    p = Path(run)
    files = [*p.glob("members/*/weights.safetensors"), *p.glob("members/*/metrics.json"),
             *p.glob("baselines/*/baseline.json"), *p.glob("search/history.json"), *p.glob("hypernet/*/history.json")]
    return tuple(sorted((str(f.relative_to(p)), f.stat().st_mtime) for f in files if f.exists()))


def _remember(key: tuple, value: Any) -> None:
    if len(_CACHE) > 64:
        _CACHE.clear()
    _CACHE[key] = value


# ----------------------------------------------------------------------------- verdicts
def record_probs(run: str | Path, record: dict[str, Any]) -> MemberProbs:
    """The saved probabilities of a record's ensemble members (the run's own, or its baseline folder's)."""
    rd = RunDir(run)
    folder = rd.path if record["method"] == OWN else rd.baseline(record["method"], int(record["seed"])).path
    return MemberProbs.load(folder, list(record["members"]))


def verdicts(run: str | Path, reference: str = "deepens") -> list[dict[str, Any]]:
    """`budget_verdict` of every record of the run against `reference`'s record of the same seed
    (records without one, or tested on other images, are left out); cached like `records`."""
    key = ("verdicts", str(Path(run).resolve()), reference, _stamp(run))
    if key not in _CACHE:
        recs = records(run)
        refs = {int(r["seed"]): r for r in recs if r["method"] == reference}
        out = []
        for rec in recs:
            ref = refs.get(int(rec["seed"]))
            if ref is not None and rec["method"] != reference:
                v = budget_verdict(rec, ref, record_probs(run, rec), record_probs(run, ref))
                out += [v] if v is not None else []
        _remember(key, out)
    return _CACHE[key]


def budget_verdict(a: dict[str, Any], b: dict[str, Any], a_probs: MemberProbs,
                   b_probs: MemberProbs) -> dict[str, Any] | None:
    """Method A (record `a`, its members' probabilities `a_probs` in the record's order) against
    reference B, on the same test images; None when they were tested on different images.

    {"method", "seed", "reference", "budget": {"a", "b"}, "equal_members": {"members": [m, m],
    "accuracy", "nll", "ledger": {term: Difference dict}}, "equal_cost": (`_equal_cost`),
    "clauses": {accuracy, nll}, "sentences": [...], "text"}; differences are A − B."""
    m = min(len(a_probs), len(b_probs))
    pa, pb = a_probs.subset(a_probs.names[:m]), b_probs.subset(b_probs.names[:m])
    diff, led = compare(pa, pb), compare_ledger(pa, pb)
    if diff is None or led is None:
        return None
    clauses = {k: say(d, label(b["method"])) for k, d in diff.items()}
    same = {"members": [m, m], **{k: d.to_dict() for k, d in diff.items()},
            "ledger": {k: led[k].to_dict() for k in LEDGER_SHOWN}}
    cost = _equal_cost(a, b, a_probs, b_probs)
    sentences = [_members_sentence(a, b, len(a_probs), len(b_probs), m, clauses), _ledger_sentence(a, b, led),
                 cost["text"]]
    return {"method": a["method"], "seed": int(a["seed"]), "reference": b["method"],
            "budget": {"a": budget(a), "b": budget(b)}, "equal_members": same, "equal_cost": cost,
            "clauses": clauses, "sentences": sentences, "text": f"{sentences[0]} {sentences[2]}"}


def _equal_cost(a: dict, b: dict, pa: MemberProbs, pb: MemberProbs) -> dict[str, Any]:
    """A and B at equal device-seconds: the cheaper method grown to the other's total (scored when it
    trained that many members), else the dearer one cut to the cheaper's total. A pool method's
    ensemble is selected from its pool, so a budget that changes the pool is not scored."""
    sa, sb = budget(a)["seconds"]["total"], budget(b)["seconds"]["total"]
    out: dict[str, Any] = {"seconds": [sa, sb], "ratio": sa / sb if sb > 0 else None, "members": None}
    if sb <= 0 or sa <= 0:
        return {**out, "text": "No device-seconds were recorded for one of the two, so no equal-cost verdict."}
    cheap, dear = (a, b) if sa <= sb else (b, a)
    n = affordable(cheap, max(sa, sb))
    head = _cost_head(a, b, sa, sb, cheap, n)
    if _is_pool(cheap):
        return {**out, "affordable": n, "text": f"{head} {label(cheap['method'])} selects its members from a "
                f"pool, so a larger budget would change the pool: no equal-cost ensemble is scored."}
    if 1 <= n <= len(cheap["members"]):
        sizes = [n, len(pb)] if cheap is a else [len(pa), n]
        tail = "as many as it has" if n == len(cheap["members"]) else f"of the {len(cheap['members'])} it has"
    else:
        n_dear = affordable(dear, min(sa, sb))
        if _is_pool(dear) or not 1 <= n_dear <= len(dear["members"]):
            return {**out, "affordable": n, "text": f"{head} but it trained only {len(cheap['members'])}: "
                    "no equal-cost ensemble to score (train more members to see one)."}
        sizes = [n_dear, len(pb)] if dear is a else [len(pa), n_dear]
        tail = (f"but it trained only {len(cheap['members'])}; the other way round, {label(dear['method'])} "
                f"could have trained {n_dear} with {min(sa, sb):.0f} s")
    diff = compare(pa.subset(pa.names[:sizes[0]]), pb.subset(pb.names[:sizes[1]]))
    out.update(affordable=n, members=sizes, **{k: d.to_dict() for k, d in diff.items()})
    if sizes[0] == sizes[1] == min(len(pa), len(pb)):
        return {**out, "text": f"{head} {tail}, so at equal cost the verdict is the one at equal members."}
    said = f"{say(diff['accuracy'], label(b['method']))}, with {say(diff['nll'])}"
    return {**out, "text": f"{head} {tail}. At equal cost ({sizes[0]} vs {sizes[1]} members), "
            f"{label(a['method'])} is {said}."}


def _cost_head(a: dict, b: dict, sa: float, sb: float, cheap: dict, n: int) -> str:
    """"A cost X device-seconds, R× B's Y; with X s the cheaper could have trained n members," """
    name = label(a["method"])
    return (f"{name[:1].upper()}{name[1:]} cost {sa:.0f} device-seconds, {sa / sb:.2f}× {label(b['method'])}'s "
            f"{sb:.0f}; with {max(sa, sb):.0f} s {label(cheap['method'])} could have trained {n} members,")


def _is_pool(record: dict[str, Any]) -> bool:
    return len(record.get("pool") or record["members"]) > len(record["members"])


def report_lines(found: list[dict[str, Any]], prefix: str = "") -> list[str]:
    """Markdown list items, one per verdict: "- {prefix}A vs B: <at equal members> <at equal cost>"."""
    return [f"- {prefix}{label(v['method'])} vs {label(v['reference'])}: {v['text']}" for v in found]


# ----------------------------------------------------------------------------- words
def say(d: Difference, other: str | None = None) -> str:
    """One difference in words, with its interval and "within noise" exactly when the interval
    holds 0: "0.26 points less accurate than DeepEns (95% CI -0.53 to +0.02: within noise)",
    "an NLL 0.0117 higher, i.e. worse (95% CI +0.0099 to +0.0136: beyond noise)"."""
    if d.metric == "accuracy":
        fmt = "{:+.2f}"
        words = ("as accurate" if d.value == 0 else
                 f"{abs(d.value):.2f} points {'more' if d.value > 0 else 'less'} accurate")
        words += f" as {other}" if other and d.value == 0 else (f" than {other}" if other else "")
    elif d.metric == "nll":
        fmt = "{:+.4f}"
        words = ("the same NLL" if d.value == 0 else
                 f"an NLL {abs(d.value):.4f} {'higher, i.e. worse' if d.value > 0 else 'lower, i.e. better'}")
    else:
        fmt = "{:+.4f}"
        words = f"{d.metric} {fmt.format(d.value)}"
    noise = "within noise" if d.within_noise else "beyond noise"
    return f"{words} ({100 * d.level:.0f}% CI {fmt.format(d.lo)} to {fmt.format(d.hi)}: {noise})"


def _members_sentence(a: dict, b: dict, ma: int, mb: int, m: int, clauses: dict[str, str]) -> str:
    sizes = f"With {m} members each" + ("" if ma == mb else f" (the first {m} of {max(ma, mb)})")
    return f"{sizes}, {label(a['method'])} is {clauses['accuracy']}, with {clauses['nll']}."


def _ledger_sentence(a: dict, b: dict, led: dict[str, Difference]) -> str:
    """Where the NLL difference comes from (the ledger: NLL = mean member NLL − diversity, term by term)."""
    strength, div = led["mean_member_nll"], led["diversity_nll"]
    weaker = "the same strength" if strength.value == 0 else ("weaker" if strength.value > 0 else "stronger")
    diverse = "as diverse" if div.value == 0 else ("more diverse" if div.value > 0 else "less diverse")
    return (f"Where the NLL difference comes from: {label(a['method'])}'s members are {weaker}, mean member "
            f"NLL {strength.text()}, and {diverse}, Jensen gap {div.text()}; the NLL difference is the first "
            "minus the second.")
