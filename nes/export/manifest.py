"""The bundle manifest: its schema (version 1), the checks of every value, and `model_sha256`,
the hash of every manifest value that what the bundle predicts depends on.

`nes.export.bundle` reads bundles with these checks; `nes.export.write` writes the manifests.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any, Callable, Iterable

from .._version import __version__
from ..artifacts import ArtifactError


WEIGHTS_MAX_BYTES = 512 << 20  # one member's float32 weights (c ≤ 1024 nets of a few cells stay far below)


def megabytes(n: int) -> str:
    return f"{n / (1 << 20):.0f} MB" if n >= 1 << 20 else f"{n} bytes"


SCHEMA = "nes-ensemble"

SCHEMA_VERSION = 1


# Keys a version-1 manifest must have (nested dicts by dotted path; per member below).
REQUIRED = ("schema", "schema_version", "dataset", "dataset.name", "dataset.num_classes", "dataset.class_names",
            "dataset.input", "dataset.input.channels", "dataset.input.height", "dataset.input.width",
            "dataset.preprocess", "dataset.preprocess.pad", "dataset.preprocess.image_size",
            "dataset.preprocess.mean", "dataset.preprocess.std", "members")

REQUIRED_MEMBER = ("name", "file", "sha256", "genotype", "network", "network.c", "network.layers", "tensors")


# What `model_sha256` covers: every value that changes what the bundle predicts or how it is read.
MODEL_DATASET_KEYS = ("num_classes", "class_names", "input", "preprocess")

MODEL_MEMBER_KEYS = ("name", "file", "sha256", "bytes", "genotype", "network", "tensors")


class BundleError(ArtifactError):
    """A bundle that cannot be exported or loaded (the message says what is wrong and what to do)."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(lo: int = 0, hi: int | None = None) -> Callable[[Any], bool]:
    return lambda v: is_int(v) and v >= lo and (hi is None or v <= hi)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _per_channel(n: Any, positive: bool = False) -> Callable[[Any], bool]:
    return lambda v: (isinstance(v, list) and len(v) == n
                      and all(_finite(x) and (x > 0 or not positive) for x in v))


def _or_none(pred: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or pred(v)


def _text(v: Any) -> bool:
    return isinstance(v, str) and v.strip() != ""


def _hex64(v: Any) -> bool:
    return isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None


def _shape(v: Any) -> bool:
    return isinstance(v, list) and all(is_int(x) and x >= 0 for x in v)


def _check_header(manifest: Any) -> None:
    """A JSON object of our schema and a version this library reads."""
    if not isinstance(manifest, dict):
        raise BundleError("manifest.json: not a JSON object")
    if manifest.get("schema") not in (None, SCHEMA):
        raise BundleError(f"manifest.json: schema {manifest.get('schema')!r} is not an NES ensemble bundle "
                          f"({SCHEMA!r})")
    version = manifest.get("schema_version")
    if "schema_version" in manifest and version != SCHEMA_VERSION:
        library = manifest.get("library") if isinstance(manifest.get("library"), dict) else {}
        raise BundleError(f"manifest.json: schema version {version!r} is not supported: nes {__version__} reads "
                          f"version {SCHEMA_VERSION}; load it with the nes version that wrote it "
                          f"({library.get('nes', 'unknown')}) or export the ensemble again")


def _check_keys(manifest: dict) -> None:
    """Every required key, in the manifest and in every member (BundleError naming all missing)."""
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


# (dotted key, value, check, what it must be)
Rule = tuple[str, Any, Callable[[Any], bool], str]


def _dataset_rules(ds: dict) -> list[Rule]:
    inp, pre, n = ds["input"], ds["preprocess"], ds["num_classes"]
    return [
        ("dataset.name", ds["name"], _text, "a non-empty string"),
        ("dataset.num_classes", n, _int(1), "a positive integer"),
        ("dataset.class_names", ds["class_names"],
         lambda v: isinstance(v, list) and len(v) == n and all(isinstance(x, str) for x in v),
         "a list of one name (a string) per class"),
        *((f"dataset.input.{k}", inp[k], _int(1), "a positive integer") for k in ("channels", "height", "width")),
        ("dataset.preprocess.pad", pre["pad"], _int(0), "a non-negative integer"),
        ("dataset.preprocess.image_size", pre["image_size"], _int(1), "a positive integer"),
        ("dataset.preprocess.mean", pre["mean"], _per_channel(inp["channels"]),
         "a list of one finite number per input channel"),
        ("dataset.preprocess.std", pre["std"], _per_channel(inp["channels"], positive=True),
         "a list of one finite number > 0 per input channel"),
        ("dataset.preprocess.scale", pre.get("scale"), _or_none(lambda v: _finite(v) and v > 0), "a number > 0"),
        ("dataset.preprocess.tta_flip", pre.get("tta_flip"), _or_none(lambda v: isinstance(v, bool)), "true or false"),
    ]


def _member_rules(i: int, m: dict) -> list[Rule]:
    key, net, tensors = f"members[{i}]", m["network"], m["tensors"]
    rules: list[Rule] = [
        (f"{key}.name", m["name"], _text, "a non-empty string"),
        (f"{key}.file", m["file"], _text, "the path of its weights file in the bundle"),
        (f"{key}.sha256", m["sha256"], _hex64, "the file's sha256: 64 lower-case hexadecimal digits"),
        (f"{key}.bytes", m.get("bytes"), _or_none(_int(0, WEIGHTS_MAX_BYTES)),
         f"the file's size in bytes (at most {megabytes(WEIGHTS_MAX_BYTES)})"),
        (f"{key}.genotype", m["genotype"], lambda v: isinstance(v, dict), "an object"),
        (f"{key}.network.c", net["c"], _int(1), "a positive integer"),
        (f"{key}.network.layers", net["layers"], _int(1), "a positive integer"),
        (f"{key}.lam", m.get("lam"), _or_none(_finite), "a finite number or null"),
        (f"{key}.seed", m.get("seed"), _or_none(is_int), "an integer or null"),
        (f"{key}.tensors", tensors, lambda v: isinstance(v, dict) and len(v) > 0,
         "an object of tensor name → shape"),
    ]
    if isinstance(tensors, dict):
        rules += [(f"{key}.tensors.{k}", s, _shape, "a shape: a list of non-negative integers")
                  for k, s in tensors.items()]
    return rules


def _broken(rules: Iterable[Rule]) -> list[str]:
    return [f"{key} (must be {want}; is {json.dumps(value)[:40]})" for key, value, ok, want in rules if not ok(value)]


def check_manifest(manifest: Any) -> dict:
    """Schema and value checks of a manifest (BundleError naming every missing or wrong key).

    Every value the loader uses is checked: integers are integers, numbers are finite, std > 0,
    hashes are sha256 hex digests, shapes are lists of non-negative integers, λ is finite or null.
    The integrity of those values (`model_sha256`) is `check_model_sha256`'s job."""
    _check_header(manifest)
    _check_keys(manifest)
    ds, members = manifest["dataset"], manifest["members"]
    wrong = _broken(_dataset_rules(ds))
    if not wrong:  # the evaluation crop must fit inside the padded image
        inp, pre = ds["input"], ds["preprocess"]
        if pre["image_size"] > min(inp["height"], inp["width"]) + 2 * pre["pad"]:
            wrong.append("dataset.preprocess.image_size (larger than the padded image)")
    wrong += [w for i, m in enumerate(members) for w in _broken(_member_rules(i, m))]
    if wrong:
        more = f" (and {len(wrong) - 8} more)" if len(wrong) > 8 else ""
        raise BundleError(f"manifest.json: wrong type or value of: {', '.join(wrong[:8])}{more}; the manifest was "
                          "edited or damaged; export the bundle again")
    names = [m["name"] for m in members]
    if len(set(names)) != len(names):
        raise BundleError(f"manifest.json: member names repeat ({', '.join(names)})")
    return manifest


def model_sha256(manifest: dict) -> str:
    """sha256 of the canonical JSON of what decides the bundle's predictions: the dataset's classes,
    input and preprocessing, and every member's name, file, weights hash and size, genotype,
    network and tensor shapes (not the descriptive parts: title, metrics, diversity, versions)."""
    ds = manifest["dataset"]
    part = {"dataset": {k: ds.get(k) for k in MODEL_DATASET_KEYS},
            "members": [{k: m.get(k) for k in MODEL_MEMBER_KEYS} for m in manifest["members"]]}
    return sha256(json.dumps(part, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode())


def check_model_sha256(manifest: dict) -> None:
    """BundleError when the manifest's model values no longer match its `model_sha256` (a hand edit).
    Bundles written before `model_sha256` existed have none and are not checked."""
    want = manifest.get("model_sha256")
    if want is None:
        return
    if not _hex64(want):
        raise BundleError(f"manifest.json: model_sha256 must be 64 lower-case hexadecimal digits (is "
                          f"{json.dumps(want)[:40]}); export the bundle again")
    have = model_sha256(manifest)
    if have != want:
        raise BundleError(f"manifest.json: the preprocessing, input, classes or members were changed after export "
                          f"(model_sha256 {want[:12]}…, values {have[:12]}…): the manifest was edited by hand or "
                          "is corrupt; export the bundle again instead of editing it")
