"""Atomic artifact files: JSON and safetensors (never pickle).

Every write goes to a temporary file in the same folder, is fsynced, then renamed over the
target, so a reader (or a crash) sees either the old file or the new one, never half of one.
A checkpoint is a single safetensors file whose JSON metadata rides in the header, so the
tensors and the state that describes them can never disagree.
"""
from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

META_KEY = "nes"
_WRITE_DELAY = float(os.environ.get("NES_TEST_WRITE_DELAY", "0") or 0)


class ArtifactError(ValueError):
    """A missing, corrupt or foreign artifact file (message says which and why)."""


_write_guard: Callable[[Path], None] | None = None
_write_root: Path | None = None


def set_write_guard(fn: Callable[[Path], None] | None, root: str | os.PathLike | None = None) -> None:
    """Install `fn(path)`, called before every atomic write creates anything and again just before its
    rename; it raises to refuse the write (a job worker fences stale attempts and vanished run folders).
    `root`: the run folder the guard protects; writes below it create missing folders under it but
    never the root itself, so a run folder deleted under a job stays deleted."""
    global _write_guard, _write_root
    _write_guard, _write_root = fn, (Path(os.path.abspath(root)) if root is not None else None)


def _make_parent(folder: Path) -> None:
    """Create `folder` (and missing parents), but below the guarded root only the part under it:
    FileNotFoundError when the root is gone (a check-then-mkdir would re-create it)."""
    folder = Path(os.path.abspath(folder))
    if _write_root is None or not folder.is_relative_to(_write_root):
        folder.mkdir(parents=True, exist_ok=True)
        return
    current = _write_root
    for part in folder.relative_to(_write_root).parts:
        current = current / part
        try:
            current.mkdir()
        except FileExistsError:
            pass


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    if _write_guard is not None:
        _write_guard(path)
    _make_parent(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if _WRITE_DELAY:  # fault injection for tests: a window in which a kill leaves only the temp file
            time.sleep(_WRITE_DELAY)
        if _write_guard is not None:
            _write_guard(path)
        os.replace(tmp, path)
    except BaseException:
        with_suppress_unlink(tmp)
        raise


def with_suppress_unlink(p: str) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


JSON_MAX_BYTES = 64 << 20  # far above any JSON artifact NES writes (histories, samples, manifests)

_JSON_TYPES = {dict: "a JSON object", list: "a JSON list", str: "a string", float: "a number", int: "an integer"}


def parse_json(raw: bytes, where: str | os.PathLike, expect: type | None = None, what: str = "") -> Any:
    """The JSON value of `raw` (UTF-8), or an ArtifactError that names `where` (the file) and why:
    not UTF-8, not JSON, nested too deeply, or not of type `expect` (dict, list) when given.
    `what` says what the file should hold ("the member's training config"), for the message."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ArtifactError(f"{where}: not UTF-8 text (byte {e.start}); it is corrupt or not a JSON file "
                            "NES wrote") from None
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{where}: not valid JSON ({e})") from None
    except RecursionError:
        raise ArtifactError(f"{where}: JSON nested too deeply to read; this is not a file NES wrote") from None
    if expect is not None and not (isinstance(obj, expect) and not isinstance(obj, bool)):
        want = _JSON_TYPES.get(expect, expect.__name__)
        got = "null" if obj is None else _JSON_TYPES.get(type(obj), type(obj).__name__)
        raise ArtifactError(f"{where}: expected {want}{f' ({what})' if what else ''}, found {got}; the file was "
                            "edited or damaged: restore it, or delete it and rerun the step that writes it")
    return obj


def read_json(path: str | os.PathLike, expect: type | None = None, what: str = "") -> Any:
    """The one reader of JSON artifacts: the value of the JSON file `path`, checked to be of type
    `expect` (dict, list) when given; every failure is an ArtifactError naming the file. Reads only
    a regular file (a FIFO or device would block or never end) of at most JSON_MAX_BYTES."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing") from None
    except IsADirectoryError:
        raise ArtifactError(f"{path}: a folder where a JSON file should be") from None
    except OSError as e:
        raise ArtifactError(f"{path}: cannot be read ({e.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ArtifactError(f"{path}: a folder where a JSON file should be")
        if not stat.S_ISREG(st.st_mode):
            raise ArtifactError(f"{path}: not a regular file (a pipe or device?); a JSON file should be there")
        raw = f.read(JSON_MAX_BYTES + 1)
    if len(raw) > JSON_MAX_BYTES:
        raise ArtifactError(f"{path}: larger than {JSON_MAX_BYTES >> 20} MB, more than any JSON file NES writes")
    return parse_json(raw, path, expect, what)


@contextlib.contextmanager
def reading(path: str | os.PathLike, what: str = "") -> Iterator[None]:
    """Interpret the content of the file `path` inside this block: a KeyError, TypeError,
    ValueError, AttributeError or IndexError raised there (a field missing or of the wrong shape)
    becomes an ArtifactError naming the file, so no artifact of the wrong shape ends in a traceback
    or a message that does not say which file to fix. ArtifactErrors pass unchanged."""
    try:
        yield
    except ArtifactError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        detail = f"no field {e}" if isinstance(e, KeyError) else str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise ArtifactError(f"{path}: not {what or 'what NES wrote there'} ({detail}); the file was edited or "
                            "damaged: restore it, or delete it and rerun the step that writes it") from None


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], meta: Any = None) -> None:
    """Write tensors (moved to CPU, made contiguous) and optional JSON metadata atomically."""
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    metadata = {META_KEY: json.dumps(meta)} if meta is not None else None
    atomic_write_bytes(path, st_save(flat, metadata=metadata))


def check_finite(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """ArtifactError naming the file and the first floating tensor that holds NaN or ±inf: a
    damaged file or a diverged training must never pass on as a result."""
    for k, v in tensors.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise ArtifactError(f"{path}: tensor {k!r} holds NaN or infinite values (the file is damaged or its "
                                "training diverged); retrain it or restore the file")


def load_tensors(path: str | os.PathLike, device: str | torch.device = "cpu",
                 finite: bool = False) -> tuple[dict[str, torch.Tensor], Any]:
    """Read a safetensors file → (tensors, metadata or None). Raises ArtifactError if corrupt, or
    with `finite` if a floating tensor holds NaN or ±inf (`check_finite`)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing") from None
    try:
        tensors = st_load(data)
        with safe_open(str(path), framework="pt") as f:
            md = f.metadata() or {}
    except (SafetensorError, ValueError, RuntimeError, OSError) as e:
        raise ArtifactError(f"{path}: not a readable safetensors file ({e})") from None
    try:
        meta = json.loads(md[META_KEY]) if META_KEY in md else None
    except (json.JSONDecodeError, RecursionError) as e:
        raise ArtifactError(f"{path}: its metadata is not valid JSON ({str(e)[:100]}); the file is corrupt or "
                            "not written by NES") from None
    if finite:
        check_finite(tensors, path)
    if str(device) != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return tensors, meta


def optimizer_to_tensors(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state → flat tensors `{prefix}.{param}.{key}` + JSON-able param groups."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{prefix}.{pid}.{k}"] = v
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor], meta: dict, prefix: str) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith(prefix + "."):
            pid, k = key[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(pid), {})[k] = v
    for key, v in meta.get("scalars", {}).items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(
    path: str | os.PathLike,
    modules: Mapping[str, torch.nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    meta: dict,
) -> None:
    """One atomic safetensors file: `{name}.{param}` for modules, optimizer states, `meta` JSON."""
    tensors: dict[str, torch.Tensor] = {}
    opt_meta = {}
    for name, m in modules.items():
        tensors.update({f"{name}.{k}": v for k, v in m.state_dict().items()})
    for name, opt in optimizers.items():
        t, om = optimizer_to_tensors(opt, f"opt_{name}")
        tensors.update(t)
        opt_meta[name] = om
    save_tensors(path, tensors, {**meta, "optimizers": opt_meta})


def load_checkpoint(
    path: str | os.PathLike,
    modules: Mapping[str, torch.nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    device: str | torch.device = "cpu",
    expect: Mapping[str, Any] | None = None,
    upgrade: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None,
) -> dict:
    """Restore what `save_checkpoint` wrote into the given modules and optimizers; returns meta.

    `expect`: metadata entries (e.g. the config) that must equal the checkpoint's; a mismatch is an
    ArtifactError naming the differing fields, raised before anything is loaded. `upgrade` maps a
    stored dict entry to the current names first (a checkpoint of an earlier version)."""
    tensors, meta = load_tensors(path, device, finite=True)  # a NaN checkpoint must not overwrite good results
    if not isinstance(meta, dict) or "optimizers" not in meta:
        raise ArtifactError(f"{path}: not an NES checkpoint (no metadata)")
    for key, want in (expect or {}).items():
        have = meta.get(key)
        if upgrade is not None and isinstance(have, dict):
            have = upgrade(have)
        if have != want:
            diff = [k for k in set(want) | set(have or {}) if (have or {}).get(k) != want.get(k)] \
                if isinstance(want, dict) and isinstance(have, (dict, type(None))) else [key]
            raise ArtifactError(
                f"{path}: made with a different configuration ({key}: {', '.join(sorted(map(str, diff)))} "
                f"differ); use a new run folder or member name, or delete the old one"
            )
    for name, m in modules.items():
        sd = {k[len(name) + 1 :]: v for k, v in tensors.items() if k.startswith(name + ".")}
        try:
            m.load_state_dict(sd)
        except RuntimeError as e:
            raise ArtifactError(f"{path}: '{name}' does not fit this model: {str(e).splitlines()[0]}") from None
    for name, opt in optimizers.items():
        optimizer_from_tensors(opt, tensors, meta["optimizers"][name], f"opt_{name}")
    return meta
