"""Bad values and broken files (issue 13): every one exits 2 with a message naming the file or
setting, none trains on garbage, none leaves a half-made folder. Real CLI processes, real files."""
import json
import shutil

import pytest
import torch

from helpers import ROOT, nes
from nes.artifacts import ArtifactError, load_tensors, save_tensors, write_json
from nes.config import SearchConfig, TrainConfig, from_preset
from nes.explorer.runview import RunView
from nes.method.darts import load_search, search
from nes.method.space import Genotype
from nes.method.train import retrain
from nes.runs.store import Store, StoreError

STAR = Genotype(reduce=((("sep_conv_3x3", 1),), (("skip_connect", 0),), (("avg_pool_3x3", 2),), (("max_pool_3x3", 3),)))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    r = tmp_path_factory.mktemp("faults") / "run"
    search(from_preset(SearchConfig, "smoke", {"epochs": 1}), r, "cpu")
    retrain(from_preset(TrainConfig, "smoke", {"epochs": 1}), STAR, r, "m0", "cpu")
    return r


def check_exit_2(args, msg):
    r = nes(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, f"{args}: a traceback instead of a message:\n{r.stderr}"
    assert msg in r.stderr, f"{args}: the error does not say {msg!r}:\n{r.stderr}"
    return r


@pytest.mark.parametrize("setting, msg", [
    ("w_lr=nan", "w_lr must be a finite number"), ("w_lr=inf", "w_lr must be a finite number"),
    ("log_every=0", "log_every must be >= 1"), ("a_beta1=1.5", "a_beta1 must be in [0, 1)"),
    ("grad_clip=-1", "grad_clip must be > 0")])
def test_bad_float_and_int_settings_exit_2_and_leave_no_folder(tmp_path, setting, msg):
    check_exit_2(["search", "--preset", "smoke", "--run", str(tmp_path / "r"), "--set", setting], msg)
    assert not (tmp_path / "r").exists()


def test_nan_lambda_is_refused(run, tmp_path):
    with pytest.raises(ValueError, match="finite"):
        from nes.method.hypernet import PiecewiseLinearHypernet
        from nes.method.regularizers import LamRange
        PiecewiseLinearHypernet(torch.zeros(4), LamRange.exact(0.0, 1.0))(float("nan"))


def test_diverging_training_stops_with_the_setting_to_lower(run):
    r = check_exit_2(["retrain", "--run", str(run), "--genotype", "star", "--name", "hot", "--preset", "smoke",
                      "--set", "lr=1e30", "--set", "epochs=1", "--set", "grad_clip=1e30"], "lower lr")
    assert "diverged" in r.stderr
    assert not list((run / "members" / "hot" / "probs").glob("*.safetensors"))  # no NaN epoch saved


def test_theta_of_the_wrong_length_is_refused_where_it_is_loaded(run, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(run, bad)
    tensors, meta = load_tensors(bad / "search" / "arch.safetensors")
    save_tensors(bad / "search" / "arch.safetensors", {"theta": tensors["theta"][:-3]}, meta)
    with pytest.raises(ArtifactError, match="θ has shape"):
        load_search(bad)
    with pytest.raises(ArtifactError, match="θ has shape"):
        RunView(bad).validate()
    check_exit_2(["retrain", "--run", str(bad), "--genotype", "star", "--name", "x", "--set", "epochs=0"],
                 "epochs must be >= 1")


@pytest.mark.parametrize("content, msg", [
    ('{"reduce_n2_p0": ["sepconv3x3", "maxpool"], "reduce_n2_switch": [0]}', "unknown op"),
    ('{"reduce_n2_p0": {"op": 1}, "reduce_n2_switch": [0]}', "unknown op"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply")], ids=["op-list", "op-dict", "nested-100k"])
def test_broken_architecture_files_exit_2(tmp_path, content, msg):
    (tmp_path / "arc.json").write_text(content)
    check_exit_2(["import-arch", str(tmp_path / "arc.json")], msg)


def test_run_json_that_is_not_an_object(run, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(run, bad)
    (bad / "run.json").write_text("[1, 2]")
    check_exit_2(["retrain", "--run", str(bad), "--genotype", "star", "--name", "m1"], "run.json: expected a JSON object")
    check_exit_2(["export", "--run", str(bad), "--members", "m0", "--out", str(tmp_path / "b")], "run.json")
    assert not (tmp_path / "b").exists()


def test_non_json_metadata_and_deep_json_name_the_file(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "t.safetensors"), metadata={"nes": "{not json"})
    with pytest.raises(ArtifactError, match="t.safetensors: its metadata is not valid JSON"):
        load_tensors(tmp_path / "t.safetensors")
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    from nes.artifacts import read_json
    with pytest.raises(ArtifactError, match="deep.json: JSON nested too deeply"):
        read_json(tmp_path / "deep.json")


def test_store_with_a_bad_schema_version_names_the_file(tmp_path):
    s = Store(tmp_path / "home")
    with s._tx() as c:
        c.execute("UPDATE meta SET value='abc' WHERE key='schema_version'")
    s.close()
    with pytest.raises(StoreError, match=r"nes\.db has schema version abc"):
        Store(tmp_path / "home")
    r = nes("jobs", "list", env={"NES_HOME": str(tmp_path / "home")})
    assert r.returncode == 2, f"exit {r.returncode}, expected 2:\n{r.stderr}"
    assert "schema version abc" in r.stderr, f"the error does not name the schema version:\n{r.stderr}"
    assert "Traceback" not in r.stderr, f"a traceback instead of a message:\n{r.stderr}"


def test_member_config_value_not_numeric_names_the_file(run, tmp_path):
    """A member whose config.json holds a non-numeric channel count cannot be exported: the
    message names the file."""
    bad = tmp_path / "bad"
    shutil.copytree(run, bad)
    cfg = json.loads((bad / "members" / "m0" / "config.json").read_text())
    write_json(bad / "members" / "m0" / "config.json", {**cfg, "c": "many"})
    check_exit_2(["export", "--run", str(bad), "--members", "m0", "--out", str(tmp_path / "b")], "config.json")


LIVE_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from nes.artifacts import ArtifactError
from pages._widgets import live

def panel():
    raise ArtifactError("members/m0/probs/epoch_000.safetensors: not a readable safetensors file")

live(panel, what="show the ensemble")
"""


def test_live_panels_catch_their_own_errors():
    """A live panel's fragment reruns outside the page's `friendly`: it must catch a broken file
    itself (a truncated probabilities file showed a raw traceback on the Ensemble page)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_string(LIVE_SCRIPT.format(root=str(ROOT)), default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Could not show the ensemble" in e.value and "epoch_000" in e.value for e in at.error)


WATCH_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from nes.runs.store import StoreError
from pages._widgets import watch

def progress():
    raise StoreError("the run store is locked by another process")

watch(progress, lambda: 1, 1, what="show the members' jobs")
"""


def test_a_watched_pages_progress_catches_its_own_errors():
    """The live jobs panel of a watched page (`watch`) reruns in its own fragment, outside the page's
    `friendly`: a store error must show a message that names it, not a traceback."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_string(WATCH_SCRIPT.format(root=str(ROOT)), default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Could not show the members' jobs" in e.value and "locked" in e.value for e in at.error), \
        [e.value for e in at.error]