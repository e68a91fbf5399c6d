"""Tests for nes.data: dataset sources (digits, Fashion-MNIST IDX, CIFAR pickles), error messages,
split_indices and DeviceLoader's crop / flip / normalization semantics. Offline and fast."""
from __future__ import annotations

import gzip
import json
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import nes.data as D
from nes.data import DataError, DatasetInfo, DeviceLoader, load_dataset, split_indices

HAVE_DEBIAN = all(os.path.isfile(os.path.join(D.DEBIAN_FASHION_DIR, f + ".gz")) for f in D.FASHION_FILES)
needs_debian = pytest.mark.skipif(not HAVE_DEBIAN, reason=f"Debian dataset-fashion-mnist not installed ({D.DEBIAN_FASHION_DIR})")


@pytest.fixture(autouse=True)
def _no_stray_sources(monkeypatch, tmp_path_factory):
    # Never read or write the user's ~/.cache/nes from tests.
    monkeypatch.setattr(D, "CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def hide_debian(monkeypatch, tmp_path):
    monkeypatch.setattr(D, "DEBIAN_FASHION_DIR", str(tmp_path / "no-debian"))


# ----------------------------------------------------------------------------- helpers

def write_idx(path: str, arr: np.ndarray) -> None:
    """IDX: magic 0x0000080<ndim>, big-endian uint32 dims, uint8 data."""
    raw = bytes([0, 0, 8, arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes() + arr.astype(np.uint8).tobytes()
    with (gzip.open(path, "wb") if path.endswith(".gz") else open(path, "wb")) as f:
        f.write(raw)


def write_tiny_fashion(d, n_train=20, n_test=8, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(d, exist_ok=True)
    arrays = [rng.integers(0, 256, (n_train, 28, 28)), rng.integers(0, 10, n_train),
              rng.integers(0, 256, (n_test, 28, 28)), rng.integers(0, 10, n_test)]
    for name, a in zip(D.FASHION_FILES, arrays):
        write_idx(os.path.join(d, name + (".gz" if gz else "")), a)
    return arrays


def make_info(c=1, h=28, s=32, pad=4, flip=True) -> DatasetInfo:
    return DatasetInfo("synthetic", 10, c, h, h, s, pad, flip, tuple([0.3] * c), tuple([0.25 + 0.05 * i for i in range(c)]),
                       tuple(str(i) for i in range(10)))


def unnormalize(out: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    """float [B, C, S, S] normalized -> values in [0, 1] (x·std + mean)."""
    std = torch.tensor(info.std).view(1, -1, 1, 1)
    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    return out.float() * std + mean


def to_uint8(out: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    v = unnormalize(out, info) * 255
    assert (v - v.round()).abs().max() < 2e-3, \
        f"pixels are not multiples of 1/255: max deviation {float((v - v.round()).abs().max()):.2e}"
    assert v.min() > -1e-3, f"pixel below 0: {float(v.min())}"
    assert v.max() < 255 + 1e-3, f"pixel above 255: {float(v.max())}"
    return v.round().to(torch.uint8)


def find_windows(img: torch.Tensor, crop: torch.Tensor, info: DatasetInfo) -> list[tuple[int, int, bool]]:
    """All (oy, ox, flipped) with crop == window of the zero-padded img."""
    p, s = info.pad, info.image_size
    padded = F.pad(img, (p, p, p, p))
    hits = []
    for oy in range(padded.shape[1] - s + 1):
        for ox in range(padded.shape[2] - s + 1):
            w = padded[:, oy:oy + s, ox:ox + s]
            hits += [(oy, ox, fl) for fl in (False, True) if torch.equal(w.flip(-1) if fl else w, crop)]
    return hits


# ----------------------------------------------------------------------------- datasets

def test_digits():
    d = load_dataset("digits")
    assert d.source == "scikit-learn", f"digits source {d.source!r}"
    assert d.info.num_classes == 10, f"digits num_classes {d.info.num_classes}"
    assert d.info.class_names == tuple("0123456789"), f"digits class_names {d.info.class_names}"
    assert d.train_x.shape == (1438, 1, 8, 8), f"digits train_x shape {tuple(d.train_x.shape)}"
    assert d.test_x.shape == (359, 1, 8, 8), f"digits test_x shape {tuple(d.test_x.shape)}"  # 1797 = 4/5 + 1/5
    assert d.train_x.dtype == torch.uint8, f"train_x dtype {d.train_x.dtype}"
    assert d.train_y.dtype == torch.int64, f"train_y dtype {d.train_y.dtype}"
    assert int(d.train_x.max()) == 255, f"digits train_x max {int(d.train_x.max())}, expected 255"
    assert int(d.train_x.min()) == 0, f"digits train_x min {int(d.train_x.min())}, expected 0"
    assert set(d.train_y.tolist()) == set(range(10)), f"digits train labels {sorted(set(d.train_y.tolist()))}"
    assert 0 <= int(d.test_y.min()), f"digits test label below 0: {int(d.test_y.min())}"
    assert int(d.test_y.max()) <= 9, f"digits test label above 9: {int(d.test_y.max())}"
    assert (d.info.image_size, d.info.pad, d.info.flip) == (8, 1, False)
    json.dumps(d.info.to_dict())
    d2 = load_dataset("digits", limit=100, test_limit=50)  # deterministic subsets
    assert len(d2.train_y) == 100, f"limit=100 gave {len(d2.train_y)} training images"
    assert len(d2.test_y) == 50, f"test_limit=50 gave {len(d2.test_y)} test images"
    assert torch.equal(d2.train_x, load_dataset("digits", limit=100).train_x)


@pytest.fixture(scope="module")
def fashion():
    if not HAVE_DEBIAN:
        pytest.skip(f"Debian dataset-fashion-mnist not installed ({D.DEBIAN_FASHION_DIR})")
    return load_dataset("fashion-mnist", download=False)


@needs_debian
def test_fashion_debian(fashion):
    d = fashion
    assert d.source == os.path.normpath(D.DEBIAN_FASHION_DIR)
    assert d.train_x.shape == (60000, 1, 28, 28), f"fashion train_x shape {tuple(d.train_x.shape)}"
    assert d.test_x.shape == (10000, 1, 28, 28), f"fashion test_x shape {tuple(d.test_x.shape)}"
    assert d.train_x.dtype == torch.uint8, f"train_x dtype {d.train_x.dtype}"
    assert d.train_y.dtype == torch.int64, f"train_y dtype {d.train_y.dtype}"
    assert d.info.num_classes == 10, f"fashion num_classes {d.info.num_classes}"
    assert len(d.info.class_names) == 10, f"fashion class_names {d.info.class_names}"
    assert torch.equal(torch.bincount(d.test_y), torch.full((10,), 1000))
    small = load_dataset("fashion-mnist", limit=500, download=False)
    assert small.train_x.shape == (500, 1, 28, 28), f"limit=500 train_x shape {tuple(small.train_x.shape)}"
    assert len(small.test_y) == 10000, f"limit=500 cut the test set to {len(small.test_y)}"
    assert len(torch.unique(small.train_y)) == 10  # shuffled subset, not the first 500
    idx = torch.randperm(60000, generator=torch.Generator().manual_seed(0))[:500]
    assert torch.equal(small.train_x, d.train_x[idx]), "limit=500 images are not the seed-0 permutation's first 500"
    assert torch.equal(small.train_y, d.train_y[idx]), "limit=500 labels are not the seed-0 permutation's first 500"


@needs_debian
def test_fashion_torchvision_layout(fashion, tmp_path, monkeypatch):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in D.FASHION_FILES:
        os.symlink(os.path.join(D.DEBIAN_FASHION_DIR, f + ".gz"), raw / (f + ".gz"))
    hide_debian(monkeypatch, tmp_path)
    d = load_dataset("fashion-mnist", data_dir=str(tmp_path), download=False, test_limit=100)
    assert d.source == str(raw)
    assert torch.equal(d.train_x, fashion.train_x), "torchvision layout: training images differ from the Debian files'"
    assert torch.equal(d.train_y, fashion.train_y), "torchvision layout: training labels differ from the Debian files'"
    assert d.test_x.shape == (100, 1, 28, 28)


@pytest.mark.parametrize("sub,gz", [("", True), ("fashion-mnist", False), ("FashionMNIST/raw", True)])
def test_tiny_idx_layouts(tmp_path, monkeypatch, sub, gz):
    hide_debian(monkeypatch, tmp_path)
    xtr, ytr, xte, yte = write_tiny_fashion(tmp_path / sub, gz=gz)
    d = load_dataset("fashion-mnist", data_dir=str(tmp_path), download=False)
    assert d.train_x.shape == (20, 1, 28, 28), f"layout {sub!r} gz={gz}: train_x shape {tuple(d.train_x.shape)}"
    assert d.test_x.shape == (8, 1, 28, 28), f"layout {sub!r} gz={gz}: test_x shape {tuple(d.test_x.shape)}"
    assert np.array_equal(d.train_x[:, 0].numpy(), xtr), \
        f"layout {sub!r} gz={gz}: training images differ from the written ones"
    assert np.array_equal(d.train_y.numpy(), ytr), \
        f"layout {sub!r} gz={gz}: training labels differ from the written ones"
    assert np.array_equal(d.test_x[:, 0].numpy(), xte), \
        f"layout {sub!r} gz={gz}: test images differ from the written ones"
    assert np.array_equal(d.test_y.numpy(), yte), f"layout {sub!r} gz={gz}: test labels differ from the written ones"


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_idx(tmp_path, monkeypatch, gz):
    hide_debian(monkeypatch, tmp_path)
    write_tiny_fashion(tmp_path, gz=gz)
    bad = tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    bad.write_bytes(bad.read_bytes()[:-40])
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        load_dataset("fashion-mnist", data_dir=str(tmp_path), download=False)


def write_cifar(root, cifar100: bool, n: int = 3, seed: int = 0):
    """Tiny batches in torchvision's pickle format; returns ({file: (data [n, 3072], labels)}, names)."""
    rng = np.random.default_rng(seed)
    folder = root / ("cifar-100-python" if cifar100 else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    k = 100 if cifar100 else 10
    files = ["train", "test"] if cifar100 else [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    # The released files are Python-2 pickles whose str keys torchvision reads with
    # encoding="latin1" as str ('data', 'labels'); Python-3 str keys give the same dicts.
    label_key = "fine_labels" if cifar100 else "labels"
    written = {}
    for f in files:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)  # row = R plane, G plane, B plane (32×32 each)
        labels = rng.integers(0, k, n).tolist()
        written[f] = (data, labels)
        (folder / f).write_bytes(pickle.dumps({"data": data, label_key: labels}, protocol=2))
    names = [f"class{i}" for i in range(k)]
    meta = {"fine_label_names": names, "coarse_label_names": ["c"] * 20} if cifar100 else {"label_names": names}
    (folder / ("meta" if cifar100 else "batches.meta")).write_bytes(pickle.dumps(meta, protocol=2))
    return written, names


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_pickles(tmp_path, name):
    c100 = name == "cifar100"
    written, names = write_cifar(tmp_path, c100)
    d = load_dataset(name, data_dir=str(tmp_path), download=False)
    train_files = ["train"] if c100 else [f"data_batch_{i}" for i in range(1, 6)]
    test_file = "test" if c100 else "test_batch"
    tr = np.concatenate([written[f][0] for f in train_files])
    assert d.train_x.shape == (len(tr), 3, 32, 32), f"{name}: train_x shape {tuple(d.train_x.shape)}"
    assert d.test_x.shape == (3, 3, 32, 32), f"{name}: test_x shape {tuple(d.test_x.shape)}"
    assert d.train_x.dtype == torch.uint8, f"{name}: train_x dtype {d.train_x.dtype}"
    assert d.info.class_names == tuple(names), f"{name}: class_names {d.info.class_names}"
    assert d.info.num_classes == (100 if c100 else 10), f"{name}: num_classes {d.info.num_classes}"
    assert d.info.channels == 3, f"{name}: channels {d.info.channels}"
    assert d.train_y.tolist() == sum((written[f][1] for f in train_files), [])
    assert d.test_y.tolist() == written[test_file][1]
    # channel planes round-trip through torchvision's HWC conversion and our CHW permute
    assert np.array_equal(d.train_x.reshape(len(tr), -1).numpy(), tr)
    assert np.array_equal(d.test_x[1].numpy(), written[test_file][0][1].reshape(3, 32, 32))
    assert np.array_equal(d.test_x[2, 1].numpy(), written[test_file][0][2][1024:2048].reshape(32, 32))  # green plane


def test_cifar_missing_batch(tmp_path):
    write_cifar(tmp_path, False)
    os.remove(tmp_path / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(DataError, match="data_batch_3"):
        load_dataset("cifar10", data_dir=str(tmp_path), download=False)


@pytest.mark.parametrize("name", ["fashion-mnist", "cifar10", "cifar100"])
def test_missing_data_message(tmp_path, monkeypatch, name):
    hide_debian(monkeypatch, tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as e:
        load_dataset(name, data_dir=str(empty), download=False)
    msg = str(e.value)
    assert "\n" not in msg, f"{name}: the message spans lines: {msg!r}"
    assert "--data-dir" in msg, f"{name}: the message does not mention --data-dir: {msg!r}"
    assert "download" in msg, f"{name}: the message does not mention download: {msg!r}"
    assert "apt-get" in msg, f"{name}: the message does not mention apt-get: {msg!r}"
    assert "Debian" in msg, f"{name}: the message does not mention Debian: {msg!r}"
    if name != "fashion-mnist":
        assert "no Debian package" in msg, f"{name}: the message does not say there is no Debian package: {msg!r}"
        assert "digits" in msg, f"{name}: the message does not offer digits: {msg!r}"


def test_bad_names():
    with pytest.raises(DataError, match="cifar100"):
        load_dataset("mnist")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("digits", data_dir="/nonexistent/dir")


def test_split_indices():
    tr, va = split_indices(101, 0.3, seed=1)
    assert tr.dtype == va.dtype == torch.int64, f"index dtypes {tr.dtype}, {va.dtype}"
    assert len(va) == round(101 * 0.3), f"{len(va)} validation indices of 101 at fraction 0.3"
    assert sorted(torch.cat([tr, va]).tolist()) == list(range(101))
    tr2, va2 = split_indices(101, 0.3, seed=1)
    assert torch.equal(tr, tr2), "the same seed gave other training indices"
    assert torch.equal(va, va2), "the same seed gave other validation indices"
    assert not torch.equal(va, split_indices(101, 0.3, seed=2)[1])
    assert len(split_indices(10)[1]) == 5
    with pytest.raises(DataError):
        split_indices(10, 1.5)


# ----------------------------------------------------------------------------- DeviceLoader

def synthetic(n=100, c=1, h=28, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 256, (n, c, h, h), generator=g, dtype=torch.uint8), torch.arange(n)  # label = index


def test_loader_shapes_len_drop_last():
    info = make_info()
    x, y = synthetic(100)
    tr = DeviceLoader(x, y, info, 32, train=True)
    batches = list(tr.epoch(torch.Generator().manual_seed(0)))
    assert len(tr) == len(batches) == 3, f"len {len(tr)}, {len(batches)} batches, expected 3 (drop_last)"
    assert all(b.shape == (32, 1, 32, 32) for b, _ in batches), f"batch shapes {[tuple(b.shape) for b, _ in batches]}"
    assert batches[0][0].dtype == torch.float32, f"image dtype {batches[0][0].dtype}"
    assert batches[0][1].dtype == torch.int64, f"label dtype {batches[0][1].dtype}"
    ev = DeviceLoader(x, y, info, 32, train=False)
    batches = list(ev.epoch())
    assert len(ev) == len(batches) == 4, f"eval: len {len(ev)}, {len(batches)} batches, expected 4 (last one partial)"
    assert batches[-1][0].shape == (4, 1, 32, 32), f"eval: last batch shape {tuple(batches[-1][0].shape)}"
    assert torch.equal(torch.cat([b for _, b in batches]), y)  # eval: no shuffle, all samples in order
    assert len(DeviceLoader(x, y, info, 32, train=True, drop_last=False)) == 4
    assert len(DeviceLoader(x, y, info, 32, train=False, drop_last=True)) == 3
    with pytest.raises(DataError):
        DeviceLoader(x.float(), y, info, 32, train=True)


@pytest.mark.parametrize("c", [1, 3])
def test_loader_channels_last_and_dtype(c):
    info = make_info(c=c, h=32)
    x, y = synthetic(40, c=c, h=32)
    ref = next(DeviceLoader(x, y, info, 16, train=True).epoch(torch.Generator().manual_seed(3)))[0]
    out = next(DeviceLoader(x, y, info, 16, train=True, channels_last=True).epoch(torch.Generator().manual_seed(3)))[0]
    assert out.is_contiguous(memory_format=torch.channels_last), f"c={c}: the batch is not channels-last"
    assert torch.equal(out, ref), f"c={c}: the channels-last batch differs from the NCHW one"
    if c > 1:
        assert ref.is_contiguous(), "the default batch is not NCHW-contiguous"
        assert not out.is_contiguous(), "the channels-last batch is NCHW-contiguous"
    bf = next(DeviceLoader(x, y, info, 16, train=True, dtype=torch.bfloat16).epoch(torch.Generator().manual_seed(3)))[0]
    assert bf.dtype == torch.bfloat16, f"c={c}: dtype {bf.dtype}, asked for bfloat16"
    assert torch.allclose(bf.float(), ref, atol=0.05), f"c={c}: the bfloat16 batch differs from the float32 one"


def test_loader_determinism():
    info = make_info()
    x, y = synthetic(64)
    ld = DeviceLoader(x, y, info, 16, train=True)
    run = lambda seed: list(ld.epoch(torch.Generator().manual_seed(seed)))  # noqa: E731
    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))
    assert not torch.equal(a[0][0], c[0][0]), "seeds 0 and 1 gave the same first images"
    assert not torch.equal(a[0][1], c[0][1]), "seeds 0 and 1 gave the same first labels"


@pytest.mark.parametrize("c,h,s,pad", [(1, 28, 32, 4), (3, 32, 32, 4), (1, 8, 8, 1)])
def test_loader_eval_center_crop(c, h, s, pad):
    info = make_info(c=c, h=h, s=s, pad=pad)
    x, y = synthetic(10, c=c, h=h)
    out, lab = next(DeviceLoader(x, y, info, 10, train=False).epoch())
    u = to_uint8(out, info)  # also checks: multiples of 1/255 within [0, 1]
    o = (h + 2 * pad - s) // 2  # offset of the crop in the padded image
    ref = F.pad(x, (pad,) * 4)[:, :, o:o + s, o:o + s]
    assert torch.equal(u, ref), f"c={c} h={h} s={s} pad={pad}: eval images are not the center crops"
    assert torch.equal(lab, y), f"c={c} h={h} s={s} pad={pad}: eval labels are not in order"
    if h < s:  # fashion: the 28×28 image sits inside a 2-pixel zero border
        b = (s - h) // 2
        assert torch.equal(u[:, :, b:b + h, b:b + h], x), f"h={h} s={s}: the image is not at the center of the crop"
        assert int(u.sum()) == int(x.sum(dtype=torch.int64)), f"h={h} s={s}: the border around the image is not zero"


@pytest.mark.parametrize("flip,c,h,s,pad", [(True, 1, 28, 32, 4), (False, 1, 8, 8, 1), (True, 3, 32, 32, 4)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_loader_train_crops_are_windows(flip, c, h, s, pad, channels_last):
    info = make_info(c=c, h=h, s=s, pad=pad, flip=flip)
    x, y = synthetic(48, c=c, h=h)
    ld = DeviceLoader(x, y, info, 24, train=True, channels_last=channels_last)
    seen, labels = [], []
    for out, lab in ld.epoch(torch.Generator().manual_seed(0)):
        u = to_uint8(out, info)
        labels += lab.tolist()
        for i in range(len(lab)):
            hits = find_windows(x[lab[i]], u[i], info)  # label = source index: checks image/label pairing
            assert len(hits) == 1, hits
            seen.append(hits[0])
    assert sorted(labels) == list(range(48)), "the epoch does not hold every sample once"
    assert labels != list(range(48)), "the epoch is not shuffled"  # a shuffled full epoch
    flips = sum(f for *_, f in seen)
    assert (0 < flips < len(seen)) if flip else flips == 0
    assert len({(oy, ox) for oy, ox, _ in seen}) > 5  # offsets vary per sample
    m = h + 2 * pad - s
    assert all(0 <= oy <= m and 0 <= ox <= m for oy, ox, _ in seen)


@needs_debian
def test_loader_on_fashion(fashion):
    ld = DeviceLoader(fashion.test_x[:256], fashion.test_y[:256], fashion.info, 64, train=True, channels_last=True)
    out, lab = next(ld.epoch(torch.Generator().manual_seed(0)))
    assert out.shape == (64, 1, 32, 32), f"image batch shape {tuple(out.shape)}"
    assert lab.shape == (64,), f"label batch shape {tuple(lab.shape)}"
    assert abs(float(out.mean())) < 0.5, f"batch mean {float(out.mean()):.3f}"
    assert 0.6 < float(out.std()) < 1.4, f"batch std {float(out.std()):.3f}"  # roughly standardized


def test_cifar_batches_are_read_without_running_code(tmp_path):
    """A batch file that would run code when unpickled is refused, and the code does not run."""
    write_cifar(tmp_path, False)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "cifar-10-batches-py" / "data_batch_2").write_bytes(pickle.dumps({"data": Evil()}, protocol=2))
    with pytest.raises(DataError, match="data_batch_2.*refusing to load"):
        load_dataset("cifar10", data_dir=str(tmp_path), download=False)
    assert not marker.exists()
