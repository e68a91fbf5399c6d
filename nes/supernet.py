"""The DARTS supernet: every edge holds all 7 ops; the architecture weights come in `forward`.

Node i = Σ_j q_{j→i} · Σ_o p_{j→i,o} · o(h_j), with (p [E, 7], q [E]) per cell type given by the
caller (softmax(α), softmax(β) per edge — see `ArchLayout.weights` — or Gumbel samples, or
one-hot vectors). There is no hidden α state: the same supernet serves the DARTS search, the
hypernetwork (θ = h(λ)) and the per-λ search.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from .backbone import CellBase, CellStack
from .ops import make_op
from .space import OPS, ArchWeights, num_edges


class MixedEdge(nn.Module):
    def __init__(self, c: int, stride: int, affine: bool) -> None:
        super().__init__()
        self.ops = nn.ModuleDict({name: make_op(name, c, stride, affine) for name in OPS})

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W]; w: [7] weights (op prob × input prob). ReLU shared by conv ops."""
        xr = F.relu(x)
        out = None
        for k, op in enumerate(self.ops.values()):
            y = op.body(xr) if op.pre_relu else op(x)
            y = w[k] * y
            out = y if out is None else out + y
        return out


class MixedCell(CellBase):
    def __init__(self, c_pp, c_p, c, reduction, reduction_prev, nodes: int, affine: bool):
        super().__init__(c_pp, c_p, c, reduction, reduction_prev, affine)
        self.nodes = nodes
        self.edges = nn.ModuleList()
        for i in range(nodes):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                self.edges.append(MixedEdge(c, stride, affine))

    def forward(self, s0, s1, op_w: torch.Tensor, in_w: torch.Tensor) -> torch.Tensor:
        # op_w [E, 7], in_w [E]: fold the node-input weight into the op weights once.
        w = op_w * in_w.unsqueeze(-1)
        states = [self.pre0(s0), self.pre1(s1)]
        e = 0
        for i in range(self.nodes):
            s = None
            for j in range(2 + i):
                y = self.edges[e](states[j], w[e])
                s = y if s is None else s + y
                e += 1
            states.append(s)
        return torch.cat(states[2:], dim=1)


class Supernet(CellStack):
    """DARTS supernet. `forward(x, weights)` with `weights` from `ArchLayout.weights(theta)`."""

    def __init__(
        self,
        c: int,
        num_classes: int,
        layers: int,
        nodes: int = 4,
        in_channels: int = 3,
        affine: bool = False,
        stem_multiplier: int = 3,
    ) -> None:
        super().__init__(
            lambda c_pp, c_p, cc, red, red_prev: MixedCell(c_pp, c_p, cc, red, red_prev, nodes, affine),
            c, num_classes, layers, nodes, in_channels, stem_multiplier,
        )
        self.num_edges = num_edges(nodes)

    def forward(self, x: torch.Tensor, weights: ArchWeights) -> torch.Tensor:
        """x: [B, C_in, H, W] float → logits [B, classes]."""
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            op_w, in_w = weights[cell.cell_type]
            s0, s1 = s1, cell(s0, s1, op_w.to(s1.dtype), in_w.to(s1.dtype))
        return self.head(s1)
