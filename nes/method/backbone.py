"""The cell stack shared by the supernet and the discrete network.

stem (3×3 conv → 3·C channels, BN) → `layers` cells (reductions at layers//3 and 2·layers//3,
channels doubled there) → global average pool → linear head. Each cell gets the outputs of the
two previous cells, preprocessed to C channels (FactorizedReduce when the previous cell halved
the resolution), and outputs the concat of its intermediate nodes (nodes·C channels).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F

from .kernels import BatchNorm2d, stem_conv_bn
from .ops import ConvOp, FactorizedReduce, relu_conv_bn
from .space import reduction_positions


class CellBase(nn.Module):
    """Preprocessing of the two cell inputs; subclasses own the edges and `forward`."""

    def __init__(self, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool, affine: bool):
        super().__init__()
        self.reduction = reduction
        self.pre0 = FactorizedReduce(c_pp, c, affine) if reduction_prev else relu_conv_bn(c_pp, c, 1, 1, 0, affine)
        self.pre1 = relu_conv_bn(c_p, c, 1, 1, 0, affine)

    def preprocess(self, s0: torch.Tensor, s1: torch.Tensor,
                   need: tuple[bool, bool] = (True, True)) -> list[torch.Tensor | None]:
        """[pre0(s0), pre1(s1)], None for an input whose `need` is False (no node reads it); the
        first cell gets the stem's output twice, so one ReLU serves both."""
        if not all(need):
            return [self.pre0(s0) if need[0] else None, self.pre1(s1) if need[1] else None]
        if s0 is s1 and isinstance(self.pre0, ConvOp) and isinstance(self.pre1, ConvOp):
            r = F.relu(s1)
            return [self.pre0.body(r), self.pre1.body(r)]
        return [self.pre0(s0), self.pre1(s1)]

    @property
    def cell_type(self) -> str:
        return "reduce" if self.reduction else "normal"


class Stem(nn.Sequential):
    """3×3 conv → BN on the image (`stem.0`, `stem.1`); in CPU training both run as one fused
    op (`kernels.stem_conv_bn`)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = stem_conv_bn(self[0], self[1], x)
        return super().forward(x) if y is None else y


CellFactory = Callable[[int, int, int, bool, bool], CellBase]
"""(c_pp, c_p, c, reduction, reduction_prev) → cell."""


class AuxiliaryHead(nn.Module):
    """Auxiliary classifier on the output of the second reduction cell (any resolution)."""

    def __init__(self, c: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Conv2d(c, 128, 1, bias=False),
            BatchNorm2d(128),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(128 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class CellStack(nn.Module):
    """Stem, cells from `make_cell`, pooling and head. `forward` is left to the subclasses,
    which differ only in what each cell takes (mixing weights or drop-path probability)."""

    def __init__(
        self,
        make_cell: CellFactory,
        c: int,
        num_classes: int,
        layers: int,
        nodes: int,
        in_channels: int,
        stem_multiplier: int = 3,
        auxiliary: bool = False,
    ) -> None:
        super().__init__()
        self.layers = layers
        self.nodes = nodes
        c_curr = stem_multiplier * c
        self.stem = Stem(in_channels, c_curr)
        red = reduction_positions(layers)
        c_pp, c_p, c_curr = c_curr, c_curr, c
        self.cells = nn.ModuleList()
        reduction_prev = False
        self.aux_pos = max(red) if auxiliary else -1
        self.aux_head = None
        for i in range(layers):
            reduction = i in red
            if reduction:
                c_curr *= 2
            self.cells.append(make_cell(c_pp, c_p, c_curr, reduction, reduction_prev))
            reduction_prev = reduction
            c_pp, c_p = c_p, nodes * c_curr
            if i == self.aux_pos:
                self.aux_head = AuxiliaryHead(c_p, num_classes)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(x).flatten(1))
