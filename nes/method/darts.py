"""DARTS: the search for the base architecture α*, and the one loader of a run's α*.

θ is one free parameter vector (α and β of every used cell type) trained by the bi-level loop
(`nes.method.bilevel`). Files: RUN/search/{arch,supernet}.safetensors, genotype.json,
config.json, history.json, checkpoint.safetensors, and theta_history.safetensors: θ at a few
moments of the first epoch and at the end of every epoch (`ThetaRecord`), which the Search page
replays.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn
import torch.nn.functional as F

from ..artifacts import ArtifactError, load_tensors, read_json, reading, save_tensors, write_json
from ..config import SearchConfig, from_dict, to_dict
from ..layout import RunDir
from ..runtime import configure_threads, resolve_device
from .bilevel import ArchModule, Draw, Progress, SearchResult, build_supernet, prepare_search_data, train_bilevel
from .space import ArchLayout, ArchWeights, Genotype, edge_index


class DartsArch(ArchModule):
    """DARTS: θ is one free parameter vector (α and β of every used cell type).

    With `gumbel` = (t_start, t_end) (the `gdas` search mode) every step samples one op per edge
    from Gumbel-softmax(α / t), t falling linearly over the search, as a straight-through one-hot:
    the supernet runs only the sampled ops, and α's gradient flows through the soft sample. The
    inputs of each node keep their softmax(β) weights. The step's draw is then the search progress
    (it sets t); without `gumbel` it is None."""

    def __init__(self, layout: ArchLayout, theta0: torch.Tensor | None = None,
                 gumbel: tuple[float, float] | None = None, record: "ThetaRecord | None" = None):
        super().__init__()
        self.layout = layout
        t0 = layout.init_theta() if theta0 is None else theta0.detach().clone().float()
        self.alpha = nn.Parameter(t0)
        self.gumbel = gumbel
        self.graph_safe = gumbel is None  # a sample decides which ops run: no CUDA-graph replay
        self.record = record  # θ's replay record (None: nothing recorded)

    def at_moment(self, epoch: int, done: int, steps: int) -> None:
        if self.record is not None:
            self.record.moment(epoch, done, self.alpha)

    def epoch_saved(self, epoch: int) -> None:
        if self.record is not None:
            self.record.saved()

    def draw(self, generator: torch.Generator, progress: float) -> Draw:
        return progress if self.gumbel is not None else None

    def theta(self, progress: Draw) -> torch.Tensor:
        return self.alpha

    def mixing(self, progress: Draw, theta: torch.Tensor) -> ArchWeights:
        if self.gumbel is None:
            return self.layout.weights(theta)
        t0, t1 = self.gumbel
        t = t0 + (t1 - t0) * float(progress or 0.0)
        return {ct: (F.gumbel_softmax(alpha, tau=t, hard=True, dim=-1),
                     torch.cat([torch.softmax(b, dim=-1) for b in betas], dim=-1))
                for ct, (alpha, betas) in self.layout.split(theta).items()}

    def final_theta(self) -> torch.Tensor:
        return self.alpha.detach()

    def epoch_metrics(self, extra: dict[str, list]) -> dict[str, Any]:
        """How sure the search is so far: `confidence(θ)` of the current genotype."""
        return confidence(self.layout, self.alpha.detach().float().cpu())


def confidence(layout: ArchLayout, theta: torch.Tensor) -> dict[str, Any]:
    """What α* means: its genotype, the mean top-op probability on the kept edges (uniform is
    1/7 ≈ 0.14) and the mean margin between each node's chosen input and the next one."""
    g = layout.discretize(theta)
    parts = layout.split(theta)
    top, margin = [], []
    for ct, (alpha, betas) in parts.items():
        top += [float(torch.softmax(alpha[edge_index(i, inp)], -1).max()) for ct_, i, inp, _ in g.edges() if ct_ == ct]
        for b in betas:
            p = torch.softmax(b, -1).sort(descending=True).values
            margin.append(float(p[layout.inputs_per_node - 1] - p[layout.inputs_per_node]) if len(p) > layout.inputs_per_node else 1.0)
    return {"genotype": g.compact(), "kept_top_op": sum(top) / len(top), "input_margin": sum(margin) / len(margin)}

def search(
    cfg: SearchConfig,
    run_dir: str | Path,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
) -> SearchResult:
    """DARTS search → RUN/search/{arch,supernet}.safetensors, genotype.json, config.json, history.json
    and the replay record theta_history.safetensors (`ThetaRecord`)."""
    configure_threads()
    device = resolve_device(device)
    torch.manual_seed(cfg.seed)
    run = RunDir(run_dir)
    out = run.search
    ds, tl, vl = prepare_search_data(cfg, device)
    net, layout = build_supernet(cfg, ds, device)
    net.set_sparse(cfg.mode == "gdas")  # the search's samples only; a hypernetwork mixes densely
    record = ThetaRecord(out.theta_history, layout, min(len(tl), len(vl)))
    arch = DartsArch(layout, layout.init_theta(generator=torch.Generator().manual_seed(cfg.seed)),
                     (cfg.gumbel_start, cfg.gumbel_end) if cfg.mode == "gdas" else None, record).to(device)
    if not out.checkpoint.exists():  # a resume's checkpoint is checked first: a refused one writes nothing
        run.write_dataset_info(cfg.dataset, ds.info.to_dict())
    res = train_bilevel(cfg, net, arch, tl, vl, out.path, device, progress, start_files={out.config: to_dict(cfg)})
    record.finish(res.theta, cfg.epochs)
    save_tensors(out.arch, {"theta": res.theta}, {"layout": layout.to_dict()})
    save_tensors(out.supernet, net.state_dict(), {"config": to_dict(cfg)})
    write_json(out.genotype, {"genotype": res.genotype.to_dict(), "layout": layout.to_dict(),
                              "compact": res.genotype.compact()})
    write_json(out.history, res.history)
    return res


class SearchArtifacts(NamedTuple):
    """A finished search: its config, the θ layout, the α* logits θ* and genotype*."""

    config: SearchConfig
    layout: ArchLayout
    theta: torch.Tensor
    star: Genotype


def load_search(run_dir: str | Path) -> SearchArtifacts:
    """The run's finished search (the one loader of α*); ArtifactError that says what to run when
    it is missing, or when θ* does not fit its layout."""
    run = RunDir(run_dir)
    d = run.search
    if not d.arch.exists():
        raise ArtifactError(f"{d.path}: no finished search; run `python -m nes search --run {run_dir}` first")
    with reading(d.config, "the search's config"):
        cfg = from_dict(SearchConfig, read_json(d.config, dict, "the search's config"))
    tensors, meta = load_tensors(d.arch, finite=True)
    if not isinstance(meta, dict) or "layout" not in meta or "theta" not in tensors:
        raise ArtifactError(f"{d.arch}: not a search result (no θ or layout); run the search again")
    layout = ArchLayout.from_dict(meta["layout"])
    theta = tensors["theta"]
    if tuple(theta.shape) != (layout.size,):
        raise ArtifactError(f"{d.arch}: θ has shape {list(theta.shape)}, its layout needs [{layout.size}]; "
                            "run the search again")
    with reading(d.genotype, "the search's genotype record"):
        star = Genotype.from_dict(read_json(d.genotype, dict, "the search's genotype record")["genotype"])
    return SearchArtifacts(cfg, layout, theta, star)


# -- the replay record: θ at a few moments of the search ------------------------------------------
RECORD_FRACTIONS = (0.25, 0.5, 0.75)  # moments within the first epoch (fractions of its steps)


class Moment(NamedTuple):
    """When a row of the replay record was taken: after `step` of the `steps_per_epoch` steps of
    epoch `epoch` (0-based); `step` == steps_per_epoch is the epoch's end."""

    epoch: int
    step: int


class ThetaHistory(NamedTuple):
    """A search's replay record, read back: θ at K moments, in the order they happened."""

    theta: torch.Tensor  # [K, layout.size] float32, finite
    moments: list[Moment]  # K, strictly increasing
    steps_per_epoch: int
    layout: ArchLayout


def first_epoch_steps(steps: int) -> list[int]:
    """The steps of the first epoch after which θ is recorded (1/4, 1/2, 3/4 of `steps`; none of
    them at 0 or at the epoch's end, which is recorded anyway)."""
    return sorted({round(steps * f) for f in RECORD_FRACTIONS} & set(range(1, steps)))


def _whole(value: Any, low: int, what: str) -> int:
    """`value` if it is an int ≥ `low` (not a bool or float), else ValueError naming `what`."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{what} is {value!r}, not a whole number >= {low}")
    return value


def load_theta_history(path: str | Path, layout: ArchLayout | None = None) -> ThetaHistory:
    """Read a replay record (safetensors only: nothing is unpickled). ArtifactError naming the file
    when it is missing, damaged, holds NaN, or does not fit `layout` (the search's θ layout)."""
    tensors, meta = load_tensors(path, finite=True)
    with reading(path, "a search's replay record"):
        theta, rec_layout = tensors["theta"], ArchLayout.from_dict(meta["layout"])
        steps = _whole(meta["steps_per_epoch"], 1, "steps_per_epoch")
        moments = [Moment(_whole(e, 0, "a moment's epoch"), _whole(k, 1, "a moment's step"))
                   for e, k in meta["moments"]]
    if theta.dtype != torch.float32 or theta.ndim != 2 or tuple(theta.shape) != (len(moments), rec_layout.size):
        raise ArtifactError(f"{path}: θ is {theta.dtype} {list(theta.shape)}, the record needs float32 "
                            f"[{len(moments)}, {rec_layout.size}]; the file is damaged: delete it")
    if not moments or any(m.step > steps for m in moments) or any(a >= b for a, b in zip(moments, moments[1:])):
        raise ArtifactError(f"{path}: its moments are empty, out of order or past an epoch's "
                            f"{steps} steps; the file is damaged: delete it")
    if layout is not None and rec_layout.to_dict() != layout.to_dict():
        raise ArtifactError(f"{path}: recorded for another architecture layout than this search's α*; "
                            "it belongs to another search: delete it")
    return ThetaHistory(theta, moments, steps, rec_layout)


class ThetaRecord:
    """Records θ for the replay → RUN/search/theta_history.safetensors: after `first_epoch_steps`
    of the first epoch and at the end of every epoch, one [K, layout.size] float32 tensor with the
    moments in its metadata.

    Why this way: the file is rewritten whole (atomically, a few KB) only after an epoch's
    checkpoint, so a crash never tears it and it never holds a moment a resume will redo; a failed
    fresh start (before its first checkpoint) writes nothing. A resumed session keeps the rows of
    the epochs before its first one and, when a crash fell between the last checkpoint and the
    record, adds that epoch's end from θ as restored (the very θ the checkpoint saved)."""

    def __init__(self, path: str | Path, layout: ArchLayout, steps: int) -> None:
        self.path, self.layout, self.steps = Path(path), layout, steps
        self.first = set(first_epoch_steps(steps))
        self.rows: list[tuple[Moment, torch.Tensor]] | None = None  # None until this session's first moment
        self.dirty = False

    def moment(self, epoch: int, done: int, theta: torch.Tensor) -> None:
        """θ [layout.size] after `done` steps of `epoch`: kept when it is a recorded moment (a
        device copy, no host sync; written by `saved`)."""
        if self.rows is None:
            self._start(epoch, theta)
        if done == self.steps or (epoch == 0 and done in self.first):
            self.rows.append((Moment(epoch, done), theta.detach().float().clone()))
            self.dirty = True

    def saved(self) -> None:
        """An epoch's checkpoint is written: write the record with every finite row so far."""
        if self.rows is None or not self.dirty:
            return
        self.rows = [(m, t.cpu()) for m, t in self.rows if bool(torch.isfinite(t).all())]
        if self.rows:
            save_tensors(self.path, {"theta": torch.stack([t for _, t in self.rows])},
                         {"layout": self.layout.to_dict(), "steps_per_epoch": self.steps,
                          "moments": [list(m) for m, _ in self.rows]})
        self.dirty = False

    def finish(self, theta: torch.Tensor, epochs: int) -> None:
        """After the loop: a session that found no epoch left still mends the record's last row."""
        if self.rows is None:
            self._start(epochs, theta)
            self.saved()

    def _start(self, epoch: int, theta: torch.Tensor) -> None:
        """This session starts at `epoch` with θ: keep the record's earlier rows, mend a gap."""
        self.rows = self._earlier(epoch) if epoch > 0 else []
        end = Moment(epoch - 1, self.steps)
        if epoch > 0 and (not self.rows or self.rows[-1][0] != end):
            self.rows.append((end, theta.detach().float().clone()))
            self.dirty = True

    def _earlier(self, epoch: int) -> list[tuple[Moment, torch.Tensor]]:
        """The rows an earlier session recorded before `epoch` (none when there is no record or it
        cannot be used: a damaged one is warned about and started again)."""
        if not self.path.exists():
            return []
        try:
            old = load_theta_history(self.path, self.layout)
            if old.steps_per_epoch != self.steps:
                raise ArtifactError(f"{self.path}: recorded with {old.steps_per_epoch} steps per epoch, "
                                    f"this search takes {self.steps}")
        except ArtifactError as e:
            warnings.warn(f"{e}; the replay record starts again at epoch {epoch}")
            self.dirty = True
            return []
        return [(m, t) for m, t in zip(old.moments, old.theta) if m.epoch < epoch]
