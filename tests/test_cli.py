"""The CLI end to end on `digits` with the `smoke` preset, resume, and every bad input."""
import json
import re
from pathlib import Path

import pytest
import torch

from nes.artifacts import load_tensors, read_json
from nes.config import SearchConfig, TrainConfig, from_preset
from nes.method.darts import search
from nes.method.space import Genotype
from nes.method.train import retrain
from helpers import nes


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("cli") / "run"
    r = nes("search", "--dataset", "digits", "--preset", "smoke", "--run", str(run), "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert "genotype*" in r.stdout
    return run


def test_search_artifacts(run_dir):
    g = Genotype.from_dict(read_json(run_dir / "search" / "genotype.json")["genotype"])
    assert g.cell_types == ("reduce",), f"genotype* cell types {g.cell_types}"
    assert g.nodes == 4, f"genotype* has {g.nodes} nodes"
    assert g.num_kept_edges() == 4, f"genotype* keeps {g.num_kept_edges()} edges"
    tensors, meta = load_tensors(run_dir / "search" / "arch.safetensors")
    assert tensors["theta"].shape == (14 * 7 + 14,), \
        f"θ shape {tuple(tensors['theta'].shape)}, expected 14 edges × 7 ops + 14 input weights"
    assert meta["layout"]["nodes"] == 4, f"the saved layout has {meta['layout']['nodes']} nodes"
    sup, _ = load_tensors(run_dir / "search" / "supernet.safetensors")
    assert any(k.startswith("cells.0.edges.13.ops.sep_conv_5x5") for k in sup)
    hist = read_json(run_dir / "search" / "history.json")
    assert len(hist) == from_preset(SearchConfig, "smoke").epochs
    assert read_json(run_dir / "search" / "config.json")["dataset"] == "digits"
    assert read_json(run_dir / "run.json")["dataset"] == "digits"


def test_retrain_and_evaluate(run_dir, tmp_path):
    r = nes("retrain", "--run", str(run_dir), "--genotype", "star", "--name", "m0", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    other = tmp_path / "g.json"
    other.write_text(Genotype(reduce=((("skip_connect", 0),), (("sep_conv_3x3", 1),), (("avg_pool_3x3", 2),),
                                      (("dil_conv_3x3", 3),))).to_json())
    r = nes("retrain", "--run", str(run_dir), "--genotype", str(other), "--name", "m1", "--seed", "1")
    assert r.returncode == 0, r.stderr
    epochs = from_preset(TrainConfig, "smoke").epochs
    assert len(list((run_dir / "members" / "m0" / "probs").glob("epoch_*.safetensors"))) == epochs
    r = nes("evaluate", "--run", str(run_dir), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [m["name"] for m in out["members"]] == ["m0", "m1"]
    ens = out["ensemble"]
    assert ens["size"] == 2, f"ensemble size {ens['size']}"
    assert 0 <= ens["accuracy"] <= 1, f"ensemble accuracy {ens['accuracy']}"
    assert ens["oracle_nll"] <= ens["nll"] + 1e-9, f"oracle NLL {ens['oracle_nll']} above the ensemble's {ens['nll']}"
    assert 0 <= ens["disagreement"] <= 1
    vs = out["vs_best_member"]  # chosen by validation NLL; interval over the test images
    assert vs["best_member"] in ("m0", "m1"), f"best member {vs['best_member']!r} is not m0 or m1"
    assert vs["accuracy"]["n"] == out["test_images"], \
        f"the difference is measured on {vs['accuracy']['n']} images, the test set has {out['test_images']}"
    assert vs["accuracy"]["lo"] <= vs["accuracy"]["value"] <= vs["accuracy"]["hi"]
    r = nes("evaluate", "--run", str(run_dir))
    assert r.returncode == 0, f"evaluate: exit {r.returncode}:\n{r.stderr}"
    assert "ensemble vs best member" in r.stdout, f"evaluate does not show the ensemble vs its best member:\n{r.stdout}"
    assert "95% CI" in r.stdout, f"evaluate shows no 95% interval:\n{r.stdout}"
    assert "temperature scaling (T fitted on the validation split)" in r.stdout
    cal = out["calibrated"]
    assert cal["temperature"] > 0, f"temperature {cal['temperature']}"
    assert cal["accuracy"] == pytest.approx(ens["accuracy"]), \
        f"temperature scaling changed the accuracy: {cal['accuracy']} vs {ens['accuracy']}"
    assert 0 <= cal["ece"] <= 1, f"calibrated ECE {cal['ece']}"
    r = nes("evaluate", "--run", str(run_dir), "--members", "m1")
    assert r.returncode == 0, f"evaluate --members m1: exit {r.returncode}:\n{r.stderr}"
    assert "ensemble" in r.stdout, f"evaluate --members m1 shows no ensemble:\n{r.stdout}"
    assert "m0" not in r.stdout, f"evaluate --members m1 shows m0:\n{r.stdout}"
    # members share the same test labels; probabilities are valid distributions
    probs, _ = load_tensors(run_dir / "members" / "m0" / "probs" / f"epoch_{epochs - 1:03d}.safetensors")
    assert torch.allclose(probs["test"].float().sum(1), torch.ones(len(probs["test"])), atol=1e-2)


def test_import_arch(tmp_path):
    arc = tmp_path / "arc.json"
    arc.write_text(json.dumps({"reduce_n2_p0": "sepconv3x3", "reduce_n2_switch": [0],
                               "reduce_n3_p2": "maxpool", "reduce_n3_switch": [2]}))
    r = nes("import-arch", str(arc))
    assert r.returncode == 0, r.stderr
    assert Genotype.from_json(r.stdout).reduce == ((("sep_conv_3x3", 0),), (("max_pool_3x3", 2),))


BAD_CASES = {
    "missing file": (["import-arch", "{t}/nope.json"], "cannot read|nope.json: missing"),
    "not json": (["import-arch", "{t}/notjson.json"], "not valid JSON"),
    "unknown op": (["import-arch", "{t}/badop.json"], "unknown op 'conv9'"),
    "bad index": (["import-arch", "{t}/badidx.json"], "input index 7 out of range"),
    "unknown setting": (["search", "--preset", "smoke", "--run", "{t}/r", "--set", "foo=1"], "unknown setting 'foo'"),
    "bad value": (["search", "--preset", "smoke", "--run", "{t}/r", "--set", "c=abc"], "c=abc: expected int"),
    "bad range": (["search", "--preset", "smoke", "--run", "{t}/r", "--set", "epochs=0"], "epochs must be >= 1"),
    "no equals": (["search", "--preset", "smoke", "--run", "{t}/r", "--set", "epochs"], "expected key=value"),
    "bad dataset": (["search", "--preset", "smoke", "--run", "{t}/r", "--dataset", "mnist2"], "mnist2"),
    "bad device": (["search", "--preset", "smoke", "--run", "{t}/r", "--device", "tpu"], "unknown device"),
    "missing run": (["retrain", "--run", "{t}/none", "--genotype", "star", "--name", "a"], "does not exist"),
    "no search yet": (["retrain", "--run", "{t}/empty", "--genotype", "star", "--name", "a"], "run `python -m nes search"),
    "bad genotype": (["retrain", "--run", "{t}/empty", "--genotype", "{t}/badidx.json", "--name", "a"], "out of range"),
    "bad name": (["retrain", "--run", "{t}/empty", "--genotype", "{t}/good.json", "--name", "a/b"], "member name"),
    "no members": (["evaluate", "--run", "{t}/empty"], "no retrained members"),
    "missing run eval": (["evaluate", "--run", "{t}/none"], "does not exist"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_exits_2_with_a_message(tmp_path, case):
    (tmp_path / "notjson.json").write_text("{oops")
    (tmp_path / "badop.json").write_text(json.dumps({"reduce_n2_p0": "conv9", "reduce_n2_switch": [0]}))
    (tmp_path / "badidx.json").write_text(json.dumps({"reduce": [[["skip_connect", 7]]]}))
    (tmp_path / "good.json").write_text(json.dumps({"reduce": [[["skip_connect", 0]]]}))
    (tmp_path / "empty").mkdir()
    args, msg = BAD_CASES[case]
    r = nes(*[a.format(t=tmp_path) for a in args])
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert re.search(msg, r.stderr), r.stderr


def test_evaluate_unknown_member(run_dir):
    r = nes("evaluate", "--run", str(run_dir), "--members", "m0,zz")
    assert r.returncode == 2, f"evaluate --members m0,zz: exit {r.returncode}, expected 2:\n{r.stderr}"
    assert "unknown member(s) zz" in r.stderr, f"evaluate --members m0,zz does not name the unknown member:\n{r.stderr}"


class Stop(Exception):
    pass


def _interrupt_at(step_to_stop: int):
    def cb(step, total, metrics):
        if step >= step_to_stop:
            raise Stop()
    return cb


def test_search_resume_after_interruption_is_exact(tmp_path):
    cfg = from_preset(SearchConfig, "smoke", {"epochs": 3, "limit": 128, "log_every": 1})
    full = search(cfg, tmp_path / "full", "cpu")
    steps_per_epoch = full.steps // 3
    with pytest.raises(Stop):  # killed in the middle of the second epoch
        search(cfg, tmp_path / "cut", "cpu", progress=_interrupt_at(steps_per_epoch + 2))
    meta = load_tensors(tmp_path / "cut" / "search" / "checkpoint.safetensors")[1]
    assert meta["epoch"] == 0, f"the checkpoint is of epoch {meta['epoch']}, expected the first (0)"
    assert meta["steps"] == steps_per_epoch, f"the checkpoint is at step {meta['steps']}, expected {steps_per_epoch}"
    resumed = search(cfg, tmp_path / "cut", "cpu")
    assert resumed.steps == full.steps == 3 * steps_per_epoch
    assert len(resumed.history) == 3
    assert torch.allclose(resumed.theta, full.theta, atol=1e-6)
    assert resumed.genotype == full.genotype
    # a changed config does not silently continue another run's checkpoint
    other = from_preset(SearchConfig, "smoke", {"epochs": 3, "limit": 128, "c": 6})
    with pytest.raises(ValueError, match="different configuration"):
        search(other, tmp_path / "cut", "cpu")


def test_retrain_resume_after_interruption(tmp_path):
    cfg = from_preset(TrainConfig, "smoke", {"epochs": 3, "log_every": 1})
    g = Genotype(reduce=((("sep_conv_3x3", 1),), (("skip_connect", 0),), (("max_pool_3x3", 2),), (("dil_conv_3x3", 3),)))
    full = retrain(cfg, g, tmp_path, "full", "cpu")
    per_epoch = full.steps // 3
    with pytest.raises(Stop):
        retrain(cfg, g, tmp_path, "cut", "cpu", progress=_interrupt_at(2 * per_epoch + 1))
    assert len(list((tmp_path / "members" / "cut" / "probs").glob("*.safetensors"))) == 2
    res = retrain(cfg, g, tmp_path, "cut", "cpu")
    assert res.steps == full.steps, f"the resumed member took {res.steps} steps, the uninterrupted one {full.steps}"
    assert len(res.history) == 3, f"the resumed member has {len(res.history)} epochs of history, expected 3"
    a = load_tensors(tmp_path / "members" / "full" / "weights.safetensors")[0]
    b = load_tensors(tmp_path / "members" / "cut" / "weights.safetensors")[0]
    assert a.keys() == b.keys(), f"weights differ in names: {sorted(a.keys() ^ b.keys())}"
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a), \
        f"resumed weights differ: {[k for k in a if not torch.allclose(a[k].float(), b[k].float(), atol=1e-5)]}"


def test_second_order_search(tmp_path):
    """Unrolled DARTS runs, moves θ, and differs from first order on the same data."""
    cfg1 = from_preset(SearchConfig, "smoke", {"epochs": 1, "limit": 64})
    cfg2 = from_preset(SearchConfig, "smoke", {"epochs": 1, "limit": 64, "second_order": "true"})
    first, second = search(cfg1, tmp_path / "a", "cpu"), search(cfg2, tmp_path / "b", "cpu")
    assert torch.isfinite(second.theta).all(), "second-order θ is not finite"
    assert second.steps == first.steps, f"second order took {second.steps} steps, first order {first.steps}"
    assert not torch.allclose(first.theta, second.theta)
