"""No non-finite value passes as a result: every tensor read from a run is checked where it is
loaded (probabilities, member weights, checkpoints, α*), and the loader names the file."""
from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from nes.artifacts import ArtifactError, check_finite, load_checkpoint, save_checkpoint
from nes.layout import RunDir


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from helpers import digits_members

    return digits_members(tmp_path_factory.mktemp("finite") / "run", ["a", "b"], 3)


def _poison(path, key: str | None = None) -> str:
    """Write NaN into the first floating tensor of a safetensors file (or `key`); return its name."""
    t = load_file(path)
    key = key or next(k for k, v in t.items() if v.is_floating_point() and v.numel())
    t[key].view(-1)[0] = float("nan")
    save_file(t, path)
    return key


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_check_finite_names_the_file_and_the_tensor(value, tmp_path):
    with pytest.raises(ArtifactError, match=r"x\.safetensors: tensor 'w' holds NaN or infinite"):
        check_finite({"ok": torch.zeros(3), "w": torch.tensor([0.0, value]), "n": torch.arange(3)},
                      tmp_path / "x.safetensors")
    check_finite({"n": torch.arange(3), "ok": torch.ones(2)}, tmp_path / "y.safetensors")  # finite: no error


def test_a_nan_checkpoint_is_refused_before_anything_is_loaded(tmp_path):
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, {"net": net}, {"net": opt}, {"epoch": 1})
    _poison(path, "net.weight")
    fresh = torch.nn.Linear(3, 2)
    before = fresh.weight.detach().clone()
    with pytest.raises(ArtifactError, match="checkpoint.safetensors: tensor 'net.weight' holds NaN"):
        load_checkpoint(path, {"net": fresh}, {"net": torch.optim.SGD(fresh.parameters(), lr=0.1)})
    assert torch.equal(fresh.weight, before), "a refused checkpoint was loaded into the module"


def test_export_refuses_a_member_whose_weights_hold_nan(run, tmp_path):
    from nes.export.write import plan_export

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    _poison(RunDir(copy).member("b").weights)
    with pytest.raises(ArtifactError, match=r"members/b/weights\.safetensors: tensor .* holds NaN"):
        plan_export(copy, ["a", "b"])


def test_evaluate_refuses_a_member_whose_probabilities_hold_nan(run, tmp_path):
    from helpers import nes

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    _poison(RunDir(copy).member("a").probs_files()[-1][1], "test")
    out = nes("evaluate", "--run", str(copy))
    assert out.returncode == 2, f"evaluate of a NaN member exited {out.returncode}: {out.stdout}{out.stderr}"
    assert "members/a/probs" in out.stderr, f"the message does not name the member's file: {out.stderr}"
