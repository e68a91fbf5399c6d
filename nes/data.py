"""Datasets (Fashion-MNIST, CIFAR-10/100, scikit-learn digits) held whole on one device as uint8,
and `DeviceLoader`, a batched loader that augments (random crop + flip) and normalizes on that
device with a handful of tensor ops per batch (no per-sample Python, no PIL).

Sources are tried in order and all named in the `DataError` when none works: an explicit data
directory, the Debian package (Fashion-MNIST only), then a torchvision download (needs internet).
"""
from __future__ import annotations

import dataclasses
import gzip
import math
import os
import pickle
import zlib
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .config import DATASET_NAMES

DATASETS = DATASET_NAMES  # the names settings accept (nes.config), each with its loader below
DEBIAN_FASHION_DIR = "/usr/share/datasets/fashion-mnist"
CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "nes")  # torchvision download root

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FASHION_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class DataError(ValueError):
    """A user-facing data problem (missing, corrupt or misconfigured dataset)."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    channels: int
    height: int  # stored image size
    width: int
    image_size: int  # network input size S after the (padded) crop
    pad: int  # zero padding before the crop
    flip: bool  # horizontal-flip augmentation
    mean: tuple[float, ...]  # per-channel, of [0,1]-scaled train images
    std: tuple[float, ...]
    class_names: tuple[str, ...]

    def with_crop(self, image_size: int | None = None, pad: int | None = None) -> "DatasetInfo":
        """This info with another network input size / crop padding (None keeps the default)."""
        size = self.image_size if image_size is None else int(image_size)
        p = self.pad if pad is None else int(pad)
        if p < 0 or size < 1 or size > min(self.height, self.width) + 2 * p:
            raise DataError(f"image_size={size} with pad={p} does not fit {self.name} images of "
                            f"{self.height}×{self.width} (need 1 <= image_size <= size + 2·pad)")
        return dataclasses.replace(self, image_size=size, pad=p)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@dataclass
class Dataset:
    info: DatasetInfo
    train_x: torch.Tensor  # uint8 [N, C, H, W]
    train_y: torch.Tensor  # int64 [N]
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str  # directory read from, or "scikit-learn"


def downsample(ds: Dataset, info: DatasetInfo, factor: int) -> tuple[Dataset, DatasetInfo]:
    """The dataset's images shrunk `factor`× by area averaging (uint8 kept) and its cropping info
    scaled alike: a cheaper, lower-resolution search (factor 1 returns both unchanged)."""
    if factor == 1:
        return ds, info
    if min(info.height, info.width, info.image_size) < 2 * factor:
        raise DataError(f"downsample={factor} leaves less than 2 pixels of the {info.height}×{info.width} "
                        f"{info.name} images; use a smaller factor")

    def shrink(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x.float(), factor, factor).round_().to(torch.uint8)
    small = dataclasses.replace(ds, train_x=shrink(ds.train_x), test_x=shrink(ds.test_x))
    new = dataclasses.replace(info, height=info.height // factor, width=info.width // factor,
                              image_size=info.image_size // factor, pad=info.pad // factor)
    return small, new


def resized(x: torch.Tensor, info: DatasetInfo, size: int) -> tuple[torch.Tensor, DatasetInfo]:
    """Images X (uint8 [N, C, H, W]) shrunk so that INFO's crop becomes SIZE pixels (antialiased
    bilinear, uint8 kept) and the cropping info scaled alike (padding rounded, at least 1 when the
    full size pads): a cheaper early training epoch (progressive resizing). SIZE ≥ the crop
    returns both unchanged."""
    if size >= info.image_size:
        return x, info
    f = size / info.image_size
    h, w = max(1, round(info.height * f)), max(1, round(info.width * f))
    pad = max(1, round(info.pad * f)) if info.pad else 0
    small = F.interpolate(x.float(), size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    small = small.round_().clamp_(0, 255).to(torch.uint8)
    return small, dataclasses.replace(info, height=h, width=w).with_crop(min(size, min(h, w) + 2 * pad), pad)


# ----------------------------------------------------------------------------- Fashion-MNIST

def _short(e: Exception) -> str:
    return " ".join(str(e).split())[:120]  # keep the DataError one short paragraph


def _read_idx(path: str, ndim: int) -> np.ndarray:
    """Parse one IDX file (.gz or raw): magic 0x0000080N (2051 images, 2049 labels), big-endian dims."""
    try:
        with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # truncated / corrupt gzip stream
        raise DataError(f"Cannot read IDX file {path}: {e}. The file is truncated or corrupt; "
                        "replace it with a fresh copy.") from e
    head = 4 + 4 * ndim
    magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else -1
    if magic != 0x800 + ndim or len(raw) < head:
        raise DataError(f"{path} is not an IDX file with {ndim} dims (magic {magic}, expected "
                        f"{0x800 + ndim}); the file is corrupt or misnamed.")
    dims = [int(d) for d in np.frombuffer(raw, ">u4", ndim, 4)]
    want = head + math.prod(dims)
    if len(raw) != want:
        raise DataError(f"IDX file {path} is truncated or corrupt: its header says shape {dims} "
                        f"({want} bytes) but it has {len(raw)} bytes.")
    return np.frombuffer(raw, np.uint8, offset=head).reshape(dims).copy()


def _find_idx(d: str) -> list[str] | None:
    """The four Fashion-MNIST files in directory `d` (raw preferred over .gz), or None."""
    found = []
    for name in FASHION_FILES:
        hits = [p for p in (os.path.join(d, name), os.path.join(d, name + ".gz")) if os.path.isfile(p)]
        if not hits:
            return None
        found.append(hits[0])
    return found


def _load_idx_dir(paths: list[str]) -> tuple[torch.Tensor, ...]:
    xs, ys = [_read_idx(p, 3) for p in paths[0::2]], [_read_idx(p, 1) for p in paths[1::2]]
    for x, y, px in zip(xs, ys, paths[0::2]):
        if x.shape[1:] != (28, 28) or len(x) != len(y) or (len(y) and y.max() >= 10):
            raise DataError(f"{px}: expected 28x28 images with one label 0..9 each, got images "
                            f"{list(x.shape)} and {len(y)} labels.")
    # -> train_x, train_y, test_x, test_y: uint8 [N, 1, 28, 28], int64 [N]
    return tuple(t for x, y in zip(xs, ys)
                 for t in (torch.from_numpy(x)[:, None], torch.from_numpy(y).long()))


def _load_fashion(data_dir: str | None, download: bool) -> tuple[tuple[torch.Tensor, ...], str]:
    tried: list[str] = []
    root = data_dir or CACHE_DIR
    subdirs = ("", "fashion-mnist", os.path.join("FashionMNIST", "raw"))
    for d in ([os.path.join(data_dir, s) for s in subdirs] if data_dir else []) + [DEBIAN_FASHION_DIR]:
        paths = _find_idx(d)
        if paths:
            return _load_idx_dir(paths), os.path.normpath(d)
        tried.append(f"{os.path.normpath(d)} (no IDX files)")
    raw = os.path.join(root, "FashionMNIST", "raw")  # torchvision's layout, also an earlier download
    if download:
        try:
            from torchvision import datasets
            datasets.FashionMNIST(root=root, train=True, download=True)
            datasets.FashionMNIST(root=root, train=False, download=True)
        except Exception as e:  # offline, mirror down, checksum mismatch ...
            tried.append(f"torchvision download into {root} ({type(e).__name__}: {_short(e)})")
    else:
        tried.append("torchvision download (disabled)")
    paths = _find_idx(raw)
    if paths:
        return _load_idx_dir(paths), raw
    if not data_dir:
        tried.append(f"{raw} (no earlier download)")
    raise DataError(
        "Fashion-MNIST not found. Provide it in one of three ways: pass --data-dir DIR holding the "
        "four IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-"
        "ubyte.gz, t10k-labels-idx1-ubyte.gz; also accepted in DIR/fashion-mnist/ or torchvision's "
        f"DIR/FashionMNIST/raw/); install the Debian package (`apt-get install dataset-fashion-mnist`, "
        f"files in {DEBIAN_FASHION_DIR}); or allow torchvision to download it (needs internet). "
        f"Tried: {'; '.join(tried)}.")


# ----------------------------------------------------------------------------- CIFAR

def _local_cifar(cifar100: bool) -> type:
    """torchvision's CIFAR class: its file layout (batch names, meta file and key) and its
    md5-checked download. Reading the batches is ours (`_read_batch`): torchvision unpickles them
    with plain `pickle`, which runs whatever code a file holds."""
    from torchvision import datasets
    return datasets.CIFAR100 if cifar100 else datasets.CIFAR10


# The globals a CIFAR batch may name: numpy arrays and dtypes, and the bytes codec of protocol 2.
_PICKLE_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                   ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _DataOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain data and numpy arrays only: any other global (a function, a class that
    could run code on load) is refused, so an untrusted batch file cannot execute anything."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR batch holds only data and "
                                     "numpy arrays (this file is not one, or was tampered with)")


def _read_batch(path: str) -> dict:
    with open(path, "rb") as f:
        entry = _DataOnlyUnpickler(f, encoding="latin1").load()
    if not isinstance(entry, dict):
        raise ValueError(f"expected a dict, got {type(entry).__name__}")
    return entry


def _load_cifar_root(cls: type, root: str) -> tuple[tuple[torch.Tensor, ...], tuple[str, ...]]:
    folder = os.path.join(root, cls.base_folder)
    missing = [f for f, _ in cls.train_list + cls.test_list + [[cls.meta["filename"], None]]
               if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise DataError(f"{folder} is incomplete: missing {', '.join(missing)}.")
    out: list[torch.Tensor] = []
    current = folder
    try:
        for files in (cls.train_list, cls.test_list):
            data, labels = [], []
            for f, _ in files:
                current = os.path.join(folder, f)
                entry = _read_batch(current)
                data.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))  # R, G, B planes
                labels += list(entry["labels"] if "labels" in entry else entry["fine_labels"])
            out += [torch.from_numpy(np.concatenate(data)).contiguous(), torch.tensor(labels, dtype=torch.long)]
        current = os.path.join(folder, cls.meta["filename"])
        classes = tuple(_read_batch(current)[cls.meta["key"]])
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as e:
        raise DataError(f"Corrupt CIFAR batch file {current}: {e!r}.") from e
    return tuple(out), classes


def _load_cifar(name: str, data_dir: str | None, download: bool
                ) -> tuple[tuple[torch.Tensor, ...], tuple[str, ...], str]:
    cls = _local_cifar(name == "cifar100")
    title = "CIFAR-100" if name == "cifar100" else "CIFAR-10"
    root = data_dir or CACHE_DIR
    tried: list[str] = []
    if data_dir:
        folder = os.path.join(data_dir, cls.base_folder)
        if os.path.isdir(folder):
            return (*_load_cifar_root(cls, data_dir), folder)
        tried.append(f"{folder} (absent)")
    if download:
        try:
            cls(root, train=True, download=True)  # torchvision: the md5-checked download of the official files
        except Exception as e:  # offline, server down, checksum mismatch ...
            tried.append(f"torchvision download into {root} ({type(e).__name__}: {_short(e)})")
    else:
        tried.append("torchvision download (disabled)")
    folder = os.path.join(root, cls.base_folder)
    if os.path.isdir(folder):  # just downloaded, or an earlier download into the cache
        return (*_load_cifar_root(cls, root), folder)
    if not data_dir:
        tried.append(f"{folder} (no earlier download)")
    raise DataError(
        f"{title} not found. Provide it in one of these ways: pass --data-dir DIR containing "
        f"{cls.base_folder}/ (the extracted 'python version' archive from "
        "https://www.cs.toronto.edu/~kriz/cifar.html); or allow torchvision to download it (needs "
        "internet). There is no Debian package for CIFAR (unlike `apt-get install "
        "dataset-fashion-mnist`); for offline use try --dataset digits or --dataset fashion-mnist. "
        f"Tried: {'; '.join(tried)}.")


def _load_digits() -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.from_numpy(np.floor(d.images * (255 / 16) + 0.5).astype(np.uint8))[:, None]  # [1797, 1, 8, 8]
    y = torch.from_numpy(d.target).long()
    test, train = _perm(len(y)).split([round(len(y) / 5), len(y) - round(len(y) / 5)])  # 1/5 test
    return x[train], y[train], x[test], y[test]


# ----------------------------------------------------------------------------- public API

_INFO = {  # name, classes, C, H, W, S, pad, flip, mean, std, class names (CIFAR: from the files)
    "fashion-mnist": DatasetInfo("fashion-mnist", 10, 1, 28, 28, 32, 4, True, (0.2860,), (0.3530,),
                                 FASHION_CLASSES),
    "cifar10": DatasetInfo("cifar10", 10, 3, 32, 32, 32, 4, True, (0.4914, 0.4822, 0.4465),
                           (0.2470, 0.2435, 0.2616), ()),
    "cifar100": DatasetInfo("cifar100", 100, 3, 32, 32, 32, 4, True, (0.5071, 0.4865, 0.4409),
                            (0.2673, 0.2564, 0.2762), ()),
    "digits": DatasetInfo("digits", 10, 1, 8, 8, 8, 1, False, (0.0,), (1.0,), tuple("0123456789")),
}


def _perm(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def _subset(x: torch.Tensor, y: torch.Tensor, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `limit` samples after a fixed (seed 0) shuffle: roughly class-balanced."""
    if limit is None or limit >= len(y):
        return x, y
    if limit < 1:
        raise DataError(f"limit must be a positive number of images, got {limit}.")
    idx = _perm(len(y))[:limit]
    return x[idx], y[idx]


def load_dataset(name: str, data_dir: str | None = None, device: str | torch.device = "cpu",
                 limit: int | None = None, test_limit: int | None = None, download: bool = True) -> Dataset:
    """Load a whole dataset as uint8 [N, C, H, W] images and int64 labels on `device`."""
    if name not in DATASETS:
        raise DataError(f"Unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}.")
    if data_dir is not None and not os.path.isdir(data_dir):
        raise DataError(f"Data directory {data_dir} does not exist.")
    info = _INFO[name]
    if name == "fashion-mnist":
        tensors, source = _load_fashion(data_dir, download)
    elif name == "digits":
        tensors, source = _load_digits(), "scikit-learn"
        xf = tensors[0].double() / 255  # mean/std of its own train split (0.3057 / 0.3759)
        info = dataclasses.replace(info, mean=(round(xf.mean().item(), 4),),
                                   std=(round(xf.std().item(), 4),))
    else:
        tensors, classes, source = _load_cifar(name, data_dir, download)
        if len(classes) != info.num_classes:
            raise DataError(f"{source}: expected {info.num_classes} class names, found {len(classes)}.")
        info = dataclasses.replace(info, class_names=tuple(classes))
    train_x, train_y, test_x, test_y = tensors
    train_x, train_y = _subset(train_x, train_y, limit)
    test_x, test_y = _subset(test_x, test_y, test_limit)
    dev = torch.device(device)
    return Dataset(info, train_x.contiguous().to(dev), train_y.to(dev), test_x.contiguous().to(dev),
                   test_y.to(dev), source)


def split_indices(n: int, val_fraction: float = 0.5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic shuffled split of range(n) -> (train_idx, val_idx); int64 CPU, |val| = round(n·f)."""
    if not 0.0 <= val_fraction <= 1.0:
        raise DataError(f"val_fraction must be in [0, 1], got {val_fraction}.")
    perm = _perm(n, seed)
    n_val = round(n * val_fraction)
    if 0 < val_fraction < 1 and not 1 <= n_val <= n - 1:
        raise DataError(f"setting val_fraction={val_fraction} of {n} training images leaves {n_val} validation and "
                        f"{n - n_val} training images; --set val_fraction=… so that both get at least one")
    return perm[n_val:], perm[:n_val]


class DeviceLoader:
    """Batches of augmented, normalized images from uint8 tensors already on the target device.

    The dataset is zero-padded once (uint8, [N', Hp, Wp] per channel); with flip augmentation a
    horizontally flipped copy is appended, so a flipped crop is just a crop of the copy (2× the
    uint8 memory, saves a per-batch `where`). Each crop row (S pixels, or S·C for channels-last
    storage) is contiguous, so a batch is ONE `index_select` of B·C·S rows from an overlapping
    [L, row] window view of the flat storage, followed by a fused uint8→float scale + shift.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, info: DatasetInfo, batch_size: int,
                 train: bool, shuffle: bool | None = None, drop_last: bool | None = None,
                 channels_last: bool = False, dtype: torch.dtype = torch.float32) -> None:
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != info.channels or len(x) != len(y):
            raise DataError(f"DeviceLoader needs uint8 [N, {info.channels}, H, W] images and N labels, "
                            f"got {x.dtype} {list(x.shape)} and {len(y)} labels.")
        if batch_size < 1:
            raise DataError(f"batch_size must be positive, got {batch_size}.")
        n, c, h, w = x.shape
        s, p = info.image_size, info.pad
        hp, wp = h + 2 * p, w + 2 * p
        if s > hp or s > wp:
            raise DataError(f"crop {s} is larger than the padded {hp}x{wp} image.")
        self.info, self.y, self.n, self.batch_size, self.train = info, y, n, batch_size, train
        self.shuffle = train if shuffle is None else shuffle
        self.drop_last = train if drop_last is None else drop_last
        self.channels_last, self.dtype, self.flip = channels_last, dtype, train and info.flip
        self.max_off = (hp - s, wp - s)
        dev = x.device
        xp = F.pad(x, (p, p, p, p))  # uint8 [N, C, Hp, Wp]
        if channels_last:
            xp = xp.permute(0, 2, 3, 1).contiguous()  # [N, Hp, Wp, C]: a crop row = S·C contiguous bytes
        if self.flip:
            xp = torch.cat([xp, xp.flip(2 if channels_last else 3)])  # [2N, ...]; image i+N = mirrored i
        flat = xp.reshape(-1)
        row = s * c if channels_last else s
        self._win = flat.as_strided((flat.numel() - row + 1, row), (1, 1))  # win[k] = flat[k:k+row]
        ar = torch.arange(s, device=dev)
        std = torch.tensor(info.std, dtype=torch.float32, device=dev)
        mean = torch.tensor(info.mean, dtype=torch.float32, device=dev)
        scale, shift = 1.0 / (255.0 * std), -mean / std
        if channels_last:
            # row starts within an image: r·Wp·C; per-channel constants tiled along the S·C row
            # (a size-C innermost broadcast on a channels-last tensor is ~8× slower on CPU)
            self._base = ar * (wp * c)
            self._strides = (hp * wp * c, wp * c, c)  # image, y, x
            self._scale, self._shift = scale.repeat(s), shift.repeat(s)  # [S·C]
        else:
            self._base = (torch.arange(c, device=dev)[:, None] * (hp * wp) + ar * wp).reshape(-1)  # [C·S]
            self._strides = (c * hp * wp, wp, 1)
            self._scale, self._shift = scale[:, None], shift[:, None]  # [C, 1] against [B, C, S·S]
        self._sc = (s, c)

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def epoch(self, generator: torch.Generator | None = None
              ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (images `dtype` [B, C, S, S] normalized, labels int64 [B]) on the data's device."""
        n, (my, mx), dev = self.n, self.max_off, self._win.device
        # Per-epoch randomness drawn on the CPU generator in a fixed order: perm, oy, ox, flip.
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        if self.train:
            oy = torch.randint(0, my + 1, (n,), generator=generator)
            ox = torch.randint(0, mx + 1, (n,), generator=generator)
        else:  # center crop of the padded image
            oy, ox = torch.full((n,), my // 2), torch.full((n,), mx // 2)
        img = order
        if self.flip:
            fl = torch.randint(0, 2, (n,), generator=generator).bool()
            # flip(crop of image i at ox) == crop of its mirrored copy i + N at mx - ox
            img, ox = order + fl * n, torch.where(fl, mx - ox, ox)
        si, sy, sx = self._strides
        start = (img * si + oy * sy + ox * sx).to(dev)  # int64 [N]: flat offset of each crop
        labels = self.y[order.to(self.y.device)]
        s, c = self._sc
        for i in range(len(self)):
            st = start[i * self.batch_size:(i + 1) * self.batch_size]
            b = st.numel()
            # uint8 [B·C·S, S] (NCHW storage) or [B·S, S·C] (NHWC storage)
            rows = self._win.index_select(0, (st[:, None] + self._base).reshape(-1))
            if self.channels_last:  # [B, S, S, C] viewed as channels-last [B, C, S, S]
                out = rows.float().mul_(self._scale).add_(self._shift).view(b, s, s, c).permute(0, 3, 1, 2)
            else:
                out = rows.view(b, c, s * s).float().mul_(self._scale).add_(self._shift).view(b, c, s, s)
            yield out.to(self.dtype), labels[i * self.batch_size:(i + 1) * self.batch_size]
