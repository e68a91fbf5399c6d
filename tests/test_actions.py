"""What the app's buttons do and what its notes say, without a browser (nes.explorer.actions, notes)."""
import shutil
from types import SimpleNamespace

import pytest

from nes.artifacts import write_json
from nes.explorer import actions
from nes.explorer.demo import DEMO_DIR
from nes.explorer.notes import ensemble_note, member_origin
from nes.explorer.runview import RunView
from nes.layout import RunDir
from nes.method.stats import Difference
from nes.runs.store import Store
from nes.runs.tasks import sample_member

needs_demo = pytest.mark.skipif(not (DEMO_DIR / "demo.json").exists(), reason="no bundled demo (assets/demo)")


@pytest.fixture
def queued(monkeypatch):
    """Jobs the actions would queue, recorded instead of started: [(run, kind, config, deps)]."""
    jobs: list = []

    def fake_submit(store, run, kind, config, deps=()):
        jobs.append((run, kind, config, list(deps)))
        return len(jobs)

    monkeypatch.setattr(actions, "submit", fake_submit)
    return jobs


def test_start_hypernet_checks_the_settings_before_queueing(tmp_path, queued):
    store = Store(tmp_path / "home")
    for sets, culprit in (({"epochs": "zero"}, "epochs"), ({"pivots": "1"}, "pivots")):
        with pytest.raises(ValueError, match=culprit):
            actions.start_hypernet(store, "r", "edges", "quick", sets)
    with pytest.raises(ValueError, match="regularizer 'nope'"):
        actions.start_hypernet(store, "r", "nope", "quick", {})
    assert queued == [], f"a bad setting queued {queued}"
    job = actions.start_hypernet(store, "r", "js-target", "smoke", {"pivots": "4"}, after=[7])
    wanted = {"preset": "smoke", "regularizer": "js-target", "set": {"pivots": "4"}}
    assert queued == [("r", "hypernet", wanted, [7])], f"queued {queued}"
    assert job == 1, "the job id is returned"


def test_member_choice_keeps_the_users_choice():
    assert actions.member_choice(None, [], ["a", "b"]) == ["a", "b"], "every member on a first visit"
    assert actions.member_choice(["b"], ["a", "b"], ["a", "b"]) == ["b"], "the user's choice kept"
    assert actions.member_choice(["b", "a"], ["a", "b"], ["a", "b", "c"]) == ["b", "a", "c"], "a new member joins"
    assert actions.member_choice(["b", "a"], ["a", "b"], ["a"]) == ["a"], "a vanished member leaves"
    assert actions.member_choice([], ["a", "b"], ["a", "b"]) == [], "an emptied choice stays empty"
    assert actions.member_choice(["c"], ["a"], ["a", "c"]) == ["c"], "a chosen new member is not doubled"


def test_member_options_list_members_then_pending_jobs():
    jobs = [SimpleNamespace(kind="retrain", config=c) for c in ({"name": "b"}, {"name": "x"}, {"sample_index": 0})]
    assert actions.member_options(["a", "b"], jobs) == ["a", "b", "x"], "members, then new jobs' members"


@needs_demo
def test_a_js_member_at_the_lambda_of_an_edges_member_is_not_already_trained(tmp_path, queued):
    """The demo's `lam_1_00` is the edges member at λ = 1 (seed 4): js at λ = 1 is another member."""
    run = tmp_path / "demo"
    shutil.copytree(DEMO_DIR, run)
    view = RunView(run)
    seed = RunDir(run).member("lam_1_00").record().seed
    res = actions.submit_members(Store(tmp_path / "home"), str(run), view, "js", [1.0], seed)
    assert [n for _, n in res.started] == [f"js_lam_1_00_s{seed}"], f"started {res.started}, skipped {res.skipped}"
    assert queued[0][2]["regularizer"] == "js", f"queued member's regularizer: {queued[0][2]}"
    assert queued[0][2]["seed"] == seed, f"queued member's seed: {queued[0][2]}"
    again = actions.submit_members(Store(tmp_path / "home"), str(run), view, "edges", [1.0], seed)
    assert again.skipped == ["lam_1_00"], f"the edges member at λ = 1 (lam_1_00) retrained: {again}"
    with pytest.raises(ValueError, match="choose at least one λ value"):
        actions.submit_members(Store(tmp_path / "home"), str(run), view, "js", [], 0)


def test_pipeline_members_are_named_from_their_sample(tmp_path):
    write_json(RunDir(tmp_path).samples_json, {"regularizer": "js-target", "samples": [{"lam": 0.25}, {"lam": 0.5}]})
    named = sample_member(tmp_path, {"sample_index": 1, "seed": 1})
    assert named == {"name": "js-target_lam_0_50_s1", "lam": 0.5, "regularizer": "js-target"}, f"named {named}"
    assert sample_member(tmp_path, {"name": "x"}) == {}, "a member not from samples.json"


def test_member_origin_says_the_hypernetwork_beside_lambda():
    assert member_origin(1.0, "js") == "js, λ = 1", "a member of the js hypernetwork"
    assert "not recorded" in member_origin(1.0, None), "a member of an older run"
    assert "α*" in member_origin(None, None), "a member without λ"


def _report(ens: dict, best: dict, temperature: float | None) -> SimpleNamespace:
    gain = Difference("accuracy", 0.2, -0.13, 0.54, 10_000).to_dict()
    cal = None if temperature is None else {"temperature": temperature, "nll": 0.25, "ece": 0.005}
    return SimpleNamespace(metrics=ens, members={"m1": best, "m2": best}, calibrated=cal,
                           vs_best={"best_member": "m1", "accuracy": gain, "nll": gain})


def test_ensemble_note_follows_the_numbers(tmp_path):
    write_json(RunDir(tmp_path).member("m1").config, {"label_smoothing": 0.1})
    worse = ensemble_note(_report({"nll": 0.335, "ece": 0.104}, {"nll": 0.332, "ece": 0.093}, 0.61), tmp_path)
    assert "NLL and ECE are worse than the best member's" in worse, f"calibration worse: {worse}"
    assert "label smoothing (0.1)" in worse, f"the cause (label smoothing) missing: {worse}"
    assert "underconfident" in worse, f"the diagnosis (underconfident) missing: {worse}"
    assert "T = 0.61" in worse, f"the fix (temperature scaling) missing: {worse}"
    assert "cannot tell the two apart" in worse, f"the noise (interval holds 0) missing: {worse}"
    assert "better calibrated" not in worse, f"contradicts the headline: {worse}"
    better = ensemble_note(_report({"nll": 0.30, "ece": 0.02}, {"nll": 0.33, "ece": 0.09}, 1.1), tmp_path)
    assert "as good as the best member's or better" in better, f"better calibration not said: {better}"
    assert "worse" not in better, f"a better ensemble called worse: {better}"
    assert ensemble_note(SimpleNamespace(vs_best=None), tmp_path) is None, "one member: nothing to compare"


@needs_demo
def test_start_baseline_checks_its_budget_before_queueing(tmp_path, queued):
    run = tmp_path / "demo"
    shutil.copytree(DEMO_DIR, run)
    view = RunView(run)
    with pytest.raises(ValueError, match="--budget must be between --members"):
        actions.start_baseline(Store(tmp_path / "home"), str(run), view, "nes-rs", 3, budget=1)
    with pytest.raises(ValueError, match="--members must be between 1 and"):
        actions.start_baseline(Store(tmp_path / "home"), str(run), view, "deepens", 1000)
    assert queued == [], f"a refused baseline was queued: {queued}"
    actions.start_baseline(Store(tmp_path / "home"), str(run), view, "nes-rs", 3, budget=6)
    assert [q[2]["budget"] for q in queued] == [6], f"a good baseline was not queued as asked: {queued}"


@needs_demo
def test_the_levers_action_refuses_a_run_without_deepens_and_queues_nothing(tmp_path):
    run = tmp_path / "nodeep"
    shutil.copytree(DEMO_DIR, run, ignore=lambda d, names: [n for n in names if n == "baselines"])
    store = Store(tmp_path / "home")
    with pytest.raises(ValueError, match="deepens"):
        actions.start_levers(store, str(run), RunView(run))
    assert store.jobs() == [], f"a refused levers action queued {[j.kind for j in store.jobs()]}"
