"""Dataset shift: every member and the ensemble on corrupted copies of the test set.

The shifted sets are `nes.corruptions` of the members' own test images (the first `images` of a
seeded shuffle, the same for every member and method) at severities 1–5, plus the same images
clean (severity 0). Each member's probabilities on every condition are computed once, batched and
without autograd in the channels-last format, and cached beside its other files
(MEMBER/shift/<key>.safetensors, float16); the corrupted images are cached in the run store
(RUN/shift/images/<key>.safetensors). Scoring goes through `scoring.score`, so every condition gets
the same report as the clean test set: metrics, the gain over the best member with its paired
interval, calibration before and after temperature scaling, and the gain ledger.

Selection protocol (`select`), the same for every method: "clean" picks the best member and fits
T on the members' clean validation split; "shifted" on that split corrupted by the validation
corruptions (`corruptions.VAL_CORRUPTIONS`, never the test ones), every severity pooled.
"""
from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..artifacts import ArtifactError, load_tensors, read_json, save_tensors
from ..config import TrainConfig
from ..corruptions import SEVERITIES, TEST_CORRUPTIONS, VAL_CORRUPTIONS, VERSION, corrupt
from ..data import DataError, DatasetInfo, DeviceLoader, load_dataset, split_indices
from ..layout import MemberDir, RunDir
from ..runtime import resolve_device, use_channels_last
from .ledger import TERMS, ledger_difference
from .network import Network
from .scoring import EnsembleReport, MemberProbs, score
from .train import SPLIT_SEED, SavedMember, infer, inference_network, read_member

DEFAULT_IMAGES = 1000  # per condition: 41 conditions × 10 members (×2 with flip TTA) fit 3 minutes on 2 cores
SELECT = ("clean", "shifted")
CLEAN = "clean"
_DATA_KEYS = ("dataset", "data_dir", "limit", "test_limit", "val_fraction", "image_size", "pad")
Conditions = dict[str, torch.Tensor]
"""{condition: tensor}: "clean" and "<corruption>_<severity>" (e.g. "gaussian_blur_3")."""


def condition(corruption: str, severity: int) -> str:
    return CLEAN if severity == 0 else f"{corruption}_{severity}"


def conditions(corruptions: tuple[str, ...]) -> list[tuple[str, int]]:
    """(corruption, severity) of every condition: clean first, then each corruption at 1..5."""
    return [(CLEAN, 0)] + [(c, s) for c in corruptions for s in SEVERITIES]


@dataclass(frozen=True)
class ShiftSettings:
    """How a shift table is made: images per condition, the corruptions' seed, the selection protocol."""

    images: int = DEFAULT_IMAGES
    seed: int = 0
    select: str = "clean"

    def check(self) -> "ShiftSettings":
        if not 1 <= int(self.images) <= 1_000_000:
            raise DataError(f"--images must be a positive number of test images per condition, got {self.images}")
        if self.select not in SELECT:
            raise DataError(f"--select must be one of {', '.join(SELECT)}, got {self.select!r}")
        return self

    def key(self, split: str, cfg: TrainConfig) -> str:
        """The cache key of one split's shifted images: everything that changes them."""
        data = "|".join(str(getattr(cfg, k)) for k in _DATA_KEYS)
        digest = hashlib.sha256(data.encode()).hexdigest()[:8]
        return f"{split}_n{self.images}_seed{self.seed}_v{VERSION}_{digest}"


# ----------------------------------------------------------------------------- members and images
def member_network(d: MemberDir, member: SavedMember, info: DatasetInfo, device: torch.device) -> Network:
    """Member D's trained network (its records `member`, `train.read_member`) in eval mode on
    `device` (channels-last where that is faster)."""
    cfg = member.config
    net = Network(member.genotype, cfg.channels, info.num_classes, cfg.layers, info.channels, auxiliary=cfg.auxiliary)
    state, _ = load_tensors(d.weights, finite=True)
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise ArtifactError(f"{d.weights}: does not fit the member's genotype ({str(e)[:160]}); retrain it") from None
    net = net.to(device).eval()
    return net.to(memory_format=torch.channels_last) if use_channels_last(device) else net


def split_images(cfg: TrainConfig, split: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, DatasetInfo]:
    """The members' `split` images ("test", or "val": their validation split) → the first n of a
    seeded shuffle: uint8 [n, C, H, W], labels [n], the dataset's info with the members' crop."""
    ds = load_dataset(cfg.dataset, cfg.data_dir, "cpu", cfg.limit, cfg.test_limit, download=False)
    if split == "test":
        x, y = ds.test_x, ds.test_y
    else:
        _, va = split_indices(len(ds.train_y), cfg.val_fraction, SPLIT_SEED)
        x, y = ds.train_x[va], ds.train_y[va]
    pick = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n]
    return x[pick], y[pick], ds.info.with_crop(cfg.image_size, cfg.pad)


def shifted_images(root: RunDir, cfg: TrainConfig, settings: ShiftSettings, split: str
                   ) -> tuple[Conditions, torch.Tensor, DatasetInfo]:
    """Every condition of `split` ("test": the test corruptions; "val": the validation ones) as
    uint8 images, their labels and the dataset info; cached in ROOT/shift/images/."""
    x, y, info = split_images(cfg, split, settings.images, settings.seed)
    path = images_path(root, settings, split, cfg)
    want = [condition(c, s) for c, s in conditions(TEST_CORRUPTIONS if split == "test" else VAL_CORRUPTIONS)]
    cached = _read_cache(path)
    if all(k in cached for k in want) and torch.equal(cached.get("labels", torch.empty(0)), y):
        return {k: cached[k] for k in want}, y, info
    images = {CLEAN: x}
    for c, s in conditions(TEST_CORRUPTIONS if split == "test" else VAL_CORRUPTIONS)[1:]:
        images[condition(c, s)] = corrupt(x, c, s, settings.seed)
    save_tensors(path, {**images, "labels": y}, {"version": VERSION, "split": split, "images": len(y)})
    return images, y, info


def images_path(root: RunDir, settings: ShiftSettings, split: str, cfg: TrainConfig) -> Path:
    return root.path / "shift" / "images" / f"{settings.key(split, cfg)}.safetensors"


def _weights_stamp(d: MemberDir) -> str:
    st = d.weights.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def _read_cache(path: Path, stamp: str | None = None) -> dict[str, torch.Tensor]:
    """A cache file's tensors; {} when it is absent, unreadable, not finite, or was made from other
    weights (`stamp`): a cache is recomputed, never trusted blindly."""
    if not path.exists():
        return {}
    try:
        tensors, meta = load_tensors(path, finite=True)
    except ArtifactError:
        return {}
    if stamp is not None and (not isinstance(meta, dict) or meta.get("weights") != stamp):
        return {}
    return tensors


def member_probs(d: MemberDir, images: Conditions, y: torch.Tensor, info: DatasetInfo, key: str,
                 device: torch.device) -> Conditions:
    """Member D's probabilities float32 [N, K] on every condition (cached in MEMBER/shift/KEY, for
    the member's current weights)."""
    path = d.path / "shift" / f"{key}.safetensors"
    stamp = _weights_stamp(d) if d.weights.exists() else None
    cached = _read_cache(path, stamp)
    missing = [k for k in images if k not in cached]
    if missing:
        member = read_member(d)
        net = member_network(d, member, info, device)
        flip = bool(member.config.tta_flip and info.flip)  # as the member's own test scores
        for k in missing:
            loader = DeviceLoader(images[k].to(device), y.to(device), info, 128, train=False,
                                  channels_last=use_channels_last(device))
            if isinstance(net, Network):  # the first batch traces it
                net = inference_network(net, next(iter(loader.epoch()))[0])
            cached[k] = infer(net, loader, flip).half()
        save_tensors(path, cached, {"version": VERSION, "images": int(len(y)), "weights": stamp})
    return {k: cached[k].float() for k in images}


# ----------------------------------------------------------------------------- one member set
@dataclass
class ShiftProbs:
    """A member set's probabilities on every condition: test[cond] [M, N, K], val[cond] [M, Nv, K]
    (the validation corruptions, only for select="shifted"), labels y [N] and val_y [Nv]."""

    names: tuple[str, ...]
    test: Conditions
    y: torch.Tensor
    val: Conditions | None = None
    val_y: torch.Tensor | None = None


def _check_same_data(run: RunDir, names: list[str]) -> TrainConfig:
    cfgs = {n: read_member(run.member(n)).config for n in names}
    first = cfgs[names[0]]
    for n, c in cfgs.items():
        odd = [k for k in _DATA_KEYS if getattr(c, k) != getattr(first, k)]
        if odd:
            raise ArtifactError(f"member {n!r} was trained with other data settings than {names[0]!r} ({', '.join(odd)}): "
                                "a shift table needs members that share their test images")
    return first


def shift_probs(run_dir: str | Path, names: list[str], settings: ShiftSettings, root: str | Path | None = None,
                device: str | torch.device | None = None, progress: Callable[[str], None] | None = None) -> ShiftProbs:
    """The probabilities of members NAMES (of run RUN_DIR) on every condition; images cached in
    ROOT (default RUN_DIR) and probabilities beside each member."""
    run, store = RunDir(run_dir), RunDir(root or run_dir)
    cfg = _check_same_data(run, names)
    dev = resolve_device(device)
    splits = ("test", "val") if settings.select == "shifted" else ("test",)
    out: dict[str, tuple[Conditions, torch.Tensor]] = {}
    for split in splits:
        images, y, info = shifted_images(store, cfg, settings, split)
        if progress:
            progress(f"{split}: {len(names)} members × {len(images)} conditions × {len(y)} images")
        per_member = []
        for i, n in enumerate(names, start=1):
            if progress:
                progress(f"{split}: member {n} ({i}/{len(names)}), {len(images)} conditions × {len(y)} images")
            per_member.append(member_probs(run.member(n), images, y, info, settings.key(split, cfg), dev))
        out[split] = ({k: torch.stack([p[k] for p in per_member]) for k in images}, y)
    val = out.get("val")
    return ShiftProbs(tuple(names), *out["test"], *(val if val else (None, None)))


# ----------------------------------------------------------------------------- scoring
def _row(members: MemberProbs, probs: torch.Tensor, y: torch.Tensor, corruption: str, severity: int,
         groups: int = 1) -> dict:
    """One row of the shift table: the ledger (`ledger.TERMS`), ECE, the gain over the best member,
    calibration after T, every member's metrics (`groups`: copies of the same images, `pooled`)."""
    rep: EnsembleReport = score(members, probs, y, condition(corruption, severity), groups)
    return {"corruption": corruption, "severity": severity, "images": rep.images, **rep.ledger,
            "ece": rep.metrics["ece"], "disagreement": rep.metrics.get("disagreement"),
            "vs_best": rep.vs_best, "calibrated": rep.calibrated, "members": rep.members}


def pooled(sp: ShiftProbs, severity: int, corruptions: tuple[str, ...] = TEST_CORRUPTIONS
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Every test corruption at `severity` as one test set: [M, C·N, K] and labels [C·N] (0: clean)."""
    keys = [CLEAN] if severity == 0 else [condition(c, severity) for c in corruptions]
    return torch.cat([sp.test[k] for k in keys], dim=1), sp.y.repeat(len(keys))


def _selector(run_dir: str | Path, sp: ShiftProbs, select: str) -> MemberProbs:
    """The members' validation used to pick the best member and fit T under protocol `select`."""
    clean = MemberProbs.load(run_dir, list(sp.names))
    return clean if select == "clean" else shifted_validation(clean, sp)


def shifted_validation(members: MemberProbs, sp: ShiftProbs) -> MemberProbs:
    """MEMBERS with their validation split replaced by its validation corruptions, every severity
    pooled ([M, C·S·Nv, K]; SP made with select="shifted", members in the same order)."""
    if sp.val is None or tuple(sp.names) != tuple(members.names):
        raise ArtifactError(f"no shifted validation for members {', '.join(members.names)}: shift them with select=shifted")
    keys = [k for k in sp.val if k != CLEAN]
    return dataclasses.replace(members, val=torch.cat([sp.val[k] for k in keys], dim=1),
                               val_y=sp.val_y.repeat(len(keys)))


def _copies(severity: int, corruptions: tuple[str, ...] = TEST_CORRUPTIONS) -> int:
    """How many corrupted copies of each test image `pooled` holds at `severity`."""
    return 1 if severity == 0 else len(corruptions)


def shift_table(run_dir: str | Path, sp: ShiftProbs, settings: ShiftSettings) -> dict:
    """The shift report of one member set: a row per (corruption, severity) and, per severity,
    every test corruption pooled (`by_severity`, severity 0 = the same images clean)."""
    members = _selector(run_dir, sp, settings.select)
    rows = [_row(members, sp.test[condition(c, s)], sp.y, c, s) for c, s in conditions(TEST_CORRUPTIONS)]
    by_sev = [_row(members, *pooled(sp, s), "clean" if s == 0 else "all", s, _copies(s)) for s in (0, *SEVERITIES)]
    return {"kind": "shift", "version": VERSION, "members": list(sp.names), "images": int(len(sp.y)),
            "seed": settings.seed, "select": settings.select,
            "corruptions": {"test": list(TEST_CORRUPTIONS), "val": list(VAL_CORRUPTIONS)},
            "rows": rows, "by_severity": by_sev}


def shift_difference(a: ShiftProbs, b: ShiftProbs) -> list[dict]:
    """A − B of every ledger term per severity (test corruptions pooled; 0 = clean), each with its
    paired bootstrap interval: [{"severity", **{term: Difference dict}}]."""
    if not torch.equal(a.y, b.y):
        raise ArtifactError("the two member sets were shifted on different test images (other data settings, "
                            "--images or --seed): they cannot be compared image by image")
    out = []
    for s in (0, *SEVERITIES):
        (pa, y), (pb, _) = pooled(a, s), pooled(b, s)
        diff = ledger_difference(pa, pb, y, groups=_copies(s))
        out.append({"severity": s, **{k: diff[k].to_dict() for k in TERMS}})
    return out


def shift_report(run_dir: str | Path, names: list[str], settings: ShiftSettings, root: str | Path | None = None,
                 device: str | torch.device | None = None, progress: Callable[[str], None] | None = None
                 ) -> tuple[dict, ShiftProbs]:
    """(the shift report of members NAMES, their probabilities): see `shift_table`."""
    settings.check()
    t0 = time.perf_counter()
    sp = shift_probs(run_dir, names, settings, root, device, progress)
    report = shift_table(run_dir, sp, settings)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report, sp


# ----------------------------------------------------------------------------- saved reports
def report_path(run_dir: str | Path, label: str, select: str = "clean") -> Path:
    """RUN/shift/<label>.json: a member set's shift report ("ensemble", or "<method>_s<seed>"), with
    the best member and T chosen on clean validation; <label>.shifted.json on the shifted one."""
    return RunDir(run_dir).path / "shift" / (f"{label}.json" if select == "clean" else f"{label}.{select}.json")


def load_reports(run_dir: str | Path) -> dict[str, dict]:
    """{label: report} of every saved shift report of the run (none: {}); reports that are not
    shift reports are skipped."""
    folder = RunDir(run_dir).path / "shift"
    out = {}
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        rep = read_json(p, dict, "a shift report")
        if rep.get("kind") == "shift" and isinstance(rep.get("by_severity"), list):
            out[p.stem] = rep
    return out


SUMMARY_KEYS = ("accuracy", "nll", "ece", "brier", "mean_member_nll", "diversity_nll")


def shift_summary(run_dir: str | Path, names: list[str] | tuple[str, ...]) -> dict | None:
    """The saved shift report of exactly the members NAMES, per severity (test corruptions pooled):
    what an export manifest records; None when no readable report covers this member set."""
    try:
        found = load_reports(run_dir)
    except ArtifactError:  # a damaged report must not stop an export; `nes shift` names it
        return None
    for label, rep in found.items():
        if sorted(rep.get("members", [])) != sorted(names):
            continue
        rows = [{"severity": int(r["severity"]), **{k: float(r[k]) for k in SUMMARY_KEYS},
                 "ece_calibrated": float(r["calibrated"]["ece"]) if r.get("calibrated") else None}
                for r in rep["by_severity"]]
        return {"report": label, "images_per_condition": int(rep["images"]), "select": rep.get("select"),
                "corruptions": list(rep.get("corruptions", {}).get("test", [])), "by_severity": rows}
    return None
