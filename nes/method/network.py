"""The discrete network built from a `Genotype` (what members are retrained as).

Node i = Σ over its kept inputs j of op_{j→i}(h_j). Module names match the supernet's
(`cells.{k}.edges.{e}.ops.{op}`), so `discrete_state_from_supernet` can copy supernet weights.
"""
from __future__ import annotations

import torch
from torch import nn

from .backbone import CellBase, CellStack
from .ops import Identity, drop_path, make_op
from .space import Genotype, cell_types_for, edge_index


class DiscreteEdge(nn.Module):
    def __init__(self, op: str, c: int, stride: int, affine: bool) -> None:
        super().__init__()
        self.ops = nn.ModuleDict({op: make_op(op, c, stride, affine)})

    @property
    def op(self) -> nn.Module:
        return next(iter(self.ops.values()))


class DiscreteCell(CellBase):
    def __init__(self, c_pp, c_p, c, reduction, reduction_prev, genotype: Genotype, affine: bool):
        super().__init__(c_pp, c_p, c, reduction, reduction_prev, affine)
        self.spec = genotype.cell(self.cell_type)  # ((op, input), ...) per node
        # Genotypes with one input per node often leave a cell input unread; its preprocessing
        # cannot change the output, so it is skipped (DARTS's reference code computes it:
        # `Network.compute_unused` restores that, for the benchmarks' plain path).
        self.reads = tuple(any(j == k for node in self.spec for _, j in node) for k in (0, 1))
        self.compute_unused = False
        self.edges = nn.ModuleDict()
        for i, node in enumerate(self.spec):
            for op, j in node:
                stride = 2 if reduction and j < 2 else 1
                self.edges[str(edge_index(i, j))] = DiscreteEdge(op, c, stride, affine)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states = self.preprocess(s0, s1, (True, True) if self.compute_unused else self.reads)
        for i, node in enumerate(self.spec):
            s = None
            for _, j in node:
                op = self.edges[str(edge_index(i, j))].op
                y = op(states[j])
                if self.training and drop_prob > 0 and not isinstance(op, Identity):
                    y = drop_path(y, drop_prob)
                s = y if s is None else s + y
            states.append(s)
        return torch.cat(states[2:], dim=1)


class Network(CellStack):
    """A stack of discrete cells. `forward(x)` → logits, or (logits, aux_logits) in training
    when built with `auxiliary=True`. `drop_prob` is set by the trainer (scheduled)."""

    def __init__(
        self,
        genotype: Genotype,
        c: int,
        num_classes: int,
        layers: int,
        in_channels: int = 3,
        affine: bool = True,
        auxiliary: bool = False,
        stem_multiplier: int = 3,
    ) -> None:
        genotype.validate(cell_types=cell_types_for(layers))
        nodes = genotype.nodes
        super().__init__(
            lambda c_pp, c_p, cc, red, red_prev: DiscreteCell(c_pp, c_p, cc, red, red_prev, genotype, affine),
            c, num_classes, layers, nodes, in_channels, stem_multiplier, auxiliary,
        )
        self.genotype = genotype
        self.drop_prob = 0.0

    @property
    def compute_unused(self) -> bool:
        """Whether cells also preprocess an input that none of their nodes reads (as DARTS's
        reference code does; the output is the same either way)."""
        return any(cell.compute_unused for cell in self.cells)

    @compute_unused.setter
    def compute_unused(self, value: bool) -> None:
        for cell in self.cells:
            cell.compute_unused = value

    def forward(self, x: torch.Tensor):
        s0 = s1 = self.stem(x)
        aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_prob)
            if i == self.aux_pos and self.training:
                aux = self.aux_head(s1)
        logits = self.head(s1)
        return (logits, aux) if aux is not None else logits


def discrete_state_from_supernet(supernet_state: dict[str, torch.Tensor], net: Network) -> dict[str, torch.Tensor]:
    """The entries of a supernet state dict that `net` has (same names, same shapes)."""
    own = net.state_dict()
    out = {}
    for k, v in own.items():
        if k not in supernet_state:
            raise KeyError(f"supernet has no parameter {k!r}")
        if supernet_state[k].shape != v.shape:
            raise ValueError(f"{k}: shape {tuple(supernet_state[k].shape)} != {tuple(v.shape)}")
        out[k] = supernet_state[k]
    return out
