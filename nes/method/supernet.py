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
from .ops import FactorizedReduce, Identity, PoolBN, factorized_reduce_many, make_op
from .space import OPS, ArchWeights, edge_index, num_edges


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


def _accumulate(acc: torch.Tensor | None, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """acc + w·y in one pass (w a 0-d tensor)."""
    return w * y if acc is None else torch.addcmul(acc, y, w)


class MixedCell(CellBase):
    edge_by_edge = False
    """True: the textbook evaluation, each edge on its own (`forward_edge_by_edge`); the search
    benchmark's plain baseline and the tests' reference set it."""

    def __init__(self, c_pp, c_p, c, reduction, reduction_prev, nodes: int, affine: bool):
        super().__init__(c_pp, c_p, c, reduction, reduction_prev, affine)
        self.nodes = nodes
        self.edges = nn.ModuleList()
        for i in range(nodes):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                self.edges.append(MixedEdge(c, stride, affine))

    def forward(self, s0, s1, op_w: torch.Tensor, in_w: torch.Tensor) -> torch.Tensor:
        """Node i = Σ_j Σ_o w[j→i, o] · o_{j→i}(h_j), evaluated source by source.

        All edges leaving one state h_j share its ReLU; the parameter-free ops (pools with their
        non-affine BN, identity) give the same output on each of those edges, so they are computed
        once per source; the FactorizedReduce convs of a source's stride-2 edges are one matmul
        (`factorized_reduce_many`). Node j−2 is complete once sources 0 … j−1 are done.
        Equals `forward_edge_by_edge` (tests/test_networks.py checks it)."""
        if self.edge_by_edge:
            return self.forward_edge_by_edge(s0, s1, op_w, in_w)
        w = op_w * in_w.unsqueeze(-1)  # fold the node-input weight into the op weights once
        states = [self.pre0(s0), self.pre1(s1)]
        acc: list[torch.Tensor | None] = [None] * self.nodes
        for j in range(1 + self.nodes):  # the last node feeds no edge
            if j >= 2:
                states.append(acc[j - 2])
            targets = [(i, edge_index(i, j)) for i in range(max(0, j - 1), self.nodes)]
            self._source(states[j], targets, w, acc)
        states.append(acc[-1])
        return torch.cat(states[2:], dim=1)

    def forward_edge_by_edge(self, s0, s1, op_w: torch.Tensor, in_w: torch.Tensor) -> torch.Tensor:
        w = op_w * in_w.unsqueeze(-1)
        states, e = [self.pre0(s0), self.pre1(s1)], 0
        for i in range(self.nodes):
            s = None
            for j in range(2 + i):
                y = self.edges[e](states[j], w[e])
                s = y if s is None else s + y
                e += 1
            states.append(s)
        return torch.cat(states[2:], dim=1)

    def _source(self, h: torch.Tensor, targets: list[tuple[int, int]], w: torch.Tensor,
                acc: list[torch.Tensor | None]) -> None:
        """Add every edge h → node i (edge e) for (i, e) in `targets` into acc[i]."""
        hr = F.relu(h)
        edges = [self.edges[e] for _, e in targets]
        for k, name in enumerate(OPS):
            mods = [edge.ops[name] for edge in edges]
            if _shared(mods[0]):
                y = mods[0](h)
                if len(mods) > 1 and mods[0].training:
                    _copy_buffers(mods[0], mods[1:])
                ys = [y] * len(mods)
            elif isinstance(mods[0], FactorizedReduce) and len(mods) > 1:
                ys = factorized_reduce_many(mods, hr) or [m.body(hr) for m in mods]
            else:
                ys = [m.body(hr) if m.pre_relu else m(h) for m in mods]
            for (i, e), y in zip(targets, ys):
                acc[i] = _accumulate(acc[i], y, w[e, k])


def _shared(op: nn.Module) -> bool:
    """Parameter-free ops: the same output on every edge that leaves one state."""
    return isinstance(op, Identity) or (isinstance(op, PoolBN) and not op.bn.affine)


@torch.no_grad()
def _copy_buffers(src: nn.Module, dsts: list[nn.Module]) -> None:
    """Keep the running statistics of the ops that a shared op stands for equal to its own."""
    sb = list(src.buffers())
    if sb:
        torch._foreach_copy_([b for d in dsts for b in d.buffers()], sb * len(dsts))


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
