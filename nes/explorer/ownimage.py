"""Your own image: an uploaded or drawn picture, seen the way a run's members see their data, and
each member's vote on it and the ensemble's, clean or under the dataset-shift corruptions.

Plain data only (the page `pages/image.py` draws it). A picture is decoded with PIL (PNG or JPEG,
bounded in bytes and pixels before a pixel is decoded; nothing is ever unpickled), then made into
the dataset's stored form, uint8 [1, C, H, W]: grayscale datasets (Fashion-MNIST, digits) are
light objects on black, so a picture whose border is light is inverted, cropped to its object,
centered on a square and resized (as Fashion-MNIST was made: longest edge to the image size);
colour datasets (CIFAR) are centre-cropped to a square and resized. An image already of the
dataset's size and kind (a test image) passes through unchanged. The members run it exactly as
their test scores did (`shift.member_network`, `train.infer`: the same crop, normalization and,
where the member's config asks, flip test-time augmentation); the ensemble's vote is the mean of
the members' softmax outputs.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, fields

import numpy as np
import torch

from ..artifacts import ArtifactError, load_tensors
from ..corruptions import SEVERITIES, TEST_CORRUPTIONS, corrupt
from ..data import DataError, DatasetInfo, DeviceLoader
from ..layout import RunDir
from ..method.shift import member_network, split_images
from ..method.train import infer, read_member
from ..runtime import use_channels_last

MAX_BYTES = 16 << 20  # an upload; a phone photo is 2–8 MB
MAX_PIXELS = 50_000_000  # declared pixels, checked on the header before decoding (a 12 MP photo is fine)
FORMATS = ("PNG", "JPEG")
LIGHT_BORDER = 128  # mean border gray (0–255) above which a grayscale picture counts as light-on-dark inverted
CORRUPTIONS = TEST_CORRUPTIONS
SAMPLE_COUNT = 8
CPU = torch.device("cpu")


class ImageError(ValueError):
    """A picture that cannot be used: not PNG/JPEG, unreadable, too large; the message names it."""


# ----------------------------------------------------------------------------- decoding
def decode(data: bytes, name: str = "the image"):
    """The PIL image (mode "L" or "RGB", pixels loaded) of PNG/JPEG bytes DATA; ImageError naming
    NAME for anything else. Transparent pixels are laid on white (a cut-out garment on no
    background reads as one on a light background)."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > MAX_BYTES:
        raise ImageError(f"{name}: {len(data) / 2**20:.1f} MB is more than the {MAX_BYTES >> 20} MB an image may have "
                         "here; save it smaller (a few hundred pixels a side is plenty) and upload it again")
    if not data:
        raise ImageError(f"{name}: the file is empty; upload a PNG or JPEG image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name}: declares too many pixels (not decoded); resize it below "
                         f"{MAX_PIXELS // 1_000_000} megapixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{name}: not a readable PNG or JPEG image ({str(e)[:120]}); upload a .png or .jpg picture") from None
    if im.format not in FORMATS:
        raise ImageError(f"{name}: a {im.format} image; only PNG and JPEG are read; convert it and upload it again")
    w, h = im.size
    if w * h > MAX_PIXELS or min(w, h) < 1:
        raise ImageError(f"{name}: {w}×{h} pixels is more than {MAX_PIXELS // 1_000_000} megapixels (not decoded); "
                         "resize it and upload it again")
    try:
        im.load()
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{name}: the image data is damaged or truncated ({str(e)[:120]}); save it again") from None
    return _flatten(im)


def _flatten(im):
    """IM as "L" or "RGB": alpha laid on white, palettes and 16-bit grays converted."""
    from PIL import Image

    if im.mode in ("P", "PA", "LA", "RGBA") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba).convert("RGB")
    if im.mode not in ("L", "RGB"):
        im = im.convert("RGB" if im.mode in ("CMYK", "YCbCr", "HSV", "LAB") else "L")
    return im


# ----------------------------------------------------------------------------- preprocessing
@dataclass(frozen=True)
class Prepared:
    """A picture in the dataset's stored form: uint8 [1, C, H, W], whether it was inverted, and
    one sentence saying what was done."""

    images: torch.Tensor
    inverted: bool
    note: str


def border_mean(gray: np.ndarray) -> float:
    """The mean of the outermost pixel ring of a 2-D uint8 array."""
    ring = np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]]) if min(gray.shape) > 1 else gray.ravel()
    return float(ring.mean())


def _object_box(gray: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the pixels brighter than a tenth of the brightest (light on
    black), the whole image when nothing stands out."""
    top = int(gray.max())
    rows, cols = np.nonzero(gray > max(16, top // 10))
    if top < 16 or len(rows) == 0:
        return 0, gray.shape[0], 0, gray.shape[1]
    return int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1


def _square(a: np.ndarray, fill: int = 0) -> np.ndarray:
    """A [H, W] or [H, W, C] array centered on a square of side max(H, W), padded with FILL."""
    h, w = a.shape[:2]
    s = max(h, w)
    out = np.full((s, s) + a.shape[2:], fill, dtype=a.dtype)
    y, x = (s - h) // 2, (s - w) // 2
    out[y:y + h, x:x + w] = a
    return out


def _resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(a).resize(size, Image.Resampling.LANCZOS))


def _gray(img, info: DatasetInfo) -> tuple[np.ndarray, bool, str]:
    """A picture as the dataset's [H, W] uint8 light-on-black image, inverted or not, and a note."""
    a = np.asarray(img.convert("L"))
    if a.shape == (info.height, info.width) and border_mean(a) <= LIGHT_BORDER:
        return a.copy(), False, f"already {info.width}×{info.height} on a dark background: used as it is"
    inverted = border_mean(a) > LIGHT_BORDER
    if inverted:
        a = 255 - a
    t, b, l, r = _object_box(a)
    a = _square(a[t:b, l:r])
    a = _resize(a, (info.width, info.height))
    how = ("its background is light, so it was inverted (the dataset's images are light objects on black), "
           if inverted else "its background is dark, as the dataset's are, so it was not inverted; ")
    return a, inverted, f"{how}cropped to the object, centered and resized to {info.width}×{info.height}"


def _colour(img, info: DatasetInfo) -> tuple[np.ndarray, str]:
    a = np.asarray(img.convert("RGB"))
    if a.shape[:2] == (info.height, info.width):
        return a.copy(), f"already {info.width}×{info.height}: used as it is"
    h, w = a.shape[:2]
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    a = _resize(np.ascontiguousarray(a[y:y + s, x:x + s]), (info.width, info.height))
    return a, f"centre-cropped to a square and resized to {info.width}×{info.height}"


def preprocess(img, info: DatasetInfo) -> Prepared:
    """PIL image IMG (any size, "L" or "RGB") in the stored form of INFO's dataset: uint8 [1, C, H, W]."""
    img = _flatten(img)
    if info.channels == 1:
        a, inverted, note = _gray(img, info)
        x = torch.from_numpy(np.array(a, dtype=np.uint8))[None, None]
    else:
        a, note = _colour(img, info)
        inverted = False
        x = torch.from_numpy(np.array(a, dtype=np.uint8)).permute(2, 0, 1)[None].contiguous()
    return Prepared(x.to(torch.uint8), inverted, note[0].upper() + note[1:] + ".")


def shifted(images: torch.Tensor, corruption: str, severity: int, seed: int = 0) -> torch.Tensor:
    """IMAGES (uint8 [N, C, H, W]) under CORRUPTION at SEVERITY (0: unchanged, the same tensor)."""
    if severity == 0:
        return images
    if corruption not in CORRUPTIONS or severity not in SEVERITIES:
        raise ValueError(f"choose a corruption of {', '.join(CORRUPTIONS)} and a severity 0–5, "
                         f"got {corruption!r} at {severity!r}")
    return corrupt(images, corruption, severity, seed)


# ----------------------------------------------------------------------------- members
def run_info(run_dir) -> DatasetInfo:
    """The dataset facts the run recorded in run.json (ArtifactError when it has none)."""
    run = RunDir(run_dir)
    raw = run.info().get("info")
    try:
        names = {f.name for f in fields(DatasetInfo)}
        return DatasetInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in names})
    except (AttributeError, TypeError) as e:
        raise ArtifactError(f"{run.run_json}: no readable dataset info ({e}); retrain a member to write it") from None


@dataclass
class Member:
    name: str
    net: torch.nn.Module
    info: DatasetInfo  # the dataset's, with the member's own crop
    flip: bool  # flip test-time augmentation, as the member's own test scores


@dataclass
class Members:
    """A run's finished members, loaded for inference, and the dataset they share."""

    info: DatasetInfo
    members: list[Member]

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.info.class_names or tuple(str(k) for k in range(self.info.num_classes))


def members_stamp(run_dir) -> tuple:
    """What changes when a member's weights do: the cache key of `load_members`."""
    run = RunDir(run_dir)
    out = []
    for n in run.finished_members():
        st = run.member(n).weights.stat()
        out.append((n, st.st_size, st.st_mtime_ns))
    return tuple(out)


def load_members(run_dir, names: list[str] | None = None) -> Members:
    """The run's finished members (or NAMES) on the CPU, in eval mode; ArtifactError when there are none."""
    run = RunDir(run_dir)
    names = run.finished_members() if names is None else list(names)
    if not names:
        raise ArtifactError(f"{run.path}: no finished member yet; train one on the Ensemble page first")
    info = run_info(run_dir)
    out = []
    for n in names:
        d = run.member(n)
        saved = read_member(d)
        mine = info.with_crop(saved.config.image_size, saved.config.pad)
        net = member_network(d, saved, mine, CPU)
        out.append(Member(n, net, mine, bool(saved.config.tta_flip and mine.flip)))
    return Members(info, out)


# ----------------------------------------------------------------------------- votes
@dataclass(frozen=True)
class Votes:
    """Member probabilities probs [M, K] and the ensemble's (their mean) [K] on one image."""

    names: tuple[str, ...]
    probs: torch.Tensor
    ensemble: torch.Tensor
    class_names: tuple[str, ...]

    def rows(self) -> list[dict]:
        """One row per member and a last one for the ensemble: top class and its probability."""
        def row(who: str, p: torch.Tensor) -> dict:
            k = int(p.argmax())
            return {"who": who, "class": self.class_names[k], "probability": round(float(p[k]), 4)}
        return [row(n, p) for n, p in zip(self.names, self.probs)] + [row("ensemble (mean)", self.ensemble)]

    def agreement(self) -> int:
        """How many members vote for the ensemble's class."""
        return int((self.probs.argmax(1) == self.ensemble.argmax()).sum())


def member_probs(m: Member, images: torch.Tensor) -> torch.Tensor:
    """Member M's softmax [N, K] on uint8 IMAGES [N, C, H, W], as its test scores were made."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != m.info.channels:
        raise DataError(f"member {m.name} takes uint8 [N, {m.info.channels}, H, W] images, got "
                        f"{images.dtype} {list(images.shape)}")
    loader = DeviceLoader(images, torch.zeros(len(images), dtype=torch.long), m.info, 256, train=False,
                          channels_last=use_channels_last(CPU))
    return infer(m.net, loader, m.flip)


def votes(ms: Members, images: torch.Tensor) -> Votes:
    """Every member's and the ensemble's vote on ONE image (uint8 [1, C, H, W])."""
    probs = torch.stack([member_probs(m, images)[0] for m in ms.members])
    return Votes(tuple(m.name for m in ms.members), probs, probs.mean(0), ms.class_names)


# ----------------------------------------------------------------------------- samples
@dataclass(frozen=True)
class Sample:
    label: str  # the true class
    index: int  # the position in the run's shifted test images (or its shuffled test set)
    images: torch.Tensor  # uint8 [1, C, H, W]


def samples(run_dir, count: int = SAMPLE_COUNT) -> list[Sample]:
    """A few of the run's own test images with their true classes: from its cached shift test
    images (RUN/shift/images/test_*), else its dataset when it is on this machine, else []."""
    run = RunDir(run_dir)
    info = run_info(run_dir)
    names = info.class_names or tuple(str(k) for k in range(info.num_classes))
    x, y = _cached_test_images(run)
    if x is None:
        try:
            cfg = read_member(run.member(run.finished_members()[0])).config
            x, y, _ = split_images(cfg, "test", count, 0)
        except (IndexError, ValueError, OSError):
            return []
    picked = _one_per_class(y, count)
    return [Sample(names[int(y[i])], int(i), x[i:i + 1].clone()) for i in picked]


def _cached_test_images(run: RunDir) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    folder = run.path / "shift" / "images"
    for path in sorted(folder.glob("test_*.safetensors")) if folder.is_dir() else []:
        try:
            t, _ = load_tensors(path)
        except ArtifactError:
            continue
        x, y = t.get("clean"), t.get("labels")
        if x is not None and y is not None and x.dtype == torch.uint8 and x.dim() == 4 and len(x) == len(y):
            return x, y
    return None, None


def _one_per_class(y: torch.Tensor, count: int) -> list[int]:
    """The first image of each class, in class order, then the next ones, COUNT in all."""
    first: dict[int, int] = {}
    for i, k in enumerate(y.tolist()):
        first.setdefault(int(k), i)
    picked = [first[k] for k in sorted(first)][:count]
    rest = [i for i in range(len(y)) if i not in set(picked)]
    return picked + rest[:count - len(picked)]


def sweep(ms: Members, images: torch.Tensor, corruption: str, seed: int = 0) -> list[Votes]:
    """The votes on ONE image (uint8 [1, C, H, W]) under CORRUPTION at every severity 0–5, one
    batch per member: index s is severity s (0 = the image itself)."""
    batch = torch.cat([shifted(images, corruption, s, seed) for s in (0, *SEVERITIES)])
    probs = torch.stack([member_probs(m, batch) for m in ms.members], dim=1)  # [S, M, K]
    names = tuple(m.name for m in ms.members)
    return [Votes(names, p, p.mean(0), ms.class_names) for p in probs]


def sweep_rows(sweeps: list[Votes]) -> list[dict]:
    """One row per severity: the ensemble's class and probability, and each member's probability
    of the class the ensemble picks on the clean image."""
    k = int(sweeps[0].ensemble.argmax())
    cls = sweeps[0].class_names[k]
    rows = []
    for s, v in enumerate(sweeps):
        top = int(v.ensemble.argmax())
        rows.append({"severity": s, "ensemble votes": v.class_names[top],
                     "ensemble p": round(float(v.ensemble[top]), 3),
                     f"ensemble p({cls})": round(float(v.ensemble[k]), 3),
                     "members agreeing": f"{v.agreement()}/{len(v.names)}",
                     **{f"{n} p({cls})": round(float(p[k]), 3) for n, p in zip(v.names, v.probs)}})
    return rows
