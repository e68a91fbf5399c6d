"""The cheaper search modes (PC-DARTS partial channels, GDAS sampling, lower resolution, the
architecture step on every k-th step) train on digits with the smoke preset, give an α* of the
full mode's shape, and feed a hypernetwork."""
from __future__ import annotations

import pytest
import torch

from nes.config import SearchConfig, from_preset
from nes.data import DataError, downsample, load_dataset
from nes.method.bilevel import BilevelStep, build_supernet, prepare_search_data
from nes.method.darts import DartsArch, load_search, search
from nes.runs.tasks import hypernet_task

MODES = {"darts": {}, "pc": {"mode": "pc", "partial_k": "2"}, "gdas": {"mode": "gdas"},
         "low-res": {"downsample": "2"}, "pc low-res": {"mode": "pc", "downsample": "2"},
         "low-res θ/2": {"downsample": "2", "arch_every": "2"}}


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("modes")
    out = {}
    for name, sets in MODES.items():
        run = root / name.replace(" ", "_")
        res = search(from_preset(SearchConfig, "smoke", sets), run, "cpu")
        out[name] = (run, res)
    return out


def test_every_mode_learns_an_alpha_of_the_full_modes_shape(searched):
    full_run, full = searched["darts"]
    full_art = load_search(full_run)
    init = full_art.layout.init_theta(generator=torch.Generator().manual_seed(0))
    for name, (run, res) in searched.items():
        art = load_search(run)
        assert art.layout == full_art.layout, name
        assert art.theta.shape == full_art.theta.shape, \
            f"{name}: θ shape {tuple(art.theta.shape)}, the darts mode's {tuple(full_art.theta.shape)}"
        assert torch.isfinite(art.theta).all(), f"{name}: θ is not finite"
        assert not torch.allclose(art.theta, init), name  # the architecture step moved α
        art.star.validate(nodes=full_art.star.nodes)
        assert len(res.history) == from_preset(SearchConfig, "smoke").epochs, \
            f"{name}: {len(res.history)} epochs of history"
        assert res.steps > 0, f"{name}: no step taken"
        assert all(0 <= row["kept_top_op"] <= 1 for row in res.history), name


def test_a_partial_channel_search_feeds_its_hypernetwork(searched):
    run, _ = searched["pc"]
    from nes.method.hypernet import load_hypernet

    out = hypernet_task(run, {"preset": "smoke", "regularizer": "edges"})  # inherits mode and partial_k
    assert out["regularizer"] == "edges", f"the hypernetwork trained regularizer {out['regularizer']!r}"
    assert out["steps"] > 0, "the hypernetwork took no step"
    meta = load_hypernet(run, "edges").meta
    assert meta["config"]["mode"] == "pc", f"the hypernetwork did not inherit mode pc: {meta['config']['mode']!r}"
    assert meta["config"]["partial_k"] == 2, \
        f"the hypernetwork did not inherit partial_k 2: {meta['config']['partial_k']}"
    assert meta["quality"]["distinct"] >= 1, "the hypernetwork gives no genotype"


def test_downsample_shrinks_images_and_crops_and_refuses_too_much():
    ds = load_dataset("digits", None, "cpu", 64, 16)
    small, info = downsample(ds, ds.info, 2)
    assert small.train_x.shape[-2:] == (4, 4), f"downsampled images are {tuple(small.train_x.shape[-2:])}"
    assert small.train_x.dtype == torch.uint8, f"downsampled images are {small.train_x.dtype}"
    assert (info.height, info.image_size, info.pad) == (4, 4, 0)
    assert torch.equal(small.train_y, ds.train_y), "downsampling changed the training labels"
    assert len(small.test_x) == len(ds.test_x), \
        f"downsampling changed the test set size: {len(small.test_x)} vs {len(ds.test_x)}"
    assert downsample(ds, ds.info, 1) == (ds, ds.info)
    with pytest.raises(DataError, match="downsample=8"):
        downsample(ds, ds.info, 8)


def test_bad_mode_settings_are_named(tmp_path):
    with pytest.raises(ValueError, match="search mode"):
        from_preset(SearchConfig, "smoke", {"mode": "fast"})
    with pytest.raises(ValueError, match="partial_k"):
        from_preset(SearchConfig, "smoke", {"partial_k": "0"})
    with pytest.raises(ValueError, match="arch_every"):
        from_preset(SearchConfig, "smoke", {"arch_every": "0"})
    with pytest.raises(ValueError, match="arch_warmup"):
        from_preset(SearchConfig, "smoke", {"arch_warmup": "-1"})
    with pytest.raises(ValueError, match=r"arch_warmup \(2\) must be smaller than epochs \(2\)"):
        from_preset(SearchConfig, "smoke", {"arch_warmup": "2"})
    with pytest.raises(ValueError, match="partial_k=3 must divide"):  # the smoke cell has 8 channels
        search(from_preset(SearchConfig, "smoke", {"mode": "pc", "partial_k": "3"}), tmp_path / "run", "cpu")
    assert not (tmp_path / "run" / "search" / "arch.safetensors").exists()


def test_arch_every_k_steps_theta_on_every_kth_step_only():
    torch.manual_seed(0)
    cfg = from_preset(SearchConfig, "smoke", {"arch_every": "3"})
    ds, tl, vl = prepare_search_data(cfg, torch.device("cpu"))
    net, layout = build_supernet(cfg, ds, torch.device("cpu"))
    arch = DartsArch(layout)
    step = BilevelStep(cfg, net, arch, torch.device("cpu"))
    assert step.a_opt.param_groups[0]["lr"] == pytest.approx(3 * cfg.a_lr), "θ's step is not k·a_lr"
    sums = torch.zeros(5)
    (xt, yt), (xv, yv) = next(iter(tl.epoch(torch.Generator()))), next(iter(vl.epoch(torch.Generator())))
    moved = []
    for done in range(6):
        before = arch.alpha.detach().clone()
        step.done = done
        loss_v = step(xt, yt, xv, yv, None, done / 6, sums)
        moved.append(not torch.equal(before, arch.alpha.detach()))
        assert (loss_v is None) == (done % 3 != 0), f"step {done} returned validation loss {loss_v}"
    assert moved == [True, False, False, True, False, False], f"θ moved on steps {moved}"
    assert sums[4].item() == 2 * len(yv), f"validation images counted {sums[4].item()}, not 2 batches"


def test_arch_warmup_trains_the_weights_alone_for_its_epochs(tmp_path):
    """With arch_warmup=1 the first epoch takes no architecture step (so it reports no validation
    means, rather than zeros) and the second takes them (validation images are counted only on a
    step with the architecture step)."""
    torch.set_num_threads(1)
    cfg = from_preset(SearchConfig, "smoke", {"arch_warmup": "1"})
    torch.manual_seed(cfg.seed)
    res = search(cfg, tmp_path / "run", "cpu")
    first, second = res.history[0], res.history[1]
    assert "val_acc" not in first, f"the warm-up epoch reports validation accuracy {first.get('val_acc')}"
    assert "train_acc" in first, "the warm-up epoch reports no training accuracy"
    assert 0 <= second["val_acc"] <= 1, f"the epoch after the warm-up reports val_acc {second.get('val_acc')}"
    assert bool(torch.isfinite(res.theta).all()), "θ after the warm-up holds non-finite values"
