"""Reading a bundle back: the manifest schema, its checks, and `load_ensemble`.

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
import json
import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterable

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load

from .._version import __version__
from ..artifacts import ArtifactError
from ..method.network import Network
from ..method.space import Genotype, cell_types_for
from .model import EnsembleModel

SCHEMA = "nes-ensemble"

SCHEMA_VERSION = 1

# Keys a version-1 manifest must have (nested dicts by dotted path; per member below).
REQUIRED = ("schema", "schema_version", "dataset", "dataset.name", "dataset.num_classes", "dataset.class_names",
            "dataset.input", "dataset.input.channels", "dataset.input.height", "dataset.input.width",
            "dataset.preprocess", "dataset.preprocess.pad", "dataset.preprocess.image_size",
            "dataset.preprocess.mean", "dataset.preprocess.std", "members")

REQUIRED_MEMBER = ("name", "file", "sha256", "genotype", "network", "network.c", "network.layers", "tensors")


class BundleError(ArtifactError):
    """A bundle that cannot be exported or loaded (the message says what is wrong and what to do)."""


def sha256(data: bytes) -> str:
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

    nets = []
    for m in manifest["members"]:
        data = r.read(m["file"])
        if data is None:
            raise BundleError(f"member {m['name']!r}: its weights file {m['file']} is missing from the bundle; "
                              "copy the whole bundle folder (or its .zip), or export it again")
        digest = sha256(data)
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
