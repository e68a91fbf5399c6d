"""DARTS: the search for the base architecture α*, and the one loader of a run's α*.

θ is one free parameter vector (α and β of every used cell type) trained by the bi-level loop
(`nes.method.bilevel`). Files: RUN/search/{arch,supernet}.safetensors, genotype.json,
config.json, history.json, checkpoint.safetensors.
"""
from __future__ import annotations

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
                 gumbel: tuple[float, float] | None = None):
        super().__init__()
        self.layout = layout
        t0 = layout.init_theta() if theta0 is None else theta0.detach().clone().float()
        self.alpha = nn.Parameter(t0)
        self.gumbel = gumbel
        self.graph_safe = gumbel is None  # a sample decides which ops run: no CUDA-graph replay

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
    """DARTS search → RUN/search/{arch,supernet}.safetensors, genotype.json, config.json, history.json."""
    configure_threads()
    device = resolve_device(device)
    torch.manual_seed(cfg.seed)
    run = RunDir(run_dir)
    out = run.search
    ds, tl, vl = prepare_search_data(cfg, device)
    net, layout = build_supernet(cfg, ds, device)
    net.set_sparse(cfg.mode == "gdas")  # the search's samples only; a hypernetwork mixes densely
    arch = DartsArch(layout, layout.init_theta(generator=torch.Generator().manual_seed(cfg.seed)),
                     (cfg.gumbel_start, cfg.gumbel_end) if cfg.mode == "gdas" else None).to(device)
    if not out.checkpoint.exists():  # a resume's checkpoint is checked first: a refused one writes nothing
        run.write_dataset_info(cfg.dataset, ds.info.to_dict())
    res = train_bilevel(cfg, net, arch, tl, vl, out.path, device, progress, start_files={out.config: to_dict(cfg)})
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
