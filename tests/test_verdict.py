"""Budget-matched verdicts (nes.explorer.verdict): what each method trained and spent, the verdict at
equal members (the numbers of scoring.compare and compare_ledger) and at equal cost, "within noise"
exactly where an interval holds 0, the demo's recorded verdict, the benchmark's report lines, and
the Compare page showing the demo's own EdgeNES ensemble beside DeepEns."""
from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from helpers import ROOT, predictor
from nes.artifacts import read_json, write_json
from nes.explorer import verdict
from nes.explorer.demo import DEMO_DIR, recompute_results
from nes.layout import MemberDir, RunDir
from nes.method.baselines import costs
from nes.method.scoring import MemberProbs, compare, compare_ledger
from nes.method.stats import Difference

M, BUDGET = 3, 6


# ----------------------------------------------------------------------------- synthetic records
def _member_dirs(tmp: Path, names: list[str], seconds: float = 10.0) -> dict[str, Path]:
    """Member folders whose metrics.json records `seconds` of training each."""
    out = {}
    for i, n in enumerate(names):
        write_json(tmp / n / "metrics.json", {"seconds": seconds + i})
        out[n] = tmp / n
    return out


def _record(tmp: Path, method: str, search: dict[str, float], trained: int, members: int = M,
            seconds: float = 10.0) -> dict:
    """A record as run_baseline writes it: `trained` members trained (the pool), the first `members` kept."""
    pool = [f"{method}_{i}" for i in range(trained)]
    return {"method": method, "seed": 0, "members": pool[:members], "pool": pool,
            "costs": costs(search, _member_dirs(tmp / method, pool, seconds))}


# the search keys run_baseline records per method (nes.method.baselines: count_search, _darts,
# _per_lambda, _edgenes) and the networks each must count: (members trained, searches, hypernetworks)
METHODS = {
    "deepens": ({"search": 5.0}, M, (M, 1, 0)),
    "random": ({"search": 5.0}, M, (M, 1, 0)),
    "darts": ({f"search_{i}": 5.0 for i in range(M)}, M, (M, M, 0)),
    "per-lambda": ({"search": 5.0, **{f"lam_{i}": 4.0 for i in range(M)}}, M, (M, 1 + M, 0)),
    "nes-rs": ({}, BUDGET, (BUDGET, 0, 0)),
    "nes-re": ({}, BUDGET, (BUDGET, 0, 0)),
    "edgenes-edges": ({"search": 5.0, "hypernet_edges": 7.0}, BUDGET, (BUDGET, 1, 1)),
}


@pytest.mark.parametrize("method", list(METHODS))
def test_cost_totals_equal_the_sum_of_their_parts(tmp_path, method):
    search, trained, _ = METHODS[method]
    rec = _record(tmp_path, method, search, trained)
    s = verdict.budget(rec)["seconds"]
    assert s["total"] == pytest.approx(s["search"] + s["hypernetwork"] + s["members"]), \
        f"{method}: total {s['total']} is not search + hypernetwork + members {s}"
    assert s["total"] == pytest.approx(rec["costs"]["total_seconds"]), \
        f"{method}: total {s['total']} differs from the record's total_seconds {rec['costs']['total_seconds']}"
    assert s["members"] == pytest.approx(sum(10.0 + i for i in range(trained))), \
        f"{method}: members' seconds {s['members']} are not the sum of every member trained"


@pytest.mark.parametrize("method", list(METHODS))
def test_networks_are_counted_per_method_as_documented(tmp_path, method):
    search, trained, (members, searches, hypers) = METHODS[method]
    n = verdict.budget(_record(tmp_path, method, search, trained))["networks"]
    assert n["members"] == members, f"{method}: {n['members']} members trained counted, expected {members}"
    assert n["searches"] == searches, f"{method}: {n['searches']} searches counted, expected {searches}"
    assert n["hypernetworks"] == hypers, f"{method}: {n['hypernetworks']} hypernetworks counted, expected {hypers}"
    assert n["total"] == members + searches, f"{method}: {n['total']} networks, expected members + searches"


# ----------------------------------------------------------------------------- synthetic probabilities
def _probs(correct: list[float], n: int = 600, seed: int = 0, conf: float = 0.8, prefix: str = "m") -> MemberProbs:
    """Members whose top-1 is right on a fraction `correct[i]` of n test (and validation) images."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    test = torch.stack([predictor(y, torch.rand(n, generator=g) < q, conf=conf) for q in correct]).float()
    val = torch.stack([predictor(y, torch.rand(n, generator=g) < q, conf=conf) for q in correct]).float()
    return MemberProbs(tuple(f"{prefix}{i}" for i in range(len(correct))), (0,) * len(correct), test, y, val, y)


def _rec(method: str, probs: MemberProbs, fixed: float, per_member: float, pool: int | None = None) -> dict:
    """A record whose costs are `fixed` seconds of search plus `per_member` per member trained."""
    names = list(probs.names)
    trained = names + [f"{method}_extra{i}" for i in range((pool or len(names)) - len(names))]
    train = {n: per_member for n in trained}
    return {"method": method, "seed": 0, "members": names, "pool": trained,
            "costs": {"search": {"search": fixed}, "search_seconds": fixed, "train": train,
                      "train_seconds": per_member * len(trained), "total_seconds": fixed + per_member * len(trained)}}


def _verdict(pa: MemberProbs, pb: MemberProbs, costs_a=(10.0, 100.0), costs_b=(10.0, 100.0), pool_a=None) -> dict:
    a, b = _rec("nes-rs", pa, *costs_a, pool=pool_a), _rec("deepens", pb, *costs_b)
    return verdict.budget_verdict(a, b, pa, pb)


def test_equal_members_numbers_are_scoring_compares():
    pa, pb = _probs([0.8, 0.75, 0.7], seed=1, prefix="a"), _probs([0.6, 0.65], seed=1, prefix="b")
    v = _verdict(pa, pb)
    first = pa.subset(pa.names[:2])  # equal members: the first 2 of A's 3
    want, led = compare(first, pb), compare_ledger(first, pb)
    assert v["equal_members"]["members"] == [2, 2], f"compared at {v['equal_members']['members']} members, expected 2 each"
    for k in ("accuracy", "nll"):
        assert v["equal_members"][k] == want[k].to_dict(), f"equal-members {k} is not scoring.compare's"
    for k, d in v["equal_members"]["ledger"].items():
        assert d == led[k].to_dict(), f"ledger term {k} is not scoring.compare_ledger's"


def _cases() -> list[dict]:
    same = _probs([0.7, 0.7], seed=2)
    sharper = MemberProbs(same.names, same.epochs, (same.test ** 3) / (same.test ** 3).sum(-1, keepdim=True),
                          same.test_y, same.val, same.val_y)  # same top-1 everywhere, other confidence
    return [_verdict(same, same), _verdict(_probs([0.95, 0.9], seed=3), _probs([0.5, 0.55], seed=3)),
            _verdict(sharper, same), _verdict(_probs([0.72, 0.7], seed=4), _probs([0.7, 0.71], seed=4))]


def test_within_noise_is_said_exactly_when_the_interval_holds_zero():
    seen = set()
    for i, v in enumerate(_cases()):
        for k in ("accuracy", "nll"):
            d = Difference.from_dict(v["equal_members"][k])
            seen.add(d.within_noise)
            clause = v["clauses"][k]
            assert ("within noise" in clause) == (d.lo <= 0 <= d.hi), \
                f"case {i} {k}: [{d.lo}, {d.hi}] but the words say {clause!r}"
            assert ("beyond noise" in clause) != (d.lo <= 0 <= d.hi), f"case {i} {k}: {clause!r}"
            assert clause in v["sentences"][0], f"case {i}: the {k} clause is not in the verdict {v['sentences'][0]!r}"
    assert seen == {True, False}, f"the cases cover only within_noise in {seen}: the check above proves nothing"


@pytest.mark.parametrize("lo, hi", [(0.0, 0.5), (-0.5, 0.0), (-0.1, 0.2), (0.01, 0.5), (-0.5, -0.01)])
def test_say_marks_the_interval_ends(lo, hi):
    for metric in ("accuracy", "nll", "diversity_nll"):
        text = verdict.say(Difference(metric, (lo + hi) / 2, lo, hi, 100), "B")
        assert ("within noise" in text) == (lo <= 0 <= hi), f"{metric} [{lo}, {hi}]: {text!r}"


def test_equal_cost_at_the_affordable_size():
    pa, pb = _probs([0.8, 0.75, 0.7], seed=5), _probs([0.7, 0.72, 0.71], seed=5)
    # A: 10 + 3·100 = 310 s; B: 10 + 3·60 = 190 s, so B could afford floor(300 / 60) = 5 > 3 trained;
    # the other way round A could afford floor(180 / 100) = 1 member with B's 190 s
    v = _verdict(pa, pb, costs_a=(10.0, 100.0), costs_b=(10.0, 60.0))["equal_cost"]
    assert v["affordable"] == 5, f"the cheaper method could afford {v['affordable']} members, expected 5"
    assert v["ratio"] == pytest.approx(310 / 190), f"cost ratio {v['ratio']}, expected 310/190"
    assert v["members"] == [1, 3], f"compared at {v['members']} members, expected A cut to 1 vs B's 3"
    assert v["accuracy"] == compare(pa.subset(pa.names[:1]), pb)["accuracy"].to_dict(), \
        "the equal-cost accuracy is not scoring.compare's at those sizes"
    assert "trained only 3" in v["text"], f"the text does not say B trained fewer than it could afford: {v['text']!r}"


def test_equal_cost_equal_to_equal_members_is_said_and_pools_are_not_scored():
    pa, pb = _probs([0.8, 0.75], seed=7), _probs([0.7, 0.72], seed=7)
    v = _verdict(pa, pb, costs_a=(10.0, 100.0), costs_b=(10.0, 95.0))["equal_cost"]
    assert v["members"] == [2, 2], f"compared at {v['members']}, expected 2 vs 2 (B affords 2 with A's seconds)"
    assert "the one at equal members" in v["text"], f"the text does not say so: {v['text']!r}"
    pooled = _verdict(pa, pb, costs_a=(10.0, 20.0), costs_b=(10.0, 95.0), pool_a=6)["equal_cost"]
    assert pooled["members"] is None, f"a pool method was scored at equal cost: {pooled['members']}"
    assert "pool" in pooled["text"], f"the text does not say why: {pooled['text']!r}"


def test_the_benchmark_report_ends_with_the_verdicts():
    spec = importlib.util.spec_from_file_location("compare_bench", ROOT / "benchmarks" / "compare.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    pa, pb = _probs([0.8, 0.75], seed=9), _probs([0.7, 0.72], seed=9)
    v = _verdict(pa, pb)
    lines = bench.verdict_section([{"deepens": {}, "nes-rs": {"verdict": v}}])
    assert lines[-1] == f"- seed 0: NES-RS vs DeepEns: {v['text']}", f"the report's last line is {lines[-1]!r}"


# ----------------------------------------------------------------------------- the bundled demo
needs_demo = pytest.mark.skipif(not (DEMO_DIR / "demo.json").exists(), reason="no bundled demo (assets/demo)")


@needs_demo
def test_the_demos_own_ensemble_costs_what_its_steps_recorded():
    rd, own = RunDir(DEMO_DIR), verdict.own_record(DEMO_DIR)
    assert own["members"][0] == "alpha_star", f"the run's ensemble starts with {own['members'][0]}, not α*"
    assert sorted(own["members"]) == rd.finished_members(), "the run's ensemble is not its finished members"
    s = verdict.budget(own)["seconds"]
    regs = {rd.member(n).record().regularizer for n in own["members"]} - {None}
    assert s["search"] == pytest.approx(rd.search.seconds()), "search seconds are not the run's search's"
    assert s["hypernetwork"] == pytest.approx(sum(rd.hypernet(r).seconds() for r in regs)), \
        f"hypernetwork seconds are not those of {sorted(regs)}, the hypernetworks its members came from"
    assert s["members"] == pytest.approx(sum(MemberDir(rd.member(n).path).seconds() for n in own["members"])), \
        "members' seconds are not the sum of the members' training seconds"
    assert s["total"] == pytest.approx(s["search"] + s["hypernetwork"] + s["members"]), "total is not the sum"


@needs_demo
def test_the_demos_recorded_verdict_is_edgenes_against_deepens():
    res = read_json(DEMO_DIR / "demo.json")["results"]
    v, old = res["verdict"], res["edgenes_vs_deepens"]
    for k in ("accuracy", "nll"):
        for end in ("value", "lo", "hi"):
            assert v["equal_members"][k][end] == pytest.approx(old[k][end], abs=1e-9), \
                f"the verdict's {k} {end} differs from edgenes_vs_deepens"
    acc = Difference.from_dict(v["equal_members"]["accuracy"])
    assert ("within noise" in v["clauses"]["accuracy"]) == acc.within_noise, v["clauses"]["accuracy"]
    assert v["text"] == f"{v['sentences'][0]} {v['sentences'][2]}", "the text is not the two verdict sentences"


@needs_demo
def test_recomputing_the_demos_results_touches_only_the_named_keys(tmp_path):
    out = tmp_path / "demo"
    shutil.copytree(DEMO_DIR, out)
    record = read_json(out / "demo.json")
    bundled = record["results"].pop("verdict", None)
    record["results"]["shift"] = {"written by": "another step"}
    write_json(out / "demo.json", record)
    recompute_results(out)
    after = read_json(out / "demo.json")
    assert after["results"]["verdict"]["text"] == (bundled or {}).get("text"), \
        "the recomputed verdict is not the one bundled in assets/demo/demo.json (recompute it there)"
    assert after["results"]["shift"] == {"written by": "another step"}, "a result another step wrote was changed"
    for k, v in record["results"].items():
        assert after["results"][k] == v, f"results key {k!r} was rewritten"
    for k, v in record.items():
        assert k == "results" or after[k] == v, f"demo.json key {k!r} was rewritten"


# ----------------------------------------------------------------------------- the Compare page
@pytest.fixture
def home(home, monkeypatch):
    """conftest's fresh store, one worker at a time, the checkout's bundled demo."""
    monkeypatch.setenv("NES_MAX_WORKERS", "1")
    monkeypatch.delenv("NES_DEMO_DIR", raising=False)
    return home


@needs_demo
def test_compare_page_shows_the_demos_edgenes_row_and_verdict(home):
    at = AppTest.from_file(str(ROOT / "explorer_app.py"), default_timeout=180)
    at.run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value
    assert verdict.OWN in list(table["method"]), f"no row for the run's own ensemble: {list(table['method'])}"
    own = list(table["method"]).index(verdict.OWN)
    assert table["members"][own] == 5, f"the EdgeNES row shows {table['members'][own]} members, expected 5"
    assert table["networks trained"][own] == 6, f"EdgeNES trained {table['networks trained'][own]} networks, expected 6"
    said = " ".join(m.value for m in at.markdown)
    assert "EdgeNES (this run) is 0.26 points less accurate than DeepEns" in said, "the verdict is not shown"
    assert "within noise" in said, "the verdict does not say the accuracy difference is within noise"
    diffs = at.dataframe[1].value
    assert "95% CI" in diffs["Δ diversity (Jensen gap)"][0], "the ledger's diversity term has no interval"
    cost, = [json.loads(c.proto.spec) for c in at.get("plotly_chart")
             if "accuracy vs cost" in json.dumps(json.loads(c.proto.spec)["layout"].get("title", ""))]
    xs = [t["x"][0] for t in cost["data"]]
    assert len(xs) == 2, f"the accuracy-vs-cost chart draws {len(xs)} points, expected EdgeNES and DeepEns"
    lo, hi = cost["layout"]["xaxis"]["range"]
    assert lo <= 0 and hi > max(xs), f"the cost axis [{lo}, {hi}] does not hold 0 and every cost {xs}"
    ylo, yhi = cost["layout"]["yaxis"]["range"]
    ys = [t["y"][0] for t in cost["data"]]
    assert ylo < min(ys) and max(ys) < yhi and yhi - ylo < 0.1, f"the accuracy axis [{ylo}, {yhi}] does not fit {ys}"
    assert all(math.isfinite(x) and x > 0 for x in xs), f"a cost is not a positive number: {xs}"
