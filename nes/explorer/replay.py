"""The Search page's replay: θ as the search went, read from its record, and what changed when.

A DARTS search records θ (the architecture logits, [layout.size]) after 1/4, 1/2 and 3/4 of its
first epoch and at the end of every epoch in RUN/search/theta_history.safetensors
(`nes.method.darts.ThetaRecord`). Here that record is read back (safetensors only, never a pickle),
each moment is discretized into its genotype, and the kept edges that change are counted: from
one recorded moment to the next, and from each moment to the final α*. The page only draws what
this module returns; searches run before the record existed have none (`load_replay` → None,
`MISSING_NOTE` says so).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import torch

from ..layout import RunDir
from ..method.darts import Moment, ThetaHistory, load_theta_history
from ..method.space import ArchLayout, Genotype
from .viz import DIFF_COLOR, OP_COLORS  # importing viz also registers the "nes" plotly template

MISSING_NOTE = "This search was run before replays were recorded."


@dataclass(frozen=True)
class Replay:
    """θ at the K recorded moments of a search, with each moment's genotype.

    `theta` [K, layout.size] float32; `moments[k]` says when row k was taken; `genotypes[k]` is
    `layout.discretize(theta[k])` (what the search would have returned had it stopped there)."""

    theta: torch.Tensor
    moments: tuple[Moment, ...]
    steps_per_epoch: int
    layout: ArchLayout
    genotypes: tuple[Genotype, ...]

    @classmethod
    def from_history(cls, hist: ThetaHistory) -> "Replay":
        """Discretize every recorded θ once (K genotypes: a few ms for a 50-epoch search)."""
        genos = tuple(hist.layout.discretize(t) for t in hist.theta)
        return cls(hist.theta, tuple(hist.moments), hist.steps_per_epoch, hist.layout, genos)

    def __len__(self) -> int:
        return len(self.moments)

    def label(self, k: int) -> str:
        """Moment k in words, epochs counted from 1: 'epoch 1, step 2 of 8' or 'end of epoch 3'."""
        m = self.moments[k]
        if m.step == self.steps_per_epoch:
            return f"end of epoch {m.epoch + 1}"
        return f"epoch {m.epoch + 1}, step {m.step} of {self.steps_per_epoch}"

    def epochs_done(self, k: int) -> float:
        """Moment k on a continuous axis of epochs done (0.25, 0.5, 0.75, 1, 2, …)."""
        m = self.moments[k]
        return m.epoch + m.step / self.steps_per_epoch

    def cells(self, k: int) -> dict[str, tuple[torch.Tensor, list[torch.Tensor]]]:
        """θ at moment k → per cell type (α [E, 7], [β_i]), as the figures of `viz` take them."""
        return self.layout.split(self.theta[k].float())


def load_replay(run_dir: str | Path, layout: ArchLayout) -> Replay | None:
    """The run's search replay, or None when its search kept no record (run before the record
    existed). ArtifactError naming the file when the record is damaged or belongs to another
    layout than the search's α* (`layout`)."""
    path = RunDir(run_dir).search.theta_history
    if not path.exists():
        return None
    return Replay.from_history(load_theta_history(path, layout))


def changed_edges(a: Genotype, b: Genotype) -> int:
    """Kept edges of `a` that `b` does not keep with the same op: Λ − matched edges (0 … Λ).
    Both keep the same number of edges per node, so the count is symmetric."""
    return a.num_kept_edges() - a.matched_edges(b)


def change_counts(replay: Replay, final: Genotype) -> list[dict[str, Any]]:
    """Per moment k: its label, epochs done, the kept edges changed since moment k−1 (None for
    the first moment, which has no predecessor) and those that differ from the final α*."""
    g = replay.genotypes
    return [{"moment": replay.label(k), "epochs": replay.epochs_done(k),
             "vs_previous": changed_edges(g[k], g[k - 1]) if k else None,
             "vs_final": changed_edges(g[k], final)} for k in range(len(replay))]


def changes_figure(replay: Replay, final: Genotype, at: int | None = None) -> go.Figure:
    """Kept edges changed per recorded moment: since the moment before (bars) and against the final
    α* (line), over epochs done; a dotted line marks moment `at` (the replay slider's)."""
    rows = change_counts(replay, final)
    xs = [r["epochs"] for r in rows]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=xs[1:], y=[r["vs_previous"] for r in rows[1:]], name="changed since the moment before",
                         marker_color=OP_COLORS["sep_conv_3x3"], width=0.15, customdata=[r["moment"] for r in rows[1:]],
                         hovertemplate="%{customdata}: %{y} edge(s) changed<extra></extra>"))
    fig.add_trace(go.Scatter(x=xs, y=[r["vs_final"] for r in rows], name="differ from the final α*",
                             mode="lines+markers", line=dict(color=DIFF_COLOR), customdata=[r["moment"] for r in rows],
                             hovertemplate="%{customdata}: %{y} edge(s) differ from α*<extra></extra>"))
    if at is not None:
        fig.add_vline(x=xs[at], line=dict(color="#555555", dash="dot"))
    top = max(1, final.num_kept_edges())
    fig.update_layout(template="nes", margin=dict(l=10, r=10, t=40, b=10), height=280,
                      title="genotype changes during the search (kept edges)",
                      xaxis=dict(title="epochs done", rangemode="tozero"),
                      yaxis=dict(title="edges", range=[0, top + 0.5], dtick=1),
                      legend=dict(orientation="h", y=-0.3))
    fig.layout.meta = {"changes": rows}
    return fig
