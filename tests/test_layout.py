"""RunDir (every path of a run folder), member names, name checks, and the app's actions."""
import pytest

from nes.artifacts import write_json
from nes.explorer.actions import start_search
from nes.export.write import default_bundle_name
from nes.layout import RunDir, check_name, member_name
from nes.runs.store import Store


@pytest.mark.parametrize("name", ["alpha_star", "lam_2_50", "fm-1", "a.b", "_x", "9" * 100])
def test_check_name_accepts_folder_safe_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", ".hidden", "-x", "a/b", "a\\b", "a b", "..", "x" * 101, None, 3, "é"])
def test_check_name_rejects_with_the_rule(name):
    with pytest.raises(ValueError, match="give the run a name of 1–100 letters, digits"):
        check_name(name, "run")


def test_member_names_round_trip_lambda_and_seed():
    assert member_name() == "alpha_star" and member_name(seed=2) == "alpha_star_s2"
    assert member_name(2.5) == "lam_2_50" and member_name(3.0, 1) == "lam_3_00_s1"
    assert member_name(0.25, prefix="edges") == "edges_lam_0_25"
    for lam in (0.0, 1.25, 3.5, 10.0):
        assert check_name(member_name(lam, 7))


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
