"""The 7 candidate operations of the DARTS cell (`OP_TABLE`) and the op modules both networks share.

Every op maps [B, c, H, W] → [B, c, H/stride, W/stride]. Ops with `pre_relu` start with a ReLU
and expose `body`, the op without it, so that a mixed edge of the supernet computes relu(x) once
for all its conv ops. Parameter names are the same in the supernet and the discrete network, so
discrete weights can be copied from a supernet (`network.discrete_state_from_supernet`).
The CPU autograd kernels inside the depthwise convs and batch norms are in `kernels.py`.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F

from .kernels import BatchNorm2d, DepthwiseConv2d, factorized_convs, phase_gather_ok

# name → (c channels, stride, affine BN) → op; the keys are `space.OPS` (tests/test_kernels.py).
OP_TABLE: dict[str, Callable[[int, int, bool], nn.Module]] = {
    "max_pool_3x3": lambda c, stride, affine: PoolBN("max", c, stride),
    "avg_pool_3x3": lambda c, stride, affine: PoolBN("avg", c, stride),
    "skip_connect": lambda c, stride, affine: Identity() if stride == 1 else FactorizedReduce(c, c, affine),
    "sep_conv_3x3": lambda c, stride, affine: sep_conv(c, c, 3, stride, 1, affine),
    "sep_conv_5x5": lambda c, stride, affine: sep_conv(c, c, 5, stride, 2, affine),
    "dil_conv_3x3": lambda c, stride, affine: dil_conv(c, c, 3, stride, 2, 2, affine),
    "dil_conv_5x5": lambda c, stride, affine: dil_conv(c, c, 5, stride, 4, 2, affine),
}


def make_op(name: str, c: int, stride: int, affine: bool) -> nn.Module:
    """Candidate op `name` on `c` channels (stride 2 on reduction edges from the cell inputs)."""
    if name not in OP_TABLE:
        raise ValueError(f"unknown op {name!r}")
    return OP_TABLE[name](c, stride, affine)


class ConvOp(nn.Module):
    """ReLU followed by `body` (a Sequential of convs and BNs)."""

    pre_relu = True

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(F.relu(x))


def relu_conv_bn(c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool) -> ConvOp:
    """ReLU → conv → BN (DARTS ReLUConvBN; the cells' input preprocessing)."""
    return ConvOp(
        nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False),
        BatchNorm2d(c_out, affine=affine),
    )


def dil_conv(c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int, affine: bool) -> ConvOp:
    """ReLU → depthwise (dilated) conv → pointwise conv → BN (DARTS DilConv)."""
    return ConvOp(
        DepthwiseConv2d(c_in, kernel, stride, padding, dilation),
        nn.Conv2d(c_in, c_out, 1, bias=False),
        BatchNorm2d(c_out, affine=affine),
    )


def sep_conv(c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool) -> ConvOp:
    """Two stacked depthwise-separable convs, the first with the stride (DARTS SepConv)."""
    return ConvOp(
        DepthwiseConv2d(c_in, kernel, stride, padding),
        nn.Conv2d(c_in, c_in, 1, bias=False),
        BatchNorm2d(c_in, affine=affine),
        nn.ReLU(inplace=False),
        DepthwiseConv2d(c_in, kernel, 1, padding),
        nn.Conv2d(c_in, c_out, 1, bias=False),
        BatchNorm2d(c_out, affine=affine),
    )


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset 1×1 stride-2 convs (skip_connect on a stride-2 edge)."""

    pre_relu = True

    def __init__(self, c_in: int, c_out: int, affine: bool) -> None:
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of channels, got {c_out}")
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = BatchNorm2d(c_out, affine=affine)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, C, H, W] already through ReLU. Odd sizes: pad so both branches agree.
        if x.shape[-1] % 2 or x.shape[-2] % 2:
            x = F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2))
        if phase_gather_ok(x):
            return self.bn(factorized_convs([self], x))
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(F.relu(x))


class PoolBN(nn.Module):
    """3×3 max or average pool followed by a non-affine BN (as in the original EdgeNES code)."""

    pre_relu = False

    def __init__(self, kind: str, c: int, stride: int) -> None:
        super().__init__()
        if kind == "max":
            self.pool = nn.MaxPool2d(3, stride=stride, padding=1)
        else:
            self.pool = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
        self.bn = BatchNorm2d(c, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.pool(x))


class Identity(nn.Module):
    """skip_connect on a stride-1 edge."""

    pre_relu = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def drop_path(x: torch.Tensor, p: float) -> torch.Tensor:
    """Drop whole samples of a branch with probability p (scaling the kept ones by 1/(1-p))."""
    if p <= 0.0:
        return x
    keep = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(1.0 - p)
    return x * keep / (1.0 - p)
