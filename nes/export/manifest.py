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

# Upper bounds of the manifest's sizes: far above any network NES trains, low enough that what they
# allocate (a padded image, a network) stays bounded. Every number of a manifest has a range.
LIMITS = {"c": 1024, "layers": 64, "num_classes": 100_000, "channels": 16, "side": 1024, "pad": 64}
STD_MIN = 1e-3  # a per-channel std of [0, 1]-scaled pixels; below it normalized inputs explode
LAM_MAX = 1e6  # |λ| of a member (λ is an edge count or a JS value)
SEED_MAX = 2 ** 63 - 1
DIM_MAX = 1 << 31  # one dimension of a tensor shape
TEMPERATURE_RANGE = (0.05, 20.0)  # where `ensemble.fit_temperature` searches T


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


# What `model_sha256` covers: every value that changes what the bundle predicts or how it is read,
# and the temperature its users are told to apply (`ensemble.calibrated`).
MODEL_DATASET_KEYS = ("num_classes", "class_names", "input", "preprocess")

MODEL_MEMBER_KEYS = ("name", "file", "sha256", "bytes", "genotype", "network", "tensors")

MODEL_ENSEMBLE_KEYS = ("calibrated",)  # hashed since bundles of nes 0.1.0 after issue 23; earlier hashes lack it


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


def _int(lo: int, hi: int) -> Callable[[Any], bool]:
    return lambda v: is_int(v) and lo <= v <= hi


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _within(lo: float, hi: float) -> Callable[[Any], bool]:
    return lambda v: _finite(v) and lo <= v <= hi


def _per_channel(n: Any, lo: float, hi: float) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, list) and len(v) == n and all(_within(lo, hi)(x) for x in v)


def _or_none(pred: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or pred(v)


def _text(v: Any) -> bool:
    return isinstance(v, str) and v.strip() != ""


def _hex64(v: Any) -> bool:
    return isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None


def _shape(v: Any) -> bool:
    return isinstance(v, list) and len(v) <= 8 and all(is_int(x) and 0 <= x <= DIM_MAX for x in v)


def _non_finite(obj: Any, key: str = "") -> str | None:
    """The dotted key of the first number in `obj` that is NaN or infinite (None if none): every
    number of a manifest, descriptive ones included, must be finite."""
    stack = [(key, obj)]  # iterative: a deeply nested manifest must not exhaust the stack
    while stack:
        k, v = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            return k or "(the manifest)"
        if isinstance(v, dict):
            stack += [(f"{k}.{c}" if k else str(c), x) for c, x in v.items()]
        elif isinstance(v, list):
            stack += [(f"{k}[{i}]", x) for i, x in enumerate(v)]
    return None


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
    inp, pre, n, side = ds["input"], ds["preprocess"], ds["num_classes"], LIMITS["side"]
    return [
        ("dataset.name", ds["name"], _text, "a non-empty string"),
        ("dataset.num_classes", n, _int(1, LIMITS["num_classes"]), f"an integer from 1 to {LIMITS['num_classes']}"),
        ("dataset.class_names", ds["class_names"],
         lambda v: isinstance(v, list) and len(v) == n and all(isinstance(x, str) for x in v),
         "a list of one name (a string) per class"),
        ("dataset.input.channels", inp["channels"], _int(1, LIMITS["channels"]), f"1 to {LIMITS['channels']}"),
        *((f"dataset.input.{k}", inp[k], _int(1, side), f"an integer from 1 to {side}") for k in ("height", "width")),
        ("dataset.preprocess.pad", pre["pad"], _int(0, LIMITS["pad"]), f"an integer from 0 to {LIMITS['pad']}"),
        ("dataset.preprocess.image_size", pre["image_size"], _int(1, side), f"an integer from 1 to {side}"),
        ("dataset.preprocess.mean", pre["mean"], _per_channel(inp["channels"], 0.0, 1.0),
         "a list of one number from 0 to 1 per input channel (the mean of [0, 1]-scaled pixels)"),
        ("dataset.preprocess.std", pre["std"], _per_channel(inp["channels"], STD_MIN, 1.0),
         f"a list of one number > 0 (from {STD_MIN:g} to 1) per input channel"),
        ("dataset.preprocess.scale", pre.get("scale"), _or_none(_within(1e-6, 1.0)), "a number in (0, 1]"),
        ("dataset.preprocess.tta_flip", pre.get("tta_flip"), _or_none(lambda v: isinstance(v, bool)), "true or false"),
    ]


def _calibration_rules(ens: Any) -> list[Rule]:
    """`ensemble.calibrated` (the temperature the model card tells users to apply, and the metrics
    with it): null, or an object whose numbers lie in their ranges."""
    cal = ens.get("calibrated") if isinstance(ens, dict) else None
    if cal is None:
        return [("ensemble", ens, _or_none(lambda v: isinstance(v, dict)), "an object")]
    if not isinstance(cal, dict):
        return [("ensemble.calibrated", cal, lambda v: False, "an object or null")]
    lo, hi = TEMPERATURE_RANGE
    rules: list[Rule] = [("ensemble.calibrated.temperature", cal.get("temperature"), _within(lo, hi),
                          f"a number from {lo:g} to {hi:g}"),
                         ("ensemble.calibrated.val_images", cal.get("val_images"), _or_none(_int(1, 1 << 40)),
                          "a positive integer"),
                         ("ensemble.calibrated.warning", cal.get("warning"), _or_none(_text), "a string")]
    bounds = {"accuracy": 1.0, "ece": 1.0, "ece_before": 1.0, "brier": 2.0, "nll": 1e4}
    return rules + [(f"ensemble.calibrated.{k}", cal.get(k), _or_none(_within(0.0, hi)), f"a number from 0 to {hi:g}")
                    for k, hi in bounds.items()]


def _member_rules(i: int, m: dict) -> list[Rule]:
    key, net, tensors = f"members[{i}]", m["network"], m["tensors"]
    rules: list[Rule] = [
        (f"{key}.name", m["name"], _text, "a non-empty string"),
        (f"{key}.file", m["file"], _text, "the path of its weights file in the bundle"),
        (f"{key}.sha256", m["sha256"], _hex64, "the file's sha256: 64 lower-case hexadecimal digits"),
        (f"{key}.bytes", m.get("bytes"), _or_none(_int(0, WEIGHTS_MAX_BYTES)),
         f"the file's size in bytes (at most {megabytes(WEIGHTS_MAX_BYTES)})"),
        (f"{key}.genotype", m["genotype"], lambda v: isinstance(v, dict), "an object"),
        (f"{key}.network.c", net["c"], _int(1, LIMITS["c"]), f"an integer from 1 to {LIMITS['c']}"),
        (f"{key}.network.layers", net["layers"], _int(1, LIMITS["layers"]), f"an integer from 1 to {LIMITS['layers']}"),
        (f"{key}.lam", m.get("lam"), _or_none(_within(-LAM_MAX, LAM_MAX)), f"a number within ±{LAM_MAX:g} or null"),
        (f"{key}.seed", m.get("seed"), _or_none(_int(0, SEED_MAX)), "a non-negative 64-bit integer or null"),
        (f"{key}.tensors", tensors, lambda v: isinstance(v, dict) and len(v) > 0,
         "an object of tensor name → shape"),
    ]
    if isinstance(tensors, dict):
        rules += [(f"{key}.tensors.{k}", s, _shape, f"a shape: a list of at most 8 integers from 0 to {DIM_MAX}")
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
    wrong += _broken(_calibration_rules(manifest.get("ensemble")))
    shift = manifest["ensemble"].get("shift") if isinstance(manifest.get("ensemble"), dict) else None
    wrong += _broken([("ensemble.shift", shift, lambda v: v is None or isinstance(v, dict) and isinstance(
        v.get("by_severity"), list), "an object with a by_severity list, or null")])
    nan = _non_finite(manifest)
    if nan:
        wrong.append(f"{nan} (must be a finite number; is NaN or infinite)")
    if wrong:
        more = f" (and {len(wrong) - 8} more)" if len(wrong) > 8 else ""
        raise BundleError(f"manifest.json: wrong type or value of: {', '.join(wrong[:8])}{more}; the manifest was "
                          "edited or damaged; export the bundle again")
    names = [m["name"] for m in members]
    if len(set(names)) != len(names):
        raise BundleError(f"manifest.json: member names repeat ({', '.join(names)})")
    return manifest


def model_sha256(manifest: dict, calibration: bool = True) -> str:
    """sha256 of the canonical JSON of what decides the bundle's predictions: the dataset's classes,
    input and preprocessing, every member's name, file, weights hash and size, genotype, network and
    tensor shapes, and the temperature scaling users are told to apply (`ensemble.calibrated`; not
    with `calibration=False`, the definition of bundles written before it was hashed). Not the
    descriptive parts: title, metrics, diversity, versions."""
    ds = manifest["dataset"]
    part = {"dataset": {k: ds.get(k) for k in MODEL_DATASET_KEYS},
            "members": [{k: m.get(k) for k in MODEL_MEMBER_KEYS} for m in manifest["members"]]}
    if calibration:
        ens = manifest.get("ensemble") if isinstance(manifest.get("ensemble"), dict) else {}
        part["ensemble"] = {k: ens.get(k) for k in MODEL_ENSEMBLE_KEYS}
    return sha256(json.dumps(part, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode())


def check_model_sha256(manifest: dict) -> None:
    """BundleError when the manifest's model values no longer match its `model_sha256` (a hand edit).

    Bundles written before `model_sha256` existed have neither it nor members' `bytes` (both came
    in together) and are not checked; a manifest whose members record `bytes` must have it (deleting
    the hash does not skip the check). A hash of the earlier definition, without the temperature,
    still passes: those bundles' `ensemble.calibrated` is range-checked only (`check_manifest`); an
    edit of any hashed value fails both definitions."""
    want = manifest.get("model_sha256")
    if want is None:
        if any("bytes" in m for m in manifest["members"]):
            raise BundleError("manifest.json: model_sha256 is missing although its members record their sizes (a "
                              "bundle written by this version): the manifest was edited; export the bundle again")
        return
    if not _hex64(want):
        raise BundleError(f"manifest.json: model_sha256 must be 64 lower-case hexadecimal digits (is "
                          f"{json.dumps(want)[:40]}); export the bundle again")
    have = model_sha256(manifest)
    if have != want and model_sha256(manifest, calibration=False) != want:
        raise BundleError(f"manifest.json: the preprocessing, input, classes, members or temperature were changed "
                          f"after export (model_sha256 {want[:12]}…, values {have[:12]}…): the manifest was edited by hand or "
                          "is corrupt; export the bundle again instead of editing it")
