"""Progressive resizing of a member's early epochs (`TrainConfig.epoch_sizes`, issue 25): the
setting is checked with a message that names it, shrunk images keep their range and cropping, an
early epoch sees the same images in the same order at its size, and a real member trains and is
scored through it (each epoch's scores at the size it trained on; the member's own at full size)."""
import pytest
import torch

from nes.artifacts import load_tensors, read_json
from nes.config import TrainConfig, epoch_sizes, from_preset
from nes.data import load_dataset, resized
from nes.layout import RunDir
from nes.method.network import Network
from nes.method.space import Genotype
from nes.method.train import member_data, retrain

STAR = Genotype(reduce=((("sep_conv_3x3", 1),), (("skip_connect", 0),), (("avg_pool_3x3", 2),), (("max_pool_3x3", 3),)))


def test_epoch_sizes_parse_into_one_size_per_early_epoch():
    cfg = from_preset(TrainConfig, "quick", {"epoch_sizes": "14, 20"})
    assert epoch_sizes(cfg) == [14, 20], f"epoch_sizes '14, 20' parsed as {epoch_sizes(cfg)}"
    assert epoch_sizes(from_preset(TrainConfig, "paper")) == [], "no epoch_sizes should mean every epoch at full size"


@pytest.mark.parametrize("text", ["abc", "14;20", "2", "40", "14,20,24"])
def test_bad_epoch_sizes_are_refused_with_a_message_naming_the_setting(text):
    with pytest.raises(ValueError) as e:
        from_preset(TrainConfig, "quick", {"epoch_sizes": text, "epochs": "3", "image_size": "28"})
    assert "epoch_sizes" in str(e.value), f"epoch_sizes={text!r} refused without naming the setting: {e.value}"


@pytest.mark.parametrize("size", [4, 6, 7])
def test_resized_images_keep_dtype_range_and_crop(size):
    ds = load_dataset("digits", None, torch.device("cpu"), 64, 16)
    info = ds.info.with_crop(8, 1)
    x, small = resized(ds.train_x, info, size)
    assert x.dtype == torch.uint8, f"resized images became {x.dtype}"
    assert small.image_size == size, f"crop {small.image_size} for size {size}"
    assert x.shape[2:] == (small.height, small.width), f"images {tuple(x.shape)} vs info {small.height}×{small.width}"
    assert small.image_size <= min(small.height, small.width) + 2 * small.pad, f"crop does not fit: {small}"
    assert x.float().mean() > 0, "resizing blanked the images"


def test_resized_at_full_size_returns_the_images_unchanged():
    ds = load_dataset("digits", None, torch.device("cpu"), 64, 16)
    info = ds.info.with_crop(8, 1)
    x, same = resized(ds.train_x, info, 8)
    assert x is ds.train_x and same == info, "a size of at least the crop should change nothing"


def test_an_early_epoch_sees_the_same_images_in_the_same_order_at_its_size():
    cfg = from_preset(TrainConfig, "smoke", {"epochs": 3, "epoch_sizes": "5,6"})
    data = member_data(cfg, torch.device("cpu"))
    for epoch, size in enumerate([5, 6, data.train.info.image_size]):
        train, val, test = data.loaders(cfg, epoch)
        for name, ld in (("train", train), ("val", val), ("test", test)):
            x, _ = next(iter(ld.epoch(torch.Generator().manual_seed(0))))
            assert x.shape[-1] == size, f"epoch {epoch} {name} images are {x.shape[-1]} px, want {size}"
        assert len(train) == len(data.train), f"epoch {epoch}: {len(train)} batches, full size {len(data.train)}"
        labels = [y for _, y in train.epoch(torch.Generator().manual_seed(1))]
        full = [y for _, y in data.train.epoch(torch.Generator().manual_seed(1))]
        assert all(torch.equal(a, b) for a, b in zip(labels, full)), f"epoch {epoch} batches hold other images"


@pytest.fixture(scope="module")
def member(tmp_path_factory):
    run = tmp_path_factory.mktemp("recipe") / "run"
    cfg = from_preset(TrainConfig, "smoke", {"epochs": 3, "epoch_sizes": "5,6"})
    return run, cfg, retrain(cfg, STAR, run, "m", "cpu")


def test_a_member_with_shrunk_early_epochs_trains_and_saves_every_epoch(member):
    run, cfg, res = member
    d = RunDir(run).member("m")
    assert len(res.history) == cfg.epochs, f"{len(res.history)} history rows for {cfg.epochs} epochs"
    for e in range(cfg.epochs):
        p, _ = load_tensors(d.probs(e))
        assert p["val"].shape[1] == 10 and torch.isfinite(p["val"].float()).all(), f"epoch {e} val probs: {p['val'].shape}"
        s = p["test"].float().sum(1)
        assert torch.allclose(s, torch.ones_like(s), atol=1e-2), f"epoch {e} test probs do not sum to 1"
    assert read_json(d.config, dict, "config")["epoch_sizes"] == "5,6", "the member's config lost epoch_sizes"


def test_the_members_own_scores_are_its_weights_at_full_size(member):
    run, cfg, res = member
    d = RunDir(run).member("m")
    data = member_data(cfg, torch.device("cpu"))
    info = data.ds.info.with_crop(cfg.image_size, cfg.pad)
    net = Network(STAR, cfg.channels, info.num_classes, cfg.layers, info.channels)
    net.load_state_dict(load_tensors(d.weights)[0])
    net.eval()
    with torch.no_grad():
        p = torch.cat([torch.softmax(net(x), 1) for x, _ in data.test.epoch()])
    saved = load_tensors(d.probs(cfg.epochs - 1))[0]["test"].float()
    gap = (p - saved).abs().max().item()
    assert gap < 5e-3, f"the last epoch's saved test probs differ from the weights' at full size by {gap}"
