"""Levers on the strength-for-diversity trade (issue 27), each scored with the gain ledger.

An EdgeNES ensemble can lose to DeepEns (α*'s own seeds) although its members disagree more,
because its members are weaker: with the ledger's NLL identity (`ledger`), ensemble NLL = mean
member NLL − D. A lever changes which members are averaged or how, and its row says how much of
its NLL difference to the reference ensemble is member strength and how much diversity, each
with its paired bootstrap interval over the same test images. The levers here need no training:

- `select`: NES forward selection (Zaidi et al. 2021) of M members on **validation** NLL;
- `union`: a hybrid pool, α*'s seeds and EdgeNES members together, then `select`;
- `calibrate`: one temperature per member fitted on **validation**, applied before averaging;
- an equal-cost mix: M networks in all, α*'s seeds and EdgeNES members, the mix chosen on validation.

`plan` makes every choice (on validation), `evaluate` scores them (once per test set), `best` picks
the lever the product reports (on validation), and `report` writes all of it, clean and per shift
severity, to RUN/levers.json. `strong_and_diverse` and `predicted_selection` choose members before
any training, from the one-shot estimate. Nothing is chosen on the test set.
"""
from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..artifacts import ArtifactError, read_json
from ..corruptions import SEVERITIES
from ..layout import RunDir
from .diversity import ArchSample
from .ensemble import accuracy, fit_temperature, greedy_selection, temperature_scale
from .flaws import structural_flaws
from .ledger import ledger, ledger_difference
from .oneshot import OneShot, one_shot_probs
from .scoring import MemberProbs
from .shift import ShiftProbs, ShiftSettings, pooled, shift_probs, shifted_validation


def _needs_val(p: MemberProbs, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if p.val is None or p.val_y is None:
        raise ArtifactError(f"{what} needs the members' validation probabilities on the same images; "
                            f"members {', '.join(p.names)} have none in common")
    return p.val, p.val_y


def select(p: MemberProbs, size: int) -> MemberProbs:
    """The `size` members NES forward selection picks by validation NLL, in the order picked."""
    val, val_y = _needs_val(p, "forward selection")
    return p.subset([p.names[i] for i in greedy_selection(val, val_y, size, "nll")])


def union(*pools: tuple[str, MemberProbs], distinct: bool = True) -> MemberProbs:
    """One pool from several (prefix, probabilities) on the same test and validation images; each
    member named `prefix/name`. With `distinct`, a member identical to one already in the pool (the
    same network trained twice: a pipeline's α* member is DeepEns's seed 0) is left out, so forward
    selection cannot weight it twice. ArtifactError when the images differ."""
    first = pools[0][1]
    for prefix, p in pools[1:]:
        if not torch.equal(p.test_y, first.test_y):
            raise ArtifactError(f"pool {prefix!r} was tested on other images than {pools[0][0]!r}")
        if p.val_y is None or first.val_y is None or not torch.equal(p.val_y, first.val_y):
            raise ArtifactError(f"pool {prefix!r} was validated on other images than {pools[0][0]!r}")
    kept: list[tuple[str, int, torch.Tensor, torch.Tensor]] = []  # (name, epoch, test [N, K], val [Nv, K])
    for prefix, p in pools:
        for i, n in enumerate(p.names):
            if not distinct or not any(torch.equal(p.test[i], t) and torch.equal(p.val[i], v) for _, _, t, v in kept):
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


REFERENCE = "DeepEns (α* seeds)"
EDGENES, DEEPENS = "edgenes", "deepens"  # the pool's name prefixes


@dataclass(frozen=True)
class Choice:
    """One ensemble a lever builds, decided on validation alone: its members (pool names
    "edgenes/<member>" or "deepens/<member>"), whether per-member temperatures are applied, the
    networks trained for the pool it was picked from (its cost; hypernetworks counted apart), and
    its ensemble's validation NLL (how the best lever is picked, never the test NLL)."""

    lever: str
    members: tuple[str, ...]
    calibrated: bool
    networks: int
    val_nll: float
    edgenes: bool = True  # False: the reference, α*'s own seeds

    def to_dict(self) -> dict:
        return {"lever": self.lever, "members": list(self.members), "calibrated": self.calibrated,
                "networks": self.networks, "val_nll": self.val_nll, "edgenes": self.edgenes}


@dataclass(frozen=True)
class LeverRow:
    """One ensemble against the reference on the same test images: its ledger, and the paired
    differences (this − reference) of NLL, mean member NLL (strength) and D (diversity; the NLL
    difference = strength difference − diversity difference)."""

    lever: str
    members: tuple[str, ...]
    ledger: dict[str, float]
    gap: dict  # Difference.to_dict() per ledger term: "nll", "mean_member_nll", "diversity_nll", "accuracy"
    networks: int = 0  # networks trained for the pool the lever picked from

    def to_dict(self) -> dict:
        return {"lever": self.lever, "members": list(self.members), "ledger": self.ledger, "gap": self.gap,
                "networks": self.networks}


def lever_row(lever: str, ens: MemberProbs, reference: MemberProbs, networks: int = 0) -> LeverRow:
    """ENS scored once on the test split against REFERENCE (same images)."""
    if not torch.equal(ens.test_y, reference.test_y):
        raise ArtifactError(f"{lever}: the ensemble and the reference were tested on different images")
    return _row(lever, ens.names, ens.test, reference.test, ens.test_y, networks)


def _row(lever: str, names: tuple[str, ...], test: torch.Tensor, ref: torch.Tensor, y: torch.Tensor,
         networks: int, groups: int = 1) -> LeverRow:
    diff = ledger_difference(test, ref, y, groups)
    return LeverRow(lever, tuple(names), ledger(test, y),
                    {k: diff[k].to_dict() for k in ("nll", "mean_member_nll", "diversity_nll", "accuracy")}, networks)


def _val_nll(pool: MemberProbs, names: tuple[str, ...]) -> float:
    return ledger(pool.subset(names).val, pool.val_y)["nll"]


def _extend(pool: MemberProbs, base: list[str], candidates: list[str], k: int) -> tuple[str, ...]:
    """BASE plus k of CANDIDATES, added one at a time, each the one that lowers the ensemble's
    validation NLL most (forward selection from a fixed start)."""
    chosen, left = list(base), list(candidates)
    for _ in range(min(k, len(left))):
        pick = min(left, key=lambda n: _val_nll(pool, tuple(chosen + [n])))
        chosen.append(pick)
        left.remove(pick)
    return tuple(chosen)


def _equal_cost_mix(pool: MemberProbs, seeds: list[str], diverse: list[str], size: int) -> tuple[str, ...]:
    """`size` networks in all: α*'s first size − k seeds and k EdgeNES members other than α*
    (forward selection from the seeds, `_extend`), k ≥ 1 the one whose ensemble has the lowest
    validation NLL; every network of it has to be trained, like DeepEns's."""
    mixes = [_extend(pool, seeds[:size - k], diverse, k) for k in range(1, min(size - 1, len(diverse)) + 1)]
    return min(mixes, key=lambda m: _val_nll(pool, m)) if mixes else tuple(seeds[:size])


def plan(edgenes: MemberProbs, deepens: MemberProbs, size: int) -> tuple[MemberProbs, list[float], list[Choice]]:
    """Every training-free lever's ensemble at `size` members, chosen on validation only.

    Returns the pool (every member of both sets, named "edgenes/…" and "deepens/…", duplicates kept
    so each side scores as trained), one temperature per pool member fitted on validation, and the
    choices: DeepEns (its first `size` seeds: the reference) and, on the EdgeNES side, the members
    as trained, their forward selection, the hybrid pool's forward selection (duplicates dropped),
    an equal-cost mix (`size` networks), and the same with per-member temperatures."""
    pool = union((EDGENES, edgenes), (DEEPENS, deepens), distinct=False)
    distinct = union((DEEPENS, deepens), (EDGENES, edgenes)).names  # α* seed 0 once, as DeepEns's
    seeds = [f"{DEEPENS}/{n}" for n in deepens.names]
    edge = [f"{EDGENES}/{n}" for n in edgenes.names]
    diverse = [n for n in edge if n in distinct]
    cal, temps = calibrate(pool)
    picks = [(REFERENCE, tuple(seeds[:size]), len(seeds[:size]), False),
             ("EdgeNES as trained", tuple(edge[:size]), len(edge[:size]), True),
             ("EdgeNES, forward selection", select(pool.subset(edge), size).names, len(edge), True),
             ("hybrid pool (α* seeds + EdgeNES), forward selection", select(pool.subset(distinct), size).names,
              len(distinct), True),
             ("hybrid at equal cost (α* seeds + EdgeNES)", _equal_cost_mix(pool, seeds, diverse, size), size, True)]
    out = [Choice(lever, names, False, nets, _val_nll(pool, names), side) for lever, names, nets, side in picks]
    cal_picks = [(f"{REFERENCE}, per-member temperature", tuple(seeds[:size]), len(seeds[:size]), False),
                 ("EdgeNES, per-member temperature", tuple(edge[:size]), len(edge[:size]), True),
                 ("hybrid pool, per-member temperature, forward selection", select(cal.subset(distinct), size).names,
                  len(distinct), True)]
    out += [Choice(lever, names, True, nets, _val_nll(cal, names), side) for lever, names, nets, side in cal_picks]
    return pool, temps, out


def evaluate(pool: MemberProbs, temps: list[float], choices: list[Choice], test: torch.Tensor | None = None,
             y: torch.Tensor | None = None, groups: int = 1) -> list[LeverRow]:
    """Every EdgeNES-side choice scored against the reference with the same temperatures, on the
    pool's test split or on another test set TEST [M_pool, N, K] (pool order) with labels Y [N]
    (`groups` corrupted copies of the same source images: `ledger.ledger_difference`)."""
    test, y = (pool.test, pool.test_y) if test is None else (test, y)
    scaled = {False: test, True: torch.stack([temperature_scale(q, t) for q, t in zip(test, temps)])}
    at = lambda c: scaled[c.calibrated][[pool.names.index(n) for n in c.members]]  # noqa: E731
    refs = {c.calibrated: c for c in choices if not c.edgenes}
    return [_row(c.lever, c.members, at(c), at(refs[c.calibrated]), y, c.networks, groups)
            for c in choices if c.edgenes]


def lever_rows(edgenes: MemberProbs, deepens: MemberProbs, size: int) -> list[LeverRow]:
    """Every training-free lever at `size` members against DeepEns's first `size` seeds on the
    test split (`plan`, then `evaluate`)."""
    pool, temps, choices = plan(edgenes, deepens, size)
    return evaluate(pool, temps, choices)


def best(choices: list[Choice], max_networks: int | None = None) -> Choice:
    """The EdgeNES-side choice whose validation NLL is lowest against its reference's (the same
    temperatures on both sides), among those that trained at most `max_networks` networks: the
    lever the product reports, picked without the test set."""
    refs = {c.calibrated: c.val_nll for c in choices if not c.edgenes}
    fair = [c for c in choices if c.edgenes and (max_networks is None or c.networks <= max_networks)]
    return min(fair, key=lambda c: c.val_nll - refs[c.calibrated])


@dataclass
class Candidate:
    """An architecture offered without training: its sample on the diversity axis, its one-shot
    class probabilities on the search's validation slice [N, K] and their accuracy (`oneshot`)."""

    sample: ArchSample
    probs: torch.Tensor
    estimate: float

    @property
    def distance(self) -> float:
        return self.sample.distance or 0.0


def one_shot_candidates(setup: OneShot, samples: list[ArchSample], exclude: set) -> list[Candidate]:
    """One `Candidate` per distinct genotype of SAMPLES not in EXCLUDE (its most distant sample):
    what `strong_and_diverse` and `predicted_selection` choose from."""
    found: dict = {}
    far = lambda x: x.distance or 0.0  # noqa: E731
    for x in samples:
        if x.genotype not in exclude and (x.genotype not in found or far(x) > far(found[x.genotype])):
            found[x.genotype] = x
    y = setup.loader.y.cpu()
    out = []
    for g, x in found.items():
        p = one_shot_probs(setup, g)
        out.append(Candidate(x, p, accuracy(p, y)))
    return out


def strong_and_diverse(candidates: list[Candidate], star_estimate: float, n: int,
                       margin: float = 0.02) -> list[ArchSample]:
    """N architectures chosen without training: of the candidates (α* itself left out by the
    caller), those whose one-shot estimate is within `margin` of α*'s count as strong, and the N
    most distant of them are taken; when fewer are strong, the next best estimates fill in. The
    margin is fixed beforehand, never fitted to retrained scores."""
    strong = sorted((c for c in candidates if c.estimate >= star_estimate - margin), key=lambda c: -c.distance)
    rest = sorted((c for c in candidates if c.estimate < star_estimate - margin), key=lambda c: -c.estimate)
    return [c.sample for c in (strong + rest)[:n]]


def predicted_selection(candidates: list[Candidate], star_probs: torch.Tensor, labels: torch.Tensor,
                        n: int) -> list[ArchSample]:
    """N architectures chosen without training by forward selection of the **predicted** ensemble
    NLL (strength and diversity together): each architecture's one-shot probabilities on the
    validation slice stand in for its retrained member's, after one temperature per architecture
    fitted on that slice (shared-weight nets are miscalibrated by different amounts, and an
    overconfident one would dominate the average); α* is the first member, then `greedy_selection`
    adds the candidate that lowers the predicted ensemble's NLL most. star_probs, candidates'
    probs: [N, K]; labels [N]."""
    pool = [star_probs] + [c.probs for c in candidates]
    scaled = torch.stack([temperature_scale(p, fit_temperature(p, labels)) for p in pool])
    order = greedy_selection(scaled, labels, n + 1, "nll", start=(0,))
    return [candidates[i - 1].sample for i in order[1:]]


def choose_untrained(candidates: list[Candidate], star_probs: torch.Tensor, labels: torch.Tensor, n: int,
                     how: str, layers: int | None = None) -> list[ArchSample]:
    """N of the candidates to add to α* without training, by HOW: "strong" (`strong_and_diverse`
    against α*'s one-shot estimate) or "predicted" (`predicted_selection`). With LAYERS (the
    members' cells), candidates with a structural flaw (`flaws.structural_flaws`: the estimate is
    least trustworthy there) are chosen from only when the sound ones run out. star_probs [N, K],
    labels [N]: α*'s one-shot probabilities on the validation slice and its labels."""
    sound, flawed = [], []
    for c in candidates:
        (flawed if layers is not None and structural_flaws(c.sample.genotype, layers) else sound).append(c)
    chosen: list[ArchSample] = []
    for pool in (sound, flawed):
        want = n - len(chosen)
        if want > 0 and pool:
            chosen += (predicted_selection(pool, star_probs, labels, want) if how == "predicted"
                       else strong_and_diverse(pool, accuracy(star_probs, labels), want))
    return chosen


# ----------------------------------------------------------------------------- the saved report
LEVERS_FILE = "levers.json"  # RUN/levers.json: `report`'s output
VERSION = 1


def pool_key(sets: list[tuple[RunDir, list[str]]]) -> str:
    """What a levers report depends on: every member's name and the bytes of its last saved
    probabilities (a retrained or extra member changes it; a copied or cloned run keeps it)."""
    h = hashlib.sha256(f"levers v{VERSION}".encode())
    for run, names in sets:
        for n in names:
            files = run.member(n).probs_files()
            h.update(n.encode())
            h.update(files[-1][1].read_bytes() if files else b"-")
    return h.hexdigest()[:20]


def _baseline(run: RunDir, label: str) -> RunDir:
    method, _, seed = label.rpartition("_s")
    return run.baseline(method, int(seed or 0))


def report_sets(run_dir: str | Path, reference: str = "deepens_s0", source: str | None = None
                ) -> list[tuple[RunDir, list[str]]]:
    """[(the EdgeNES side: the run, or its baseline SOURCE e.g. "edgenes-edges_s0", with its
    finished members as trained: a baseline's whole pool), (the DeepEns baseline REFERENCE, its
    members)]; ArtifactError naming what to run when either has < 2 members."""
    run = RunDir(run_dir)
    side, base = (run if source is None else _baseline(run, source)), _baseline(run, reference)
    own, seeds = (d.members_as_trained() if d.path.is_dir() else [] for d in (side, base))
    if len(own) < 2:
        raise ArtifactError(f"{side.path}: the levers need ≥ 2 finished members; "
                            + ("retrain members first" if source is None else f"run the {source} baseline first"))
    if len(seeds) < 2:
        method = reference.rpartition("_s")[0]
        raise ArtifactError(f"{run.path}: the levers compare against {reference}; run "
                            f"`python -m nes baseline --run {run.path} --method {method}` first")
    return [(side, own), (base, seeds)]


def _rows_dict(rows: list[LeverRow]) -> list[dict]:
    return [r.to_dict() for r in rows]


def report(run_dir: str | Path, size: int, settings: ShiftSettings | None = None, device: str | None = None,
           progress: Callable[[str], None] | None = None, source: str | None = None,
           sets: list[tuple[RunDir, list[str]]] | None = None) -> dict:
    """Every lever (`plan`) of the run's EdgeNES members against its DeepEns at `size` members:
    chosen on validation, scored once on the full clean test set and, with SETTINGS, on the
    test corruptions pooled per severity (`shift.pooled`, the same choices and temperatures).
    `best`: the lever picked on validation NLL at equal members and at equal cost (≤ `size`
    networks trained); `key`: `pool_key`. SOURCE: a baseline's pool instead of the run's members;
    SETS: [(folder, EdgeNES members), (folder, DeepEns members)] given outright (a benchmark's).
    With SETTINGS also "shift_selected": every lever chosen again on the validation corruptions
    instead (`shift.shifted_validation`, the NES protocol for shift), scored per severity."""
    t0 = time.perf_counter()
    (side, own), (base, seeds) = sets or report_sets(run_dir, source=source)
    edgenes, deepens = MemberProbs.load(side.path, own), MemberProbs.load(base.path, seeds)
    size = min(size, len(seeds))
    out = {"kind": "levers", "version": VERSION, "size": size, "key": pool_key([(side, own), (base, seeds)]),
           "reference": "deepens_s0" if sets is None else base.path.name, "source": source}
    pool, temps, choices = plan(edgenes, deepens, size)
    out.update(_picks(pool, temps, choices, size))
    out["clean"] = {"images": int(len(pool.test_y)), "rows": _rows_dict(evaluate(pool, temps, choices))}
    if settings is not None:
        shifted = dataclasses.replace(settings, select="shifted")
        sp = [shift_probs(side.path, own, shifted, run_dir, device, progress),
              shift_probs(base.path, seeds, shifted, run_dir, device, progress)]
        out["shift"] = {"images": int(len(sp[0].y)), "seed": settings.seed,
                        "by_severity": _by_severity(pool, temps, choices, sp)}
        on_shift = [shifted_validation(edgenes, sp[0]), shifted_validation(deepens, sp[1])]
        pool_s, temps_s, choices_s = plan(*on_shift, size)
        out["shift_selected"] = {**_picks(pool_s, temps_s, choices_s, size),
                                 "by_severity": _by_severity(pool_s, temps_s, choices_s, sp)}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def _picks(pool: MemberProbs, temps: list[float], choices: list[Choice], size: int) -> dict:
    """A plan's choices, temperatures and picks (at equal members, at equal cost) as JSON."""
    return {"temperatures": dict(zip(pool.names, temps)), "choices": [c.to_dict() for c in choices],
            "best": {"equal_members": best(choices).lever, "equal_cost": best(choices, size).lever}}


def _by_severity(pool: MemberProbs, temps: list[float], choices: list[Choice], sp: list[ShiftProbs]) -> list[dict]:
    """Every choice scored on each severity's pooled test corruptions: [{"severity", "rows"}]."""
    return [{"severity": s, "rows": _rows_dict(evaluate(pool, temps, choices, *_pooled_pool(sp, s)))}
            for s in SEVERITIES]


def _pooled_pool(sets: list[ShiftProbs], severity: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The pool's probabilities [M_pool, C·N, K] on the C test corruptions at `severity` (pool
    order: the run's members, then DeepEns's, as `plan` builds it), their labels, and C."""
    (a, y), (b, y_b) = pooled(sets[0], severity), pooled(sets[1], severity)
    if not torch.equal(y, y_b):
        raise ArtifactError("the run's members and DeepEns's were shifted on different test images")
    return torch.cat([a, b]), y, len(y) // len(sets[0].y)


def load_report(run_dir: str | Path) -> dict | None:
    """RUN/levers.json, None when the run has none; ArtifactError naming the file and the command
    that remakes it when it is not a levers report of this version."""
    path = Path(run_dir) / LEVERS_FILE
    if not path.exists():
        return None
    rep = read_json(path, dict, "a levers report")
    best_ok = isinstance(rep.get("best"), dict) and {"equal_members", "equal_cost"} <= set(rep["best"])
    rows_ok = isinstance(rep.get("clean"), dict) and isinstance(rep["clean"].get("rows"), list)
    if rep.get("kind") != "levers" or rep.get("version") != VERSION or not (best_ok and rows_ok):
        raise ArtifactError(f"{path} is not a levers report of version {VERSION} (damaged, or from another "
                            f"version); remake it with `python -m nes levers --run {Path(run_dir)}`")
    return rep
