"""Reading a bundle back: `load_ensemble` (the manifest's schema and checks: `nes.export.manifest`).

A bundle is a folder (optionally also a .zip of it):

    manifest.json            schema "nes-ensemble" version 1: members (name, genotype, λ, seed,
                             network shape, metrics, weights file + sha256 + byte count + tensor
                             shapes), dataset, class names, input shape and preprocessing, library
                             versions, architecture-JS and predictive-JS matrices, ensemble metrics,
                             and `model_sha256`: the hash of every manifest value the predictions
                             depend on (see `model_sha256`)
    members/<name>.safetensors   one weights file per member (float32, no optimizer state)
    README.md                model card: intended use, data, metrics, limitations
    ensemble.onnx            optional: the whole ensemble (preprocessing + members + mean softmax)

`load_ensemble(path)` checks the schema, every value, every hash and every tensor shape before it
builds anything, reads only JSON and safetensors (never pickle), and returns an `EnsembleModel`.
A file is never read whole before its size is known to fit: a zip entry's declared size must fit
the byte count the manifest records (or a cap), and weights are hashed while streaming, so a zip
bomb or a foreign file costs a buffer, not its inflated size. Bundles written before `bytes` and
`model_sha256` existed (same schema version) still load; they are checked against the caps only.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load

from ..artifacts import ArtifactError, parse_json
from ..method.network import Network
from ..method.space import Genotype, cell_types_for
from .manifest import SCHEMA_VERSION  # noqa: F401  (re-exported with BundleError: what readers catch and check)
from .manifest import (LIMITS, SCHEMA, WEIGHTS_MAX_BYTES, BundleError, check_manifest, check_model_sha256, is_int,
                       megabytes, sha256)
from .model import EnsembleModel


MANIFEST_MAX_BYTES = 8 << 20  # a manifest takes ~8 KB per member
HEADER_MAX_BYTES = 8 << 20  # a weights file's safetensors header (~100 bytes per tensor)
_CHUNK = 1 << 20  # streaming buffer


# (limit, what it is) of the reads whose size the manifest cannot state
MANIFEST_LIMIT = (MANIFEST_MAX_BYTES, f"the {megabytes(MANIFEST_MAX_BYTES)} a manifest may take")
WEIGHTS_LIMIT = (WEIGHTS_MAX_BYTES, f"the {megabytes(WEIGHTS_MAX_BYTES)} a weights file may take")


class _Reader:
    """Files of a bundle folder or of a .zip of one (read as bytes; nothing is extracted).

    Every read names its limit in bytes: a file (or zip entry) that declares more is refused
    before a byte of it is read, and reading stops as soon as more bytes arrive than declared."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise BundleError(f"{self.path}: no such bundle (give the bundle folder or its .zip)")
        self.zip: zipfile.ZipFile | None = None
        self.prefix = ""
        if self.path.is_file():
            try:
                self.zip = zipfile.ZipFile(self.path)
            except (zipfile.BadZipFile, OSError) as e:
                raise BundleError(f"{self.path}: not a bundle folder or a .zip of one ({e})") from None
            names = [n for n in self.zip.namelist() if n == "manifest.json" or n.endswith("/manifest.json")]
            if names:  # the zip may hold the folder itself (BUNDLE/manifest.json) or its contents
                self.prefix = min(names, key=len)[: -len("manifest.json")]

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()

    def _locate(self, rel: str) -> tuple[int, Callable[[], IO[bytes]]] | None:
        """(declared size, opener) of `rel`, None if the bundle lacks it; nothing is read yet."""
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise BundleError(f"manifest.json names the file {rel!r} outside the bundle")
        if self.zip is not None:
            try:
                info = self.zip.getinfo(self.prefix + rel)
            except KeyError:
                return None
            return info.file_size, lambda: self.zip.open(info)  # the size its zip headers declare
        p = self.path / rel
        return (p.stat().st_size, lambda: open(p, "rb")) if p.is_file() else None

    @contextlib.contextmanager
    def open(self, rel: str, limit: int, why: str) -> Iterator[IO[bytes] | None]:
        """`rel` opened for reading (None if absent), once its declared size is known to be ≤ limit."""
        where = f"{rel} in the zip" if self.zip is not None else rel
        try:
            found = self._locate(rel)
            if found is None:
                yield None
                return
            if found[0] > limit:
                unit, hint = ("bytes uncompressed", " (a zip bomb?)") if self.zip is not None else ("bytes", "")
                raise BundleError(f"{self.path}: {where} is {found[0]} {unit}, more than {why}; the bundle is "
                                  f"corrupt or not written by `python -m nes export`{hint}; export it again")
            with found[1]() as f:
                yield f
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error, RuntimeError, NotImplementedError) as e:
            raise BundleError(f"{self.path}: {where} is corrupt or unreadable ({e}); copy the bundle again") from None

    def read(self, rel: str, limit: int, why: str) -> bytes | None:
        """The bytes of `rel` (None if absent): at most `limit` of them, or a BundleError."""
        with self.open(rel, limit, why) as f:
            data = None if f is None else f.read(limit + 1)
        if data is not None and len(data) > limit:
            raise BundleError(f"{self.path}: {rel} holds more than {why}; export the bundle again")
        return data

    def digest(self, rel: str, limit: int, why: str) -> tuple[str, int] | None:
        """(sha256, size) of `rel` hashed while streaming (one buffer in memory), None if absent."""
        h, n = hashlib.sha256(), 0
        with self.open(rel, limit, why) as f:
            if f is None:
                return None
            while chunk := f.read(_CHUNK):
                n += len(chunk)
                if n > limit:
                    raise BundleError(f"{self.path}: {rel} holds more than {why}; export the bundle again")
                h.update(chunk)
        return h.hexdigest(), n


# ----------------------------------------------------------------------------- manifest checks


def bundle_problem(path: str | Path) -> str | None:
    """Why `path` (a folder or .zip) is not an NES bundle, or None when it holds a manifest.json
    of schema "nes-ensemble" (what `export --force` may replace; its values are not checked)."""
    try:
        r = _Reader(path)
        try:
            man = _parse_manifest(r, path)
        finally:
            r.close()
    except BundleError as e:
        return str(e)
    if not isinstance(man, dict) or man.get("schema") != SCHEMA or not is_int(man.get("schema_version")):
        return f"{path}/manifest.json is not of schema {SCHEMA!r}"
    return None


# ----------------------------------------------------------------------------- loading


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

    Checks, before anything is built and in this order (each names what is wrong): the manifest's
    schema and values; every member's architecture and the tensor shapes in its weights file's
    header; `model_sha256` (hand-edited values); every weights file's size and sha256, hashed
    while streaming. Only JSON and safetensors are read (never pickle), never more bytes than the
    manifest records (or the caps). Raises `BundleError` with what is wrong and what to do."""
    r = _Reader(path)
    try:
        return _load(r, path, device)
    finally:
        r.close()


def _parse_manifest(r: _Reader, path: str | Path) -> Any:
    raw = r.read("manifest.json", *MANIFEST_LIMIT)
    if raw is None:
        raise BundleError(f"{path}: no manifest.json (not an NES ensemble bundle, or an incomplete copy)")
    try:
        return parse_json(raw, f"{path}/manifest.json", dict, "an NES bundle's manifest")
    except ArtifactError as e:
        raise BundleError(str(e)) from None


def _no_file(m: dict) -> BundleError:
    return BundleError(f"member {m['name']!r}: its weights file {m['file']} is missing from the bundle; "
                       "copy the whole bundle folder (or its .zip), or export it again")


def _header_shapes(r: _Reader, m: dict) -> dict[str, tuple]:
    """Tensor shapes from the safetensors header of the member's weights file (its first bytes only)."""
    with r.open(m["file"], *WEIGHTS_LIMIT) as f:
        if f is None:
            raise _no_file(m)
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else 0
        raw = f.read(n) if 0 < n <= HEADER_MAX_BYTES else b""
    try:
        if not raw:
            raise ValueError(f"its header length is {n} bytes, not 1 to {HEADER_MAX_BYTES}")
        header = json.loads(raw)
        return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
        raise BundleError(f"member {m['name']!r}: {m['file']} is not a readable safetensors file ({e}); it is "
                          "corrupt or not written by `python -m nes export`; export the bundle again") from None


def _check_shapes(m: dict, meta: Network, have: dict[str, tuple]) -> None:
    """Every tensor of the member: present, in its architecture (`meta`), of the shape it needs and
    the manifest lists."""
    want = {k: tuple(v.shape) for k, v in meta.state_dict().items()}
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


def _member_bytes(r: _Reader, m: dict) -> bytes:
    """The member's weights file, read whole only once its declared size fits the manifest's byte
    count (or the cap) and its sha256, hashed while streaming, matches."""
    size = m.get("bytes")
    limit, why = (size, f"the {size} bytes manifest.json records for it") if size is not None else WEIGHTS_LIMIT
    found = r.digest(m["file"], limit, why)
    if found is None:
        raise _no_file(m)
    if found[0] == m["sha256"]:  # read whole only once hashed: a foreign file never takes more than a buffer
        data = r.read(m["file"], limit, why)
        if data is not None and sha256(data) == m["sha256"]:
            return data
    raise BundleError(f"member {m['name']!r}: {m['file']} fails its sha256 check (manifest {m['sha256'][:12]}…, "
                      f"file {found[0][:12]}…): the file is corrupt or was modified; export the bundle again")


def _load_member(r: _Reader, m: dict, ds: dict, meta: Network) -> Network:
    """One member's network with its checked weights (`meta`: its architecture on the meta device)."""
    data = _member_bytes(r, m)
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise BundleError(f"member {m['name']!r}: {m['file']} is not a readable safetensors file ({e})") from None
    _check_shapes(m, meta, {k: tuple(v.shape) for k, v in tensors.items()})
    net = _build_member(m, ds)
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in tensors.items()})
    return net


def _load(r: _Reader, path: str | Path, device: str | torch.device) -> EnsembleModel:
    manifest = check_manifest(_parse_manifest(r, path))
    ds = manifest["dataset"]
    members = manifest["members"]
    metas = [_build_member(m, ds, "meta") for m in members]  # architectures on the meta device: no memory
    for m, meta in zip(members, metas):  # structure first (each check names what is wrong): headers only
        _check_shapes(m, meta, _header_shapes(r, m))
    check_model_sha256(manifest)  # then integrity: valid values edited by hand
    nets = [_load_member(r, m, ds, meta) for m, meta in zip(members, metas)]
    model = EnsembleModel(nets, manifest).to(device)
    if model.mean.device.type == "cpu":
        model.members.to(memory_format=torch.channels_last)
    return model.eval()
