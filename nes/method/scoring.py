"""Scoring a set of members from their saved probabilities: the one place that ensembles them.

Every member saves its validation and test probabilities after each epoch (`nes.method.train`):
RUN/members/NAME/probs/epoch_XXX.safetensors ({"val": [Nv, K], "test": [N, K]}) and
labels.safetensors ({"val_y": [Nv], "test_y": [N]}). `MemberProbs` loads a set of members once
and checks their labels once; `score` turns it into an `EnsembleReport`: the ensemble's metrics,
each member's, the gain over the best member (chosen by validation NLL, never on the test set)
with its paired bootstrap interval, and temperature scaling (T fitted on validation). `evaluate`,
the export manifest, the baselines, the demo's results and the app's live ensemble all call it,
so they agree. `score` takes any test set of the same members (a shifted copy, say): the
validation split only chooses the best member and fits T.

No data or model is needed, so all of this works while members still train. Files are cached by
(path, mtime): a page that reruns every two seconds reads each epoch once.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..artifacts import ArtifactError, load_tensors
from ..layout import RunDir
from .ensemble import (calibrated_metrics, ensemble_metrics, greedy_selection, member_metrics, pairwise_disagreement,
                       predictive_js)
from .ledger import ledger, ledger_difference
from .stats import Difference, best_member_index, paired_difference

Epochs = list[tuple[int, dict[str, torch.Tensor]]]
"""[(epoch, {"val": [Nv, K], "test": [N, K]} float32)] of one member, in epoch order."""

# Temperature scaling fits one number on the validation split; on a handful of images it fits noise
# (on 1 image: test NLL 2.35 → 3.00). Below the first bound no T is fitted, below the second it
# is shown with a warning.
MIN_CALIBRATION_IMAGES = 20
FEW_CALIBRATION_IMAGES = 500

_CACHE: dict[tuple[str, float], dict[str, torch.Tensor]] = {}
_SAME_DATA = "an ensemble needs members trained on the same dataset, limits and split seed"


def _load(path: Path) -> dict[str, torch.Tensor]:
    """A member's probabilities or labels file, checked once: probabilities finite and in [0, 1]."""
    key = (str(path), path.stat().st_mtime)
    if key not in _CACHE:
        if len(_CACHE) > 512:
            _CACHE.clear()
        tensors, _ = load_tensors(path, finite=True)
        for k, v in tensors.items():
            if v.is_floating_point() and v.numel() and not (0.0 <= float(v.min()) and float(v.max()) <= 1.0):
                raise ArtifactError(f"{path}: {k!r} holds values outside [0, 1], not probabilities; retrain the member")
        _CACHE[key] = {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}
    return _CACHE[key]


def member_epochs(run_dir: str | Path, name: str) -> tuple[Epochs, dict[str, torch.Tensor]]:
    """Every saved epoch of member NAME and its labels {"val_y", "test_y"} (cached; live while it trains)."""
    d = RunDir(run_dir).member(name)
    if not d.exists():
        raise ArtifactError(f"member {name!r}: no folder {d.path}")
    epochs = [(e, _load(f)) for e, f in d.probs_files()]
    return epochs, (_load(d.labels) if d.labels.exists() else {})


def _shared(labels: dict[str, dict[str, torch.Tensor]], key: str) -> torch.Tensor | None:
    """The `key` labels all members share, or None when one member's differ (or are missing)."""
    ref = next(iter(labels.values())).get(key)
    if ref is None or any(key not in y or not torch.equal(y[key], ref) for y in labels.values()):
        return None
    return ref


@dataclass(frozen=True)
class MemberProbs:
    """A set of members' saved probabilities at one epoch each, labels checked once.

    test [M, N, K] and val [M, Nv, K] float32; test_y [N], val_y [Nv] int64. val and val_y are
    None when the members were validated on different images (no best member, no T then)."""

    names: tuple[str, ...]
    epochs: tuple[int, ...]
    test: torch.Tensor
    test_y: torch.Tensor
    val: torch.Tensor | None
    val_y: torch.Tensor | None

    @classmethod
    def load(cls, run_dir: str | Path, names: list[str] | tuple[str, ...], epoch: int | None = None) -> "MemberProbs":
        """Members NAMES of run RUN_DIR at `epoch` (default: each one's last saved epoch).
        ArtifactError when a member has no such probabilities or the test images differ."""
        if not names:
            raise ArtifactError(f"{run_dir}: no members to score")
        picked: dict[str, tuple[int, dict[str, torch.Tensor]]] = {}
        labels: dict[str, dict[str, torch.Tensor]] = {}
        for n in names:
            epochs, labels[n] = member_epochs(run_dir, n)
            at = [(e, p) for e, p in epochs if epoch is None or e == epoch]
            if not at:
                when = "yet (has it finished an epoch?)" if epoch is None else f"for epoch {epoch}"
                raise ArtifactError(f"member {n!r} of {run_dir}: no saved probabilities {when}")
            picked[n] = at[-1]
        return cls.from_epochs(picked, labels)

    @classmethod
    def from_epochs(cls, picked: dict[str, tuple[int, dict[str, torch.Tensor]]],
                    labels: dict[str, dict[str, torch.Tensor]]) -> "MemberProbs":
        """From each member's (epoch, probabilities) and its labels (checked here)."""
        test_y = _shared(labels, "test_y")
        if test_y is None:
            raise ArtifactError(f"members {', '.join(picked)} were evaluated on different test images; {_SAME_DATA}")
        val_y = _shared(labels, "val_y")
        return cls(tuple(picked), tuple(e for e, _ in picked.values()),
                   torch.stack([p["test"] for _, p in picked.values()]), test_y,
                   None if val_y is None else torch.stack([p["val"] for _, p in picked.values()]), val_y)

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, names: list[str] | tuple[str, ...]) -> "MemberProbs":
        """The same probabilities for `names` only, in that order."""
        idx = [self.names.index(n) for n in names]
        return MemberProbs(tuple(names), tuple(self.epochs[i] for i in idx), self.test[idx], self.test_y,
                           None if self.val is None else self.val[idx], self.val_y)

    def member_metrics(self, split: str = "test") -> dict[str, dict[str, float]]:
        """{name: accuracy, nll, ece, brier} of every member on `split` ("test" or "val")."""
        probs, y = (self.test, self.test_y) if split == "test" else (self.val, self.val_y)
        if probs is None:
            raise ArtifactError(f"members {', '.join(self.names)} were validated on different images; {_SAME_DATA}")
        return {n: member_metrics(p, y) for n, p in zip(self.names, probs)}


@dataclass(frozen=True)
class EnsembleReport:
    """The mean-probability ensemble of a set of members, scored on one test set.

    vs_best: the ensemble minus its best member (lowest validation NLL) on the test images,
    {"best_member", "accuracy", "nll"} with `stats.Difference` dicts; None for one member or
    without a shared validation split. calibrated: `ensemble.calibrated_metrics` (T fitted on
    validation, applied to the test set); None without a shared validation split."""

    names: tuple[str, ...]
    split: str
    images: int
    metrics: dict[str, float]
    members: dict[str, dict[str, float]]
    vs_best: dict | None
    calibrated: dict | None
    notes: tuple[str, ...] = ()  # what could not be computed, or holds with a caveat, and why
    ledger: dict[str, float] | None = None  # member strength vs diversity (`ledger.TERMS`)

    def gain(self, metric: str) -> Difference | None:
        """The ensemble's `metric` ("accuracy" or "nll") minus its best member's, with its interval."""
        return Difference.from_dict(self.vs_best[metric]) if self.vs_best else None


def score(members: MemberProbs, test: torch.Tensor | None = None, test_y: torch.Tensor | None = None,
          split: str = "test", groups: int = 1) -> EnsembleReport:
    """Score the ensemble of `members` on their test split, or on another test set of the same
    members (test [M, N, K], test_y [N], named `split`; `groups` corrupted copies of the same
    images, drawn together by the bootstrap). Validation only picks the best member and fits the
    temperature."""
    test, test_y = (members.test, members.test_y) if test is None else (test, test_y)
    if test.shape[0] != len(members):
        raise ValueError(f"test set {split!r} has {test.shape[0]} members' probabilities, expected {len(members)}")
    metrics = ensemble_metrics(test, test_y)
    per_member = {n: member_metrics(p, test_y) for n, p in zip(members.names, test)}
    vs_best, calibrated, notes = None, None, []
    if members.val is None:
        notes.append("the members were validated on different images: no best member and no temperature scaling")
    else:
        vs_best = vs_best_member(members, test, test_y, groups) if len(members) > 1 else None
        calibrated, note = temperature(members, test, test_y)
        notes += [note] if note else []
    return EnsembleReport(members.names, split, int(test_y.shape[0]), metrics, per_member, vs_best, calibrated,
                          tuple(notes), ledger(test, test_y))


def temperature(members: MemberProbs, test: torch.Tensor, test_y: torch.Tensor) -> tuple[dict | None, str | None]:
    """(`ensemble.calibrated_metrics` with `val_images` and, on few images, a `warning`; or None
    below MIN_CALIBRATION_IMAGES) and the note saying why T is missing or uncertain."""
    n = int(members.val_y.shape[0])
    if n < MIN_CALIBRATION_IMAGES:
        return None, (f"no temperature scaling: {n} validation image(s), at least {MIN_CALIBRATION_IMAGES} needed "
                      "to fit T (raise val_fraction or limit)")
    out = {**calibrated_metrics(members.val, members.val_y, test, test_y), "val_images": n}
    if n < FEW_CALIBRATION_IMAGES:
        out["warning"] = f"T fitted on only {n} validation images: it may not hold on new data"
    return out, out.get("warning")


def vs_best_member(members: MemberProbs, test: torch.Tensor, test_y: torch.Tensor, groups: int = 1) -> dict:
    """The ensemble of test [M, N, K] minus its best member, the one with the lowest validation
    NLL (picking it on the test set would favour it): {"best_member", "accuracy", "nll"}."""
    i = best_member_index(members.val, members.val_y)
    diff = paired_difference(test.to(torch.float64).mean(0), test[i], test_y, groups=groups)
    return {"best_member": members.names[i], **{k: v.to_dict() for k, v in diff.items()}}


def compare(a: MemberProbs, b: MemberProbs) -> dict[str, Difference] | None:
    """{"accuracy", "nll"}: A's ensemble minus B's on the same test images, each with its paired
    bootstrap interval; None when the two were tested on different images."""
    if not _same_test_images(a, b):
        return None
    return paired_difference(a.test.mean(0), b.test.mean(0), a.test_y)


def compare_ledger(a: MemberProbs, b: MemberProbs) -> dict[str, Difference] | None:
    """A − B of every ledger term (member strength, diversity, the ensemble) on the same test
    images, each with its paired bootstrap interval; None when the test images differ."""
    return ledger_difference(a.test, b.test, a.test_y) if _same_test_images(a, b) else None


def _same_test_images(a: MemberProbs, b: MemberProbs) -> bool:
    return a.test_y.shape == b.test_y.shape and torch.equal(a.test_y, b.test_y)


# ----------------------------------------------------------------------------- curves and matrices
def member_curve(run_dir: str | Path, name: str, split: str = "test") -> list[tuple[int, dict[str, float]]]:
    """Per finished epoch: metrics of member NAME's saved probabilities (live while it trains);
    computed once per state of its files."""
    return _memo("member_curve", run_dir, [name], lambda: _member_curve(run_dir, name, split), split)


def _member_curve(run_dir: str | Path, name: str, split: str) -> list[tuple[int, dict[str, float]]]:
    epochs, labels = member_epochs(run_dir, name)
    return [(e, member_metrics(p[split], labels[f"{split}_y"])) for e, p in epochs]


def members_stamp(run_dir: str | Path, names: list[str] | tuple[str, ...]) -> tuple:
    """What the saved-probability views of members NAMES depend on, cheaply: per member its saved
    epochs' files and modification times and whether (and when) its weights were written. A live
    page polls every few seconds; an epoch ends every minute or so."""
    run, out = RunDir(run_dir), []
    for n in names:
        d = run.member(n)
        files = tuple((e, f.stat().st_mtime_ns) for e, f in d.probs_files())
        out.append((n, files, d.weights.stat().st_mtime_ns if d.weights.exists() else None))
    return tuple(out)


_VIEWS: dict[tuple, object] = {}


def _memo(kind: str, run_dir: str | Path, names: list[str], compute, *extra):
    """compute() once per (kind, run, names, extra, the members' stamp): a live page re-reads
    the same finished epochs every poll, and scoring them (bootstrap, T) costs ~0.4 s."""
    key = (kind, str(run_dir), tuple(names), extra, members_stamp(run_dir, names))
    if key not in _VIEWS:
        if len(_VIEWS) > 64:
            _VIEWS.clear()
        _VIEWS[key] = compute()
    return _VIEWS[key]


def ensemble_curve(run_dir: str | Path, names: list[str], split: str = "test") -> list[tuple[int, dict[str, float]]]:
    """Ensemble metrics per epoch e: every member contributes its probabilities of epoch e, or
    of its last saved epoch if it has not reached e yet (what the ensemble would be right then).
    Members with no saved epoch yet are left out; members must share the same labels."""
    return _memo("ensemble_curve", run_dir, names, lambda: _ensemble_curve(run_dir, names, split), split)


def _ensemble_curve(run_dir: str | Path, names: list[str], split: str) -> list[tuple[int, dict[str, float]]]:
    loaded = {n: member_epochs(run_dir, n) for n in names}
    loaded = {n: v for n, v in loaded.items() if v[0]}
    if not loaded:
        return []
    y = _shared({n: lab for n, (_, lab) in loaded.items()}, f"{split}_y")
    if y is None:
        raise ArtifactError(f"members {', '.join(loaded)} were evaluated on different {split} images; {_SAME_DATA}")
    last = max(e for epochs, _ in loaded.values() for e, _ in epochs)
    out = []
    for e in range(last + 1):
        stack = [upto[-1][split] for epochs, _ in loaded.values() if (upto := [p for ep, p in epochs if ep <= e])]
        if stack:
            out.append((e, ensemble_metrics(torch.stack(stack), y)))
    return out


def size_curve(run_dir: str | Path, names: list[str]) -> list[tuple[int, dict[str, float]]]:
    """Test metrics of the ensemble of the first m members (m = 1..len(names)), latest epoch of each."""
    if not names:
        return []
    p = MemberProbs.load(run_dir, names)
    return [(m, ensemble_metrics(p.test[:m], p.test_y)) for m in range(1, len(names) + 1)]


def members_predictive_js(run_dir: str | Path, names: list[str]) -> torch.Tensor:
    """[n, n] predictive JS between members' latest test probabilities."""
    return predictive_js(MemberProbs.load(run_dir, names).test)


def members_disagreement(run_dir: str | Path, names: list[str]) -> torch.Tensor:
    """[n, n] fraction of test images on which two members' latest predictions differ."""
    return pairwise_disagreement(MemberProbs.load(run_dir, names).test)


def greedy_names(run_dir: str | Path, names: list[str], size: int | None = None, metric: str = "nll") -> list[str]:
    """NES forward selection on the validation split (latest epoch of each member) → names in order."""
    p = MemberProbs.load(run_dir, names)
    if p.val is None:
        raise ArtifactError(f"greedy selection needs members validated on the same images; {_SAME_DATA}")
    return [names[i] for i in greedy_selection(p.val, p.val_y, size or len(names), metric)]


# ----------------------------------------------------------------------------- the app's live ensemble
@dataclass(frozen=True)
class LiveEnsemble:
    """The live ensemble of chosen members, honestly split: the headline (`report`) is the
    ensemble of the members that *finished* training; members still training are listed apart
    with their latest epoch. `joins[m-1]` = (member that joined, test metrics of the ensemble of
    the first m finished members, in the order they finished)."""

    finished: list[str]
    training: list[tuple[str, int, dict[str, float]]]  # (name, epochs saved, latest test metrics)
    report: EnsembleReport | None  # None: no member finished yet
    joins: list[tuple[str, dict[str, float]]]

    @property
    def metrics(self) -> dict[str, float] | None:
        return self.report.metrics if self.report else None

    @property
    def vs_best(self) -> dict | None:
        return self.report.vs_best if self.report else None

    @property
    def calibrated(self) -> dict[str, float] | None:
        return self.report.calibrated if self.report else None


def live_ensemble(run_dir: str | Path, names: list[str]) -> LiveEnsemble:
    """Score the chosen members from their saved probabilities (see `LiveEnsemble`); computed once
    per state of their files."""
    return _memo("live_ensemble", run_dir, names, lambda: _live_ensemble(run_dir, names))


def _live_ensemble(run_dir: str | Path, names: list[str]) -> LiveEnsemble:
    run = RunDir(run_dir)
    loaded = {n: member_epochs(run_dir, n) for n in names}
    loaded = {n: v for n, v in loaded.items() if v[0]}
    if not loaded:
        return LiveEnsemble([], [], None, [])
    all_now = MemberProbs.from_epochs({n: e[-1] for n, (e, _) in loaded.items()}, {n: y for n, (_, y) in loaded.items()})
    done = sorted((n for n in loaded if run.member(n).finished), key=lambda n: run.member(n).weights.stat().st_mtime)
    now = all_now.member_metrics()
    training = [(n, len(loaded[n][0]), now[n]) for n in loaded if n not in done]
    if not done:
        return LiveEnsemble([], training, None, [])
    # scoring the finished members (bootstrap intervals, T: ~0.4 s) is kept while only the files of
    # members still training change, i.e. at each of their epochs
    report, joins = _memo("finished_ensemble", run_dir, done, lambda: _finished_ensemble(all_now.subset(done)))
    return LiveEnsemble(done, training, report, joins)


def _finished_ensemble(fin: MemberProbs) -> tuple[EnsembleReport, list[tuple[str, dict[str, float]]]]:
    """The scored ensemble of the finished members FIN (in the order they finished) and its joins."""
    joins = [(n, ensemble_metrics(fin.test[:m], fin.test_y)) for m, n in enumerate(fin.names, start=1)]
    return score(fin), joins
