"""The one scoring path: members' saved probabilities loaded once (`MemberProbs`), scored once
(`score` → `EnsembleReport`), and every caller (evaluate, export, the live ensemble) agreeing."""
from __future__ import annotations

import pytest
import torch

from nes.artifacts import ArtifactError
from nes.layout import RunDir
from nes.method.ensemble import calibrated_metrics, ensemble_metrics
from helpers import predictor
from nes.method.scoring import MemberProbs, compare, compare_ledger, live_ensemble, score


def _members(val: list[torch.Tensor], test: list[torch.Tensor], val_y, test_y, names=None) -> MemberProbs:
    names = tuple(names or (f"m{i}" for i in range(len(test))))
    return MemberProbs(names, (0,) * len(names), torch.stack(test), test_y, torch.stack(val), val_y)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from helpers import digits_members

    return digits_members(tmp_path_factory.mktemp("scoring") / "run", ["a", "b", "c"], 7)


def test_best_member_is_chosen_on_validation_not_test():
    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, 10, (400,), generator=g)
    good, bad = predictor(y, torch.rand(400, generator=g) < 0.9), predictor(y, torch.rand(400, generator=g) < 0.5)
    # on validation m1 is the better member; on the test split m0 is: the comparison still uses m1
    report = score(_members([bad, good], [good, bad], y, y))
    assert report.vs_best["best_member"] == "m1", "the best member must be chosen on validation NLL"
    ens_acc = float((torch.stack([good, bad]).mean(0).argmax(1) == y).double().mean())
    best_acc = float((bad.argmax(1) == y).double().mean())
    assert report.gain("accuracy").value == pytest.approx(100 * (ens_acc - best_acc)), "gain is not ens − best"


def test_report_holds_every_member_and_the_interval_covers_its_value():
    g = torch.Generator().manual_seed(4)
    y = torch.randint(0, 10, (300,), generator=g)
    members = [predictor(y, torch.rand(300, generator=g) < q) for q in (0.7, 0.8, 0.6)]
    report = score(_members(members, members, y, y))
    assert list(report.members) == ["m0", "m1", "m2"], "per-member metrics are missing a member"
    assert report.images == 300, "report.images is not the test set's size"
    for metric in ("accuracy", "nll"):
        d = report.gain(metric)
        assert d.lo <= d.value <= d.hi, f"{metric}: the interval does not hold its own value"
    assert report.calibrated["accuracy"] == report.metrics["accuracy"], "temperature scaling changed the argmax"


def test_one_member_has_no_gain_and_different_validation_images_give_none():
    g = torch.Generator().manual_seed(5)
    y = torch.randint(0, 10, (100,), generator=g)
    p = predictor(y, torch.rand(100, generator=g) < 0.8)
    assert score(_members([p], [p], y, y)).vs_best is None, "one member cannot be compared with its best member"
    no_val = MemberProbs(("a", "b"), (0, 0), torch.stack([p, p]), y, None, None)
    report = score(no_val)
    assert report.vs_best is None, "without a shared validation split there is no best member"
    assert report.calibrated is None, "without a shared validation split there is no temperature"


def test_score_takes_another_test_set_of_the_same_members():
    g = torch.Generator().manual_seed(6)
    y, y2 = torch.randint(0, 10, (200,), generator=g), torch.randint(0, 10, (150,), generator=g)
    val = [predictor(y, torch.rand(200, generator=g) < q) for q in (0.9, 0.6)]
    shifted = torch.stack([predictor(y2, torch.rand(150, generator=g) < q) for q in (0.5, 0.7)])
    members = _members(val, val, y, y)
    report = score(members, shifted, y2, split="shifted")
    assert report.split == "shifted", "the report does not name its test set"
    assert report.images == 150, "the report was not scored on the other test set"
    assert report.metrics == ensemble_metrics(shifted, y2), "the ensemble was not scored on the other test set"
    assert report.vs_best["best_member"] == "m0", "the best member must still come from validation"
    with pytest.raises(ValueError, match="expected 2"):
        score(members, shifted[:1], y2)


def test_compare_is_zero_against_itself_and_none_on_other_images():
    g = torch.Generator().manual_seed(7)
    y = torch.randint(0, 10, (120,), generator=g)
    p = [predictor(y, torch.rand(120, generator=g) < 0.8) for _ in range(2)]
    a = _members(p, p, y, y)
    for metric, d in compare(a, a).items():
        assert d.value == 0.0, f"{metric}: an ensemble differs from itself"
    other = _members(p, [q[:100] for q in p], y, y[:100])
    assert compare(a, other) is None, "ensembles on different test images were compared"
    for term, d in compare_ledger(a, a).items():
        assert d.value == 0.0, f"ledger term {term}: an ensemble differs from itself"
    assert compare_ledger(a, other) is None, "ledgers on different test images were compared"


def test_members_on_other_test_images_are_refused_by_name(run):
    from safetensors.torch import load_file, save_file

    labels = RunDir(run).member("c").labels
    saved = labels.read_bytes()
    try:  # member c now claims other test labels
        y = load_file(labels)
        save_file({"val_y": y["val_y"], "test_y": (y["test_y"] + 1) % 10}, labels)
        with pytest.raises(ArtifactError, match="a, b, c.*different test images"):
            MemberProbs.load(run, ["a", "b", "c"])
    finally:
        labels.write_bytes(saved)


def test_evaluate_export_and_live_ensemble_report_the_same_numbers(run):
    from nes.export.write import plan_export
    from nes.runs.tasks import evaluate_task

    names = ["a", "b", "c"]
    expected = score(MemberProbs.load(run, names))
    ev = evaluate_task(run, {"members": names, "write": False})
    manifest = plan_export(run, names).manifest["ensemble"]
    live = live_ensemble(run, names).report
    for source, metrics, vs in (("evaluate", ev["ensemble"], ev["vs_best_member"]),
                                ("export", manifest["metrics"], manifest["vs_best_member"]),
                                ("live ensemble", live.metrics, live.vs_best)):
        assert metrics == expected.metrics, f"{source}: ensemble metrics differ from score()"
        assert vs == expected.vs_best, f"{source}: the gain over the best member differs from score()"
    assert manifest["calibrated"] == expected.calibrated, "export: temperature scaling differs from score()"
    assert ev["ledger"] == {"corruption": "clean", "severity": 0, **expected.ledger}, \
        "evaluate: the gain ledger differs from score() (or is not a clean row as shift gives)"


def test_a_live_page_scores_the_members_once_per_state_of_their_files(tmp_path):
    import os

    from helpers import digits_members

    run = digits_members(tmp_path / "run", ["a", "b"], 3)
    first = live_ensemble(run, ["a", "b"])
    assert live_ensemble(run, ["a", "b"]) is first, "a poll with no new epoch scored the members again"
    _, f = RunDir(run).member("b").probs_files()[-1]
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # as a worker writes a new epoch
    assert live_ensemble(run, ["a", "b"]) is not first, "a member's new epoch did not refresh the live ensemble"


def test_a_training_members_new_epoch_reuses_the_finished_members_scoring(tmp_path):
    """At each epoch of a member still training, the live page rescores; the headline (the finished
    members' bootstrap and temperature, ~0.4 s) must be reused, the training member's row refreshed."""
    import os

    from helpers import digits_members

    run = digits_members(tmp_path / "run", ["a", "b", "c"], 11)
    c = RunDir(run).member("c")
    c.weights.unlink()  # c is still training
    first = live_ensemble(run, ["a", "b", "c"])
    _, f = c.probs_files()[-1]
    f.unlink()  # the same member one epoch earlier
    before = live_ensemble(run, ["a", "b", "c"])
    assert before is not first, "the training member's epochs changed but the live ensemble was reused"
    assert before.report is first.report, "the finished members were scored again though only c's files changed"
    assert before.training[0][1] == first.training[0][1] - 1, "the training member's epochs saved were not refreshed"
    _, a_last = RunDir(run).member("a").probs_files()[-1]
    st = a_last.stat()
    os.utime(a_last, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert live_ensemble(run, ["a", "b", "c"]).report is not first.report, \
        "a finished member's file changed but its old scoring was kept"


def test_live_ensemble_keeps_unfinished_members_out_of_the_headline(tmp_path):
    from helpers import digits_members

    run = digits_members(tmp_path / "run", ["a", "b", "c"], 7)
    c = RunDir(run).member("c")  # still in its first epoch: one saved epoch, no final weights yet
    c.weights.unlink()
    for _, f in c.probs_files()[1:]:
        f.unlink()
    ens = live_ensemble(run, ["a", "b", "c"])
    assert sorted(ens.finished) == ["a", "b"], "finished members"
    assert [n for n, _, _ in ens.training] == ["c"], "members still training"
    assert ens.training[0][1] == 1, "epochs saved by the member in training"
    done = MemberProbs.load(run, ens.finished)
    assert ens.metrics == ensemble_metrics(done.test, done.test_y), "the headline must hold finished members only"
    assert [n for n, _ in ens.joins] == ens.finished, "joins follow the finishing order"
    assert ens.joins[0][1]["size"] == 1.0, "the first join is one member"
    assert ens.vs_best["best_member"] in ("a", "b"), "the best member is one of the finished members"
    assert ens.report.images == done.test_y.shape[0], "report.images is the test set's size"
    expected = calibrated_metrics(done.val, done.val_y, done.test, done.test_y)
    assert {k: ens.calibrated[k] for k in expected} == expected, "T must be fitted on the finished members"
    only_c = live_ensemble(run, ["c"])
    assert only_c.report is None, "no member finished: there is no headline"
    assert only_c.finished == [], "no member finished"


def test_temperature_needs_enough_validation_images():
    g = torch.Generator().manual_seed(8)
    y = torch.randint(0, 10, (600,), generator=g)
    p = [predictor(y, torch.rand(600, generator=g) < q) for q in (0.8, 0.7)]
    one = score(_members([q[:1] for q in p], p, y[:1], y))
    assert one.calibrated is None, "a temperature was fitted on one validation image"
    assert any("validation image" in n for n in one.notes), f"the report does not say why T is missing: {one.notes}"
    few = score(_members([q[:50] for q in p], p, y[:50], y))
    assert few.calibrated["val_images"] == 50, "the report does not say how many images T was fitted on"
    assert "only 50 validation images" in few.calibrated["warning"], "T on few images is shown without a warning"
    enough = score(_members(p, p, y, y))
    assert "warning" not in enough.calibrated, "a warning on T fitted on 600 validation images"


def test_non_finite_or_out_of_range_probabilities_are_refused_naming_the_file(run, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    for bad, why in ((float("nan"), "NaN or infinite"), (1.5, "outside \\[0, 1\\]")):
        copy = tmp_path / f"run_{why[:3]}"
        shutil.copytree(run, copy)
        epoch, path = RunDir(copy).member("b").probs_files()[-1]
        t = load_file(path)
        t["test"][0, 0] = bad
        save_file(t, path)
        with pytest.raises(ArtifactError, match=f"members/b/.*{why}"):
            MemberProbs.load(copy, ["a", "b"])
