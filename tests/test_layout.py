"""RunDir (every path of a run folder), member names and records, name checks, and the app's actions."""
import pytest

from nes.artifacts import write_json
from nes.explorer.actions import start_search
from nes.export.write import default_bundle_name
from nes.layout import MemberRecord, RunDir, check_name, fixed_lambda_name, member_name
from nes.runs.store import Store


@pytest.mark.parametrize("name", ["alpha_star", "lam_2_50", "fm-1", "a.b", "_x", "9" * 100])
def test_check_name_accepts_folder_safe_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", ".hidden", "-x", "a/b", "a\\b", "a b", "..", "x" * 101, None, 3, "é"])
def test_check_name_rejects_with_the_rule(name):
    with pytest.raises(ValueError, match="give the run a name of 1–100 letters, digits"):
        check_name(name, "run")


def test_member_names_say_hypernetwork_lambda_and_seed():
    assert member_name() == "alpha_star", "α* of seed 0"
    assert member_name(seed=2) == "alpha_star_s2", "α* of another seed"
    assert member_name("edges", 1.0) == "edges_lam_1_00", "edges member at λ = 1"
    assert member_name("js", 1.0, 1) == "js_lam_1_00_s1", "js member at λ = 1, seed 1"
    assert member_name("js-target", 0.255) == "js-target_lam_0_26", "λ is written with two decimals"
    assert member_name("edges", 1.0) != member_name("js", 1.0), "two hypernetworks at one λ share a name"
    assert member_name("rs", seed=1003) == "rs_s1003", "a baseline's member names its generator and seed"
    for lam in (0.0, 1.25, 3.5, 10.0):
        assert check_name(member_name("edges", lam, 7)), f"λ = {lam} gives an unsafe folder name"
    with pytest.raises(ValueError, match="hypernetwork"):
        member_name(lam=1.0)  # α(λ) without the hypernetwork it came from
    assert fixed_lambda_name(2.0) == "lam_2", f"per-λ search folder for λ = 2: {fixed_lambda_name(2.0)!r}"
    assert fixed_lambda_name(0.5) == "lam_0.5", f"per-λ search folder for λ = 0.5: {fixed_lambda_name(0.5)!r}"


def test_member_record_carries_regularizer_lambda_and_seed(tmp_path):
    run = RunDir(tmp_path / "r")
    m = run.member("edges_lam_1_00_s3")
    write_json(m.genotype, {"genotype": {}, "lam": 1.0, "regularizer": "edges"})
    write_json(m.config, {"seed": 3, "epochs": 1})
    rec = m.record()
    assert rec == MemberRecord("edges_lam_1_00_s3", "edges", 1.0, 3), f"record read from the files: {rec}"
    old = run.member("lam_1_00")  # a member named before the regularizer was in names (the demo's)
    write_json(old.genotype, {"genotype": {}, "lam": 1.0, "regularizer": "edges"})
    write_json(old.config, {"seed": 3})
    asked = MemberRecord.from_config({"name": member_name("edges", 1.0, 3), "lam": 1.0, "regularizer": "edges",
                                      "seed": 3})
    assert asked.same_member(old.record()), "an old-named member of the same hypernetwork, λ and seed"
    other = MemberRecord.from_config({"name": member_name("js", 1.0, 3), "lam": 1.0, "regularizer": "js", "seed": 3})
    assert not other.same_member(old.record()), "a js member at λ = 1 taken for the edges one"
    assert not MemberRecord.from_config({"name": "edges_lam_1_00", "lam": 1.0, "regularizer": "edges",
                                         "seed": 0}).same_member(rec), "another seed is another member"


def test_run_dir_paths_members_and_baselines(tmp_path):
    run = RunDir(tmp_path / "r")
    assert run.search.arch == tmp_path / "r" / "search" / "arch.safetensors"
    assert run.hypernet("edges").hypernet == tmp_path / "r" / "hypernet" / "edges" / "hypernet.safetensors"
    assert run.fixed_lambda(2.0).path.name == "lam_2"
    assert run.member("m0").probs(3).name == "epoch_003.safetensors"
    assert run.baseline("deepens", 1).path == tmp_path / "r" / "baselines" / "deepens_s1"
    assert run.info() == {}, f"a new run folder has info {run.info()}"
    assert run.list_members() == [], f"a new run folder has members {run.list_members()}"
    assert not run.has_search, "a new run folder has a search"
    with pytest.raises(ValueError):
        run.member("../escape")
    for name in ("b", "a", ".tmp_partial"):
        (run.path / "members" / name).mkdir(parents=True)
    run.member("a").weights.write_bytes(b"")
    assert run.list_members() == ["a", "b"], \
        f"members {run.list_members()}, expected a and b (not the hidden .tmp_partial)"
    assert run.finished_members() == ["a"], \
        f"finished members {run.finished_members()}, expected only a (it has weights)"
    write_json(run.member("b").metrics, {"seconds": 2.5})
    assert run.member("b").seconds() == 2.5, f"member b took {run.member('b').seconds()} s by its metrics, expected 2.5"
    assert run.member("a").seconds() == 0.0, f"member a (no metrics) took {run.member('a').seconds()} s, expected 0"
    run.update_info(preset="smoke")
    run.write_dataset_info("digits", {"num_classes": 10})
    run.write_dataset_info("other", {})  # written once: the first dataset stays
    assert run.info()["dataset"] == "digits", f"run dataset {run.info()['dataset']!r}, the first one written was digits"
    assert run.info()["preset"] == "smoke", f"run preset {run.info()['preset']!r}"
    before = run.stamp()
    run.search.arch.parent.mkdir(parents=True)
    run.search.arch.write_bytes(b"x")
    assert run.stamp() != before


def test_start_search_checks_name_and_settings_before_queueing(tmp_path):
    store = Store(tmp_path / "home")
    for bad in ("", "a b", "../x"):
        with pytest.raises(ValueError, match="run name"):
            start_search(store, bad, "digits", "smoke", {})
    with pytest.raises(ValueError, match="epochs"):
        start_search(store, "ok", "digits", "smoke", {"epochs": "zero"})
    assert store.jobs() == [], f"refused searches queued jobs {[j.id for j in store.jobs()]}"
    assert store.runs() == [], f"refused searches registered runs {store.runs()}"


def test_default_bundle_name_is_a_valid_name(tmp_path):
    name = default_bundle_name(tmp_path / "my run", ["alpha_star", "lam 2/50"])
    assert check_name(name, "bundle"), f"default bundle name {name!r} is not a valid name"
    assert "alpha_star" in name, f"default bundle name {name!r} does not name its first member"
