"""Export a selected ensemble as a self-contained bundle, and load it back without the app.

A bundle is a folder (optionally also a .zip of it):

    manifest.json            schema "nes-ensemble" version 1: members (name, genotype, λ, seed,
                             network shape, metrics, weights file + sha256 + tensor shapes),
                             dataset, class names, input shape and preprocessing, library
                             versions, architecture-JS and predictive-JS matrices, ensemble metrics
    members/<name>.safetensors   one weights file per member (float32, no optimizer state)
    README.md                model card: intended use, data, metrics, limitations
    ensemble.onnx            optional: the whole ensemble (preprocessing + members + mean softmax)

`load_ensemble(path)` checks the schema, every hash and every tensor shape before it builds
anything, reads only JSON and safetensors (never pickle), and returns an `EnsembleModel`.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import shutil
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from . import __version__
from .artifacts import ArtifactError, atomic_write_bytes, load_tensors, read_json
from .network import Network
from .space import ArchLayout, Genotype, arch_js, cell_types_for

SCHEMA = "nes-ensemble"
SCHEMA_VERSION = 1
ONNX_TOLERANCE = 1e-4  # max |p_onnx − p_torch| accepted by the ONNX check
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

# Keys a version-1 manifest must have (nested dicts by dotted path; per member below).
REQUIRED = ("schema", "schema_version", "dataset", "dataset.name", "dataset.num_classes", "dataset.class_names",
            "dataset.input", "dataset.input.channels", "dataset.input.height", "dataset.input.width",
            "dataset.preprocess", "dataset.preprocess.pad", "dataset.preprocess.image_size",
            "dataset.preprocess.mean", "dataset.preprocess.std", "members")
REQUIRED_MEMBER = ("name", "file", "sha256", "genotype", "network", "network.c", "network.layers", "tensors")


class BundleError(ArtifactError):
    """A bundle that cannot be exported or loaded (the message says what is wrong and what to do)."""


# ----------------------------------------------------------------------------- the model


class EnsembleModel(nn.Module):
    """The members of a bundle as one module.

    `forward(x)` takes float images [N, C, H, W] scaled to [0, 1] (the dataset's stored size),
    applies the members' evaluation preprocessing (zero pad, center crop, normalize) and returns
    the mean of the members' softmax outputs [N, K]. `predict(images)` accepts uint8 or float
    arrays / tensors in the dataset's shape and returns those probabilities as float32 on the CPU.
    """

    def __init__(self, members: Sequence[nn.Module], manifest: dict[str, Any]) -> None:
        super().__init__()
        ds = manifest["dataset"]
        pre, inp = ds["preprocess"], ds["input"]
        self.members = nn.ModuleList(members)
        self.manifest = manifest
        self.member_names = [m["name"] for m in manifest["members"]]
        self.class_names = list(ds["class_names"])
        self.channels, self.height, self.width = int(inp["channels"]), int(inp["height"]), int(inp["width"])
        self.pad, self.image_size = int(pre["pad"]), int(pre["image_size"])
        self.register_buffer("mean", torch.tensor(pre["mean"], dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(pre["std"], dtype=torch.float32).view(1, -1, 1, 1))
        # the evaluation crop: the center of the zero-padded image (as nes.data.DeviceLoader does)
        self.crop_y = (self.height + 2 * self.pad - self.image_size) // 2
        self.crop_x = (self.width + 2 * self.pad - self.image_size) // 2
        self.eval()

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        p, s = self.pad, self.image_size
        if p:
            x = F.pad(x, (p, p, p, p))
        x = x[:, :, self.crop_y:self.crop_y + s, self.crop_x:self.crop_x + s]
        return (x - self.mean) / self.std

    def _softmaxes(self, x: torch.Tensor) -> torch.Tensor:
        """[M, N, K] member softmax outputs for preprocessed input."""
        return torch.stack([torch.softmax(m(x).float(), dim=1) for m in self.members])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._softmaxes(self.preprocess(x)).mean(0)

    def member_probs(self, images: Any, batch_size: int = 256) -> torch.Tensor:
        """[M, N, K] softmax outputs of every member (float32, CPU)."""
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        x = self.to_batch(images)
        out = []
        with torch.no_grad():
            for chunk in x.split(batch_size):
                chunk = self.preprocess(chunk.to(self.mean.device))
                if chunk.device.type == "cpu":  # CPU convs (depthwise, pooling) are 2× faster in channels-last
                    chunk = chunk.contiguous(memory_format=torch.channels_last)
                out.append(self._softmaxes(chunk).cpu())
        return torch.cat(out, dim=1) if out else torch.zeros(len(self.members), 0, len(self.class_names))

    def predict(self, images: Any, batch_size: int = 256) -> torch.Tensor:
        """Ensemble probabilities [N, K] (float32, CPU) for uint8 (0–255) or float (0–1) images."""
        return self.member_probs(images, batch_size).mean(0)

    def classify(self, images: Any) -> list[str]:
        """The predicted class name of every image."""
        return [self.class_names[i] for i in self.predict(images).argmax(1).tolist()]

    @property
    def expected_shape(self) -> str:
        return f"{self.channels}×{self.height}×{self.width}"

    def to_batch(self, images: Any) -> torch.Tensor:
        """uint8/float images in any of the accepted layouts → float32 [N, C, H, W] in [0, 1]."""
        if isinstance(images, np.ndarray):
            if images.dtype == object:
                raise ValueError("images must be a numeric array (uint8 0–255 or float 0–1), not objects")
            images = torch.from_numpy(np.ascontiguousarray(images))
        if not torch.is_tensor(images):
            raise ValueError(f"images must be a numpy array or torch tensor, got {type(images).__name__}")
        x = images
        c, h, w = self.channels, self.height, self.width
        shape = tuple(x.shape)
        if x.dim() == 4 and shape[1:] == (c, h, w):
            pass
        elif x.dim() == 4 and shape[1:] == (h, w, c):
            x = x.permute(0, 3, 1, 2)
        elif x.dim() == 3 and c == 1 and shape[1:] == (h, w):
            x = x[:, None]
        elif x.dim() == 3 and shape == (c, h, w):
            x = x[None]
        elif x.dim() == 3 and shape == (h, w, c):
            x = x.permute(2, 0, 1)[None]
        elif x.dim() == 2 and c == 1 and shape == (h, w):
            x = x[None, None]
        else:
            forms = f"[N, {c}, {h}, {w}] or [N, {h}, {w}, {c}]" + (f" or [N, {h}, {w}]" if c == 1 else "")
            got_c = shape[1] if x.dim() == 4 and shape[2:] == (h, w) else (
                shape[-1] if x.dim() == 4 and shape[1:3] == (h, w) else None)
            hint = (f"; they have {got_c} channels but this ensemble takes {c}-channel "
                    f"({'grayscale' if c == 1 else 'RGB'}) images" if got_c is not None else "")
            raise ValueError(f"images of shape {list(shape)} do not fit this ensemble{hint}: it expects "
                             f"{self.manifest['dataset']['name']} images of {self.expected_shape} "
                             f"(channels×height×width), as {forms}")
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        elif x.dtype.is_floating_point:
            x = x.float()
            if x.numel() and not bool(torch.isfinite(x).all()):
                raise ValueError("images contain NaN or infinite values")
            if x.numel() and (float(x.min()) < -1e-6 or float(x.max()) > 1 + 1e-6):
                raise ValueError(f"float images must be scaled to [0, 1] (got values from {float(x.min()):.3g} "
                                 f"to {float(x.max()):.3g}); pass uint8 0–255 images or divide by 255")
        else:
            raise ValueError(f"images must be uint8 (0–255) or float (0–1), got {str(x.dtype).replace('torch.', '')}")
        return x.contiguous()


# ----------------------------------------------------------------------------- loading


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Reader:
    """Files of a bundle folder or of a .zip of one (read as bytes; nothing is extracted)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise BundleError(f"{self.path}: no such bundle (give the bundle folder or its .zip)")
        self.zip: zipfile.ZipFile | None = None
        self.prefix = ""
        if self.path.is_file():
            try:
                self.zip = zipfile.ZipFile(self.path)
            except zipfile.BadZipFile:
                raise BundleError(f"{self.path}: not a bundle folder or a .zip of one") from None
            names = [n for n in self.zip.namelist() if n == "manifest.json" or n.endswith("/manifest.json")]
            if names:  # the zip may hold the folder itself (BUNDLE/manifest.json) or its contents
                self.prefix = min(names, key=len)[: -len("manifest.json")]

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()

    def read(self, rel: str) -> bytes | None:
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise BundleError(f"manifest.json names the file {rel!r} outside the bundle")
        if self.zip is not None:
            try:
                return self.zip.read(self.prefix + rel)
            except KeyError:
                return None
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:  # CRC error, truncated member
                raise BundleError(f"{self.path}: {rel} in the zip is corrupt ({e}); copy the zip again") from None
        p = self.path / rel
        return p.read_bytes() if p.is_file() else None


def _missing(obj: dict, keys: Iterable[str]) -> list[str]:
    out = []
    for key in keys:
        cur: Any = obj
        for part in key.split("."):
            if not isinstance(cur, dict) or part not in cur:
                out.append(key)
                break
            cur = cur[part]
    return out


def check_manifest(manifest: Any) -> dict:
    """Schema checks of a manifest (BundleError naming every missing key)."""
    if not isinstance(manifest, dict):
        raise BundleError("manifest.json: not a JSON object")
    if manifest.get("schema") not in (None, SCHEMA):
        raise BundleError(f"manifest.json: schema {manifest.get('schema')!r} is not an NES ensemble bundle "
                          f"({SCHEMA!r})")
    version = manifest.get("schema_version")
    if "schema_version" in manifest and version != SCHEMA_VERSION:
        raise BundleError(f"manifest.json: schema version {version!r} is not supported: nes {__version__} reads "
                          f"version {SCHEMA_VERSION}; load it with the nes version that wrote it "
                          f"({manifest.get('library', {}).get('nes', 'unknown')}) or export the ensemble again")
    missing = _missing(manifest, REQUIRED)
    members = manifest.get("members")
    if isinstance(members, list):
        if not members:
            raise BundleError("manifest.json: 'members' is empty; a bundle needs at least one member")
        for i, m in enumerate(members):
            if not isinstance(m, dict):
                missing.append(f"members[{i}] (not an object)")
                continue
            missing += [f"members[{i}].{k}" for k in _missing(m, REQUIRED_MEMBER)]
    elif members is not None:
        missing.append("members (must be a list)")
    if missing:
        raise BundleError(f"manifest.json: missing or malformed key(s): {', '.join(missing)}; the bundle is "
                          "incomplete or not written by `python -m nes export`; export it again")
    ds = manifest["dataset"]
    wrong = []
    for key, ok in (("dataset.num_classes", _is_int(ds["num_classes"])),
                    ("dataset.class_names", isinstance(ds["class_names"], list)
                     and _is_int(ds["num_classes"]) and len(ds["class_names"]) == ds["num_classes"]),
                    *((f"dataset.input.{k}", _is_int(ds["input"][k]) and ds["input"][k] > 0)
                      for k in ("channels", "height", "width")),
                    *((f"dataset.preprocess.{k}", _is_int(ds["preprocess"][k]) and ds["preprocess"][k] >= 0)
                      for k in ("pad", "image_size")),
                    *((f"dataset.preprocess.{k}", isinstance(ds["preprocess"][k], list)
                       and len(ds["preprocess"][k]) == ds["input"]["channels"]
                       and all(isinstance(v, (int, float)) for v in ds["preprocess"][k])) for k in ("mean", "std"))):
        if not ok:
            wrong.append(key)
    if not wrong:  # the evaluation crop must fit inside the padded image
        inp, pre = ds["input"], ds["preprocess"]
        if not 1 <= pre["image_size"] <= min(inp["height"], inp["width"]) + 2 * pre["pad"]:
            wrong.append("dataset.preprocess.image_size (larger than the padded image)")
    for i, m in enumerate(members):
        for key, typ in (("name", str), ("file", str), ("sha256", str), ("genotype", dict), ("network", dict),
                         ("tensors", dict)):
            if not isinstance(m[key], typ):
                wrong.append(f"members[{i}].{key}")
    if wrong:
        raise BundleError(f"manifest.json: wrong type or value of: {', '.join(wrong)}; export the bundle again")
    names = [m["name"] for m in members]
    if len(set(names)) != len(names):
        raise BundleError(f"manifest.json: member names repeat ({', '.join(names)})")
    return manifest


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


LIMITS = {"c": 1024, "layers": 64, "num_classes": 100_000, "channels": 16}  # sanity bounds before building


def _build_member(m: dict, ds: dict, device: str | torch.device = "cpu") -> Network:
    """The member's network from its manifest entry (on the meta device: shapes only, no memory)."""
    try:
        g = Genotype.from_dict(m["genotype"])
        net = m["network"]
        sizes = {"c": int(net["c"]), "layers": int(net["layers"]), "num_classes": int(ds["num_classes"]),
                 "channels": int(ds["input"]["channels"])}
        bad = [f"{k}={v}" for k, v in sizes.items() if not 1 <= v <= LIMITS[k]]
        if bad:
            raise ValueError(f"out of range: {', '.join(bad)}")
        g.validate(cell_types=cell_types_for(sizes["layers"]))
        with torch.device(device):
            return Network(g, sizes["c"], sizes["num_classes"], sizes["layers"], sizes["channels"])
    except (ValueError, TypeError, KeyError) as e:
        raise BundleError(f"member {m['name']!r}: its genotype or network in manifest.json is invalid ({e})") from None


def load_ensemble(path: str | Path, device: str | torch.device = "cpu") -> EnsembleModel:
    """Load a bundle folder or .zip → `EnsembleModel` in eval mode.

    Validates the manifest schema, the sha256 of every weights file, and that every tensor of every
    member has the shape its architecture needs, before anything is built; only JSON and
    safetensors are read (never pickle). Raises `BundleError` with what is wrong and what to do."""
    r = _Reader(path)
    try:
        return _load(r, path, device)
    finally:
        r.close()


def _load(r: _Reader, path: str | Path, device: str | torch.device) -> EnsembleModel:
    raw = r.read("manifest.json")
    if raw is None:
        raise BundleError(f"{path}: no manifest.json (not an NES ensemble bundle, or an incomplete copy)")
    try:
        manifest = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{path}/manifest.json: not valid JSON ({e})") from None
    check_manifest(manifest)
    ds = manifest["dataset"]
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    nets = []
    for m in manifest["members"]:
        data = r.read(m["file"])
        if data is None:
            raise BundleError(f"member {m['name']!r}: its weights file {m['file']} is missing from the bundle; "
                              "copy the whole bundle folder (or its .zip), or export it again")
        digest = _sha256(data)
        if digest != m["sha256"]:
            raise BundleError(f"member {m['name']!r}: {m['file']} fails its sha256 check (manifest {m['sha256'][:12]}…, "
                              f"file {digest[:12]}…): the file is corrupt or was modified; export the bundle again")
        try:
            tensors = st_load(data)
        except (SafetensorError, ValueError, RuntimeError) as e:
            raise BundleError(f"member {m['name']!r}: {m['file']} is not a readable safetensors file ({e})") from None
        want = {k: tuple(v.shape) for k, v in _build_member(m, ds, "meta").state_dict().items()}
        have = {k: tuple(v.shape) for k, v in tensors.items()}
        listed = {k: tuple(v) for k, v in m["tensors"].items()}
        problems = [f"{k} missing" for k in want if k not in have]
        problems += [f"{k} not in the architecture" for k in have if k not in want]
        problems += [f"{k} has shape {list(have[k])}, the architecture needs {list(want[k])}"
                     for k in want if k in have and have[k] != want[k]]
        problems += [f"{k} has shape {list(have[k])}, the manifest says {list(listed.get(k, ()))}"
                     for k in have if listed.get(k) != have[k]]
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise BundleError(f"member {m['name']!r}: {m['file']} does not fit its genotype: "
                              f"{'; '.join(problems[:3])}{more}; export the bundle again")
        net = _build_member(m, ds)
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in tensors.items()})
        nets.append(net)
    model = EnsembleModel(nets, manifest).to(device)
    if model.mean.device.type == "cpu":
        model.members.to(memory_format=torch.channels_last)
    return model.eval()


# ----------------------------------------------------------------------------- images from files


def load_images(path: str | Path, channels: int, height: int, width: int) -> tuple[np.ndarray, list[str] | None]:
    """Images for `predict` from an .npz (array `images`) or a folder of PNG/JPEG files.

    Returns (uint8 or float array, one name per image; None for an .npz, whose images the caller
    numbers). Files are read with PIL (PNG/JPEG only);
    a non-image file, an empty folder, or an image of the wrong size or channel count is a
    ValueError that names the file and says what the ensemble expects."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{p}: no such file or folder (give an .npz with an 'images' array or a folder of PNG/JPEG images)")
    if p.is_file():
        if p.suffix.lower() != ".npz":
            raise ValueError(f"{p}: INPUT must be an .npz file with an 'images' array or a folder of PNG/JPEG images")
        try:
            with np.load(p, allow_pickle=False) as z:
                if "images" not in z.files:
                    raise ValueError(f"{p}: no array named 'images' (found: {', '.join(z.files) or 'none'}); "
                                     "save it with np.savez(path, images=array)")
                arr = z["images"]
        except (OSError, zipfile.BadZipFile, EOFError) as e:
            raise ValueError(f"{p}: not a readable .npz file ({e})") from None
        except ValueError as e:
            if "pickle" in str(e).lower():
                raise ValueError(f"{p}: 'images' is an object array; it must be a numeric array (no pickles are loaded)") from None
            raise
        return arr, None
    from PIL import Image, UnidentifiedImageError

    files = sorted(f for f in p.iterdir() if not f.name.startswith("."))
    if not files:
        raise ValueError(f"{p}: the folder is empty; put the PNG/JPEG images to classify in it")
    out = []
    for f in files:
        if f.is_dir() or f.suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(f"{f}: not a PNG/JPEG image (the folder must hold only .png/.jpg/.jpeg files); "
                             "move it out of the folder")
        try:
            with Image.open(f) as im:
                if im.format not in ("PNG", "JPEG"):
                    raise ValueError(f"{f}: a {im.format} image; only PNG and JPEG are read")
                im.load()
                img = im
                if img.mode in ("RGBA", "LA", "P", "PA"):
                    img = img.convert("RGBA" if img.mode in ("P", "PA", "RGBA") else "LA")
                    img = img.convert("RGB" if img.mode == "RGBA" else "L")
                if img.mode in ("I;16", "I", "F", "1"):
                    img = img.convert("L")
                a = np.asarray(img)
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise ValueError(f"{f}: not a readable PNG/JPEG image ({e})") from None
        a = a[:, :, None] if a.ndim == 2 else a
        if a.shape[2] == 3 and channels == 1 and (a == a[:, :, :1]).all():
            a = a[:, :, :1]  # grayscale saved as RGB
        if a.shape[2] != channels:
            kind = "grayscale (1 channel)" if channels == 1 else f"{channels}-channel (RGB)"
            raise ValueError(f"{f}: has {a.shape[2]} channels; this ensemble takes {kind} images; convert it first")
        if a.shape[:2] != (height, width):
            raise ValueError(f"{f}: is {a.shape[1]}×{a.shape[0]} pixels; this ensemble takes {width}×{height} "
                             "images; resize it first")
        out.append(a.astype(np.uint8).transpose(2, 0, 1))
    return np.stack(out), [f.name for f in files]


# ----------------------------------------------------------------------------- export


@dataclass
class ExportResult:
    path: Path
    zip_path: Path | None
    manifest: dict[str, Any]


def _versions() -> dict[str, str]:
    import safetensors

    out = {"nes": __version__, "torch": torch.__version__, "safetensors": safetensors.__version__,
           "numpy": np.__version__, "python": platform.python_version()}
    for mod in ("onnx", "onnxruntime"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return out


def _layout_for(gs: Sequence[Genotype]) -> ArchLayout | None:
    """One α layout that fits every genotype (None if their cells or node counts differ)."""
    if len({(g.cell_types, g.nodes) for g in gs}) != 1:
        return None
    k = max(len(node) for g in gs for ct in g.cell_types for node in g.cell(ct))
    return ArchLayout(nodes=gs[0].nodes, cell_types=gs[0].cell_types, inputs_per_node=k)


def arch_js_matrix(genotypes: Sequence[Genotype], tau: float = 0.99) -> list[list[float]] | None:
    """Pairwise architecture JS between the genotypes' smoothed distributions (as in DESIGN.md)."""
    layout = _layout_for(genotypes)
    if layout is None:
        return None
    d = [layout.smoothed_distributions(g, tau) for g in genotypes]
    n = len(d)
    m = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            m[i][j] = m[j][i] = round(float(arch_js(d[i], d[j])), 6)
    return m


def _cell(text: str) -> str:
    """A genotype's compact form as a markdown table cell (its '|' separators escaped)."""
    return "`" + text.replace("|", "\\|") + "`" if text else "–"


def _model_card(man: dict[str, Any]) -> str:
    ds, ens = man["dataset"], man.get("ensemble", {})
    inp, pre = ds["input"], ds["preprocess"]
    met = ens.get("metrics", {})

    def pct(v: Any) -> str:
        return f"{100 * v:.2f} %" if isinstance(v, (int, float)) else "–"

    def num(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, (int, float)) else "–"

    rows = "\n".join(
        f"| {m['name']} | {m.get('lam') if m.get('lam') is not None else '–'} | {m.get('seed', '–')} | "
        f"{_cell(m.get('compact', ''))} | {pct(m.get('metrics', {}).get('test_accuracy'))} | "
        f"{num(m.get('metrics', {}).get('test_nll'))} | {m.get('num_parameters', '–')} |"
        for m in man["members"])
    classes = ", ".join(ds["class_names"])
    src = man.get("source", {})
    onnx = man.get("onnx")
    onnx_line = (f"- `ensemble.onnx`: the whole ensemble (input `images` float32 [N, {inp['channels']}, "
                 f"{inp['height']}, {inp['width']}] in [0, 1], output `probs` [N, {ds['num_classes']}]); checked "
                 f"against PyTorch on {onnx['checked_images']} images, max |Δp| = {onnx['max_abs_diff']:.2e}.\n"
                 if onnx else "")
    return f"""# Ensemble model card: {man.get('title', 'NES ensemble')}

Exported by NES Explorer {man['library']['nes']} on {man['created']} from run `{src.get('run', '?')}`.
{len(man['members'])} members, each a DARTS-style cell network retrained from scratch; the ensemble
averages their softmax outputs.

## Intended use
Image classification of **{ds['name']}**-like inputs: {inp['channels']}×{inp['height']}×{inp['width']}
images (uint8 0–255, or float scaled to 0–1), one of {ds['num_classes']} classes ({classes}).
For teaching, research and comparing ensembles built with differentiable neural ensemble search.
Not for decisions about people, and not for images unlike the training data.

## How to use
```python
import nes
model = nes.load_ensemble("{man.get('bundle_name', 'BUNDLE')}")     # checks hashes and shapes
probs = model.predict(images)                # [N, {ds['num_classes']}] mean softmax of the members
```
or `python -m nes predict BUNDLE images.npz --json` (an `.npz` with an `images` array, or a folder
of PNG/JPEG files). Preprocessing inside the model: zero pad {pre['pad']}, center crop {pre['image_size']},
normalize with mean {pre['mean']} and std {pre['std']}.
{onnx_line}
## Data
Trained on {ds.get('train_images', '?')} images of {ds['name']} (the run's member settings); the
metrics below are on {ens.get('test_images', '?')} held-out test images ({ens.get('split', 'test')} split).

## Metrics
| member | λ | seed | genotype | test accuracy | test NLL | parameters |
|---|---|---|---|---|---|---|
{rows}

Ensemble: accuracy **{pct(met.get('accuracy'))}**, NLL {num(met.get('nll'))}, ECE {num(met.get('ece'))},
Brier {num(met.get('brier'))}, mean member accuracy {pct(met.get('member_accuracy'))},
disagreement {num(met.get('disagreement'))}, predictive JS {num(met.get('predictive_js'))}.
`manifest.json` also holds the pairwise architecture-JS and predictive-JS matrices.

## Limitations
- Members are small networks trained briefly (see `training` per member in the manifest); the
  accuracy is far from the state of the art and was measured on one test subset only.
- The architectures were searched and the members selected on this dataset's validation split;
  they do not transfer to other data without retraining.
- Probabilities are calibrated only as well as the ECE above says, and only on in-distribution
  images; out-of-distribution inputs still get confident-looking outputs.
"""



@dataclass
class ExportPlan:
    """What a bundle of `names` will hold, before anything is written (the manifest without hashes)."""
    run: Path
    names: list[str]
    manifest: dict[str, Any]
    tensors: dict[str, dict[str, torch.Tensor]]
    probs: list[dict[str, Any]]
    config: dict[str, Any]  # the first member's training config (dataset, limits)


def plan_export(run_dir: str | Path, members: Sequence[str], title: str | None = None) -> ExportPlan:
    """Read `members` of run `run_dir` and build the bundle's manifest (metrics, diversity matrices).

    Cheap (JSON, weights and saved probabilities only; no data, no inference). BundleError when a
    member is unknown, unfinished, or does not fit with the others."""
    from .ensemble import ensemble_metrics, predictive_js
    from .train import list_members, load_member_probs, member_dir

    run = Path(run_dir)
    names = [n.strip() for n in members if n and n.strip()]
    if not names:
        raise BundleError("no members chosen; name at least one (e.g. --members alpha_star,lam_2_50)")
    if len(set(names)) != len(names):
        raise BundleError(f"members repeat: {', '.join(names)}")
    if not (run / "run.json").exists():
        raise BundleError(f"{run}: not a run folder (no run.json)")
    known = list_members(run)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BundleError(f"{run}: no member(s) {', '.join(unknown)}; it has: {', '.join(known) or 'none'}")
    info = read_json(run / "run.json").get("info")
    if not isinstance(info, dict):
        raise BundleError(f"{run}/run.json has no dataset info; retrain a member to write it")

    rows, tensors_by_name, gs, probs, crop, configs = [], {}, [], [], None, []
    for name in names:
        d = member_dir(run, name)
        if not (d / "weights.safetensors").exists():
            raise BundleError(f"member {name!r} has not finished training (no weights.safetensors yet); wait for "
                              "its job to finish or retrain it")
        cfg = read_json(d / "config.json")
        configs.append(cfg)
        gmeta = read_json(d / "genotype.json")
        metrics = read_json(d / "metrics.json") if (d / "metrics.json").exists() else {}
        g = Genotype.from_dict(gmeta["genotype"])
        this_crop = (cfg.get("image_size"), cfg.get("pad"), cfg.get("dataset"))
        if crop is not None and this_crop != crop:
            raise BundleError(f"member {name!r} was trained on other inputs (image_size, pad, dataset = {this_crop}) "
                              f"than {names[0]!r} ({crop}); export members with the same settings together")
        crop = this_crop
        state, _ = load_tensors(d / "weights.safetensors")
        net = Network(g, int(cfg["c"]), int(info["num_classes"]), int(cfg["layers"]), int(info["channels"]))
        own = net.state_dict()  # without the auxiliary head (training only)
        missing = [k for k in own if k not in state or tuple(state[k].shape) != tuple(own[k].shape)]
        if missing:
            raise BundleError(f"member {name!r}: weights.safetensors does not fit its genotype ({missing[0]}); "
                              "retrain the member")
        tensors_by_name[name] = {k: state[k].float() if state[k].is_floating_point() else state[k] for k in own}
        gs.append(g)
        p = load_member_probs(run, name)
        probs.append(p)
        rows.append({
            "name": name, "file": f"members/{name}.safetensors", "genotype": g.to_dict(), "compact": g.compact(),
            "lam": gmeta.get("lam"), "regularizer": gmeta.get("regularizer"), "seed": cfg.get("seed"),
            "network": {"c": int(cfg["c"]), "layers": int(cfg["layers"]), "stem_multiplier": 3},
            "num_parameters": int(sum(v.numel() for k, v in tensors_by_name[name].items()
                                      if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))),
            "training": {k: cfg.get(k) for k in ("epochs", "limit", "batch_size", "lr", "drop_path", "auxiliary")},
            "metrics": metrics.get("metrics", {}), "epoch": p["epoch"],
            "tensors": {k: list(v.shape) for k, v in tensors_by_name[name].items()},
        })
    if len({len(p["test_y"]) for p in probs}) != 1 or any(not torch.equal(p["test_y"], probs[0]["test_y"]) for p in probs):
        raise BundleError("the members were evaluated on different test images; export members of one run's settings")

    image_size, pad, dataset = crop
    test = torch.stack([p["test"] for p in probs])
    ens = ensemble_metrics(test, probs[0]["test_y"])
    pjs = predictive_js(test)
    cfg0 = configs[0]
    manifest: dict[str, Any] = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "title": title or f"{run.name}: {', '.join(names)}",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "library": _versions(),
        "source": {"run": run.name, "members": names},
        "dataset": {
            "name": dataset or info["name"], "num_classes": int(info["num_classes"]),
            "class_names": list(info["class_names"]) or [str(i) for i in range(int(info["num_classes"]))],
            "input": {"channels": int(info["channels"]), "height": int(info["height"]), "width": int(info["width"]),
                      "dtype": "uint8 0..255 or float 0..1", "layout": "NCHW"},
            "preprocess": {"scale": 1 / 255, "pad": int(pad if pad is not None else info["pad"]),
                           "image_size": int(image_size if image_size is not None else info["image_size"]),
                           "crop": "center", "mean": list(info["mean"]), "std": list(info["std"])},
            "train_images": cfg0.get("limit"),
        },
        "members": rows,
        "ensemble": {"split": "test", "test_images": int(test.shape[1]),
                     "metrics": {k: float(v) for k, v in ens.items()}},
        "diversity": {"names": names, "architecture_js": arch_js_matrix(gs),
                      "predictive_js": [[round(float(v), 6) for v in r] for r in pjs.tolist()]},
    }

    return ExportPlan(run, names, manifest, tensors_by_name, probs, cfg0)


def export_ensemble(run_dir: str | Path, members: Sequence[str], out: str | Path, *, onnx: bool = False,
                    make_zip: bool = False, overwrite: bool = False, title: str | None = None,
                    verify: bool = True, verify_images: int = 512) -> ExportResult:
    """Write the bundle of `members` of run `run_dir` to folder `out` (atomically: built next to it,
    then renamed into place), and `out`.zip with `make_zip`.

    verify: load the written bundle back and check it reproduces the members' saved test
    probabilities on up to `verify_images` test images (if the dataset is available here).
    onnx: also write ensemble.onnx and check onnxruntime against PyTorch (≤ ONNX_TOLERANCE)."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise BundleError(f"{out} already exists; choose another --out or pass --force to replace it")
    plan = plan_export(run_dir, members, title)
    manifest, rows = plan.manifest, plan.manifest["members"]
    parent = out.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
    try:
        from safetensors.torch import save as st_save

        for row in rows:
            data = st_save({k: v.contiguous() for k, v in plan.tensors[row["name"]].items()},
                           metadata={"nes_member": row["name"], "schema": SCHEMA})
            atomic_write_bytes(tmp / row["file"], data)
            row["sha256"], row["bytes"] = _sha256(data), len(data)
        manifest["bundle_name"] = out.name
        model = None
        if verify or onnx:
            _write_manifest(tmp, manifest)
            model = load_ensemble(tmp)
        if verify:
            manifest["verification"] = _verify(model, plan, verify_images)
        if onnx:
            manifest["onnx"] = export_onnx(model, tmp / "ensemble.onnx")
        _write_manifest(tmp, manifest)
        atomic_write_bytes(tmp / "README.md", _model_card(manifest).encode())
        _shareable(tmp)
        _swap_into_place(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    zip_path = make_bundle_zip(out) if make_zip else None
    return ExportResult(out, zip_path, manifest)


def _write_manifest(folder: Path, manifest: dict) -> None:
    atomic_write_bytes(folder / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())


def _shareable(*paths: Path) -> None:
    """Bundles are meant to be copied and shared: folders 0755, files 0644 (less the umask),
    recursively (temporary files are created 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    for top in paths:
        for p in [top, *(top.rglob("*") if top.is_dir() else ())]:
            os.chmod(p, (0o755 if p.is_dir() else 0o644) & ~mask)


def _swap_into_place(tmp: Path, out: Path, overwrite: bool) -> None:
    if out.exists():
        if not overwrite:
            raise BundleError(f"{out} already exists; choose another --out or pass --force to replace it")
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def _verify(model: EnsembleModel, plan: ExportPlan, limit: int) -> dict[str, Any]:
    """Bundle vs the run: the reloaded members' probabilities on the run's test images."""
    from .data import DataError, load_dataset

    cfg, probs = plan.config, plan.probs
    try:
        ds = load_dataset(cfg["dataset"], cfg.get("data_dir"), "cpu", cfg.get("limit"), cfg.get("test_limit"),
                          download=False)
    except (DataError, OSError, ImportError) as e:
        return {"checked": False, "reason": f"dataset not available here ({str(e).splitlines()[0][:160]})"}
    n = min(limit, len(ds.test_y))
    if not torch.equal(ds.test_y[:n].cpu(), probs[0]["test_y"][:n]):
        return {"checked": False, "reason": "the test images here differ from the run's (other data files)"}
    mp = model.member_probs(ds.test_x[:n])
    saved = torch.stack([p["test"][:n] for p in probs])
    diff = float((mp - saved).abs().max())
    agree = float((mp.argmax(-1) == saved.argmax(-1)).float().mean())
    if diff > 5e-3:  # saved probabilities are float16 (≈ 5e-4); more means the weights do not match
        raise BundleError(f"the exported members do not reproduce the run's saved test probabilities "
                          f"(max |Δp| = {diff:.3g} on {n} images); the member folders may be inconsistent")
    return {"checked": True, "images": n, "max_abs_diff_vs_run": round(diff, 6), "argmax_agreement": agree,
            "note": "run probabilities are stored as float16"}


def make_bundle_zip(folder: str | Path) -> Path:
    """`folder`.zip holding the bundle folder (written atomically)."""
    folder = Path(folder)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                z.write(f, f"{folder.name}/{f.relative_to(folder).as_posix()}")
    zp = folder.with_name(folder.name + ".zip")
    atomic_write_bytes(zp, buf.getvalue())
    _shareable(zp)
    return zp


# ----------------------------------------------------------------------------- ONNX


def onnx_missing() -> str | None:
    """Why ONNX export cannot run here (a missing package, with the install command), or None."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ImportError as e:
        return f"ONNX export needs the packages onnx, onnxscript and onnxruntime ({e}); " \
               "install them with `pip install onnx onnxscript onnxruntime`"
    return None


def export_onnx(model: EnsembleModel, path: str | Path, check_images: int = 8) -> dict[str, Any]:
    """Write the whole ensemble (preprocessing, members, mean softmax) to ONNX with the dynamo
    exporter and check onnxruntime's probabilities against PyTorch's (max abs diff ≤ ONNX_TOLERANCE).
    Returns the manifest entry; BundleError if a package is missing or the check fails."""
    missing = onnx_missing()
    if missing:
        raise BundleError(missing)
    import logging
    import warnings

    path = Path(path)
    model = model.to("cpu").eval()
    c, h, w = model.channels, model.height, model.width
    example = torch.rand(2, c, h, w, generator=torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch", min=1, max=4096)
    tmp = path.with_name(f".{path.name}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prev = logging.getLogger("torch.onnx").level
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        try:
            prog = torch.onnx.export(model, (example,), dynamo=True, input_names=["images"],
                                     output_names=["probs"], dynamic_shapes=({0: batch},), verbose=False)
            prog.save(str(tmp))
        except Exception as e:  # the exporter raises many types; the user needs the gist
            tmp.unlink(missing_ok=True)
            raise BundleError(f"ONNX export failed: {str(e).splitlines()[0][:300]}") from None
        finally:
            logging.getLogger("torch.onnx").setLevel(prev)
    os.replace(tmp, path)
    data = path.read_bytes()
    x = torch.rand(check_images, c, h, w, generator=torch.Generator().manual_seed(1))
    x[0] = 0.0
    x[1] = 1.0
    diff = onnx_max_diff(model, path, x)
    if not diff <= ONNX_TOLERANCE:
        path.unlink(missing_ok=True)
        raise BundleError(f"ONNX check failed: onnxruntime differs from PyTorch by {diff:.3g} (> {ONNX_TOLERANCE})")
    import onnx

    return {"file": path.name, "sha256": _sha256(data), "bytes": len(data),
            "opset": int(max((o.version for o in onnx.load(str(path), load_external_data=False).opset_import
                              if o.domain in ("", "ai.onnx")), default=0)),
            "input": {"name": "images", "shape": ["N", c, h, w], "dtype": "float32", "range": [0, 1]},
            "output": {"name": "probs", "shape": ["N", len(model.class_names)]},
            "checked_images": int(len(x)), "max_abs_diff": diff, "tolerance": ONNX_TOLERANCE}


def onnx_max_diff(model: EnsembleModel, onnx_path: str | Path, x: torch.Tensor) -> float:
    """max |onnxruntime(x) − model(x)| (CPU execution provider)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, torch.get_num_threads())
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    got = sess.run(["probs"], {"images": x.numpy().astype(np.float32)})[0]
    with torch.no_grad():
        want = model(x).numpy()
    return float(np.abs(got - want).max())


def list_bundles(folder: str | Path) -> list[Path]:
    """Bundle folders (with a manifest.json) directly under `folder`, newest first."""
    d = Path(folder)
    if not d.is_dir():
        return []
    found = [p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / "manifest.json").is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)
