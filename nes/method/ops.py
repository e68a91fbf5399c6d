"""The 7 candidate operations of the DARTS cell and the building blocks shared by both networks.

Conv ops start with a ReLU; `ConvOp.body` is the op without it so that a mixed edge in the
supernet can compute relu(x) once and feed it to every conv op of the edge (saves 5 ReLUs per
edge). Parameter names are the same in the supernet and the discrete network, so discrete
weights can be copied from a supernet (`network.discrete_state_from_supernet`).
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


# The CPU kernels below can be switched off (benchmarks compare against plain PyTorch).
FAST_CPU_KERNELS = True


class _DepthwiseConvFn(torch.autograd.Function):
    """Depthwise conv whose input gradient is computed as a forward conv with the flipped kernel.

    On CPU, oneDNN's depthwise backward-data is 2–6× slower than its forward (dilated kernels
    worst); the forward path with a flipped kernel gives the same gradient for 'same' padding.
    """

    @staticmethod
    def forward(ctx, x, w, stride: int, padding: int, dilation: int):
        ctx.save_for_backward(x, w)
        ctx.conf = (stride, padding, dilation)
        return F.conv2d(x, w, None, stride, padding, dilation, w.shape[0])

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        s, p, d = ctx.conf
        c, k = w.shape[0], w.shape[-1]
        gx = gw = None
        flip = s == 1 and 2 * p == d * (k - 1)
        if ctx.needs_input_grad[0] and flip:
            gx = F.conv2d(g, w.flip(-1, -2).contiguous(), None, 1, p, d, c)
        mask = [ctx.needs_input_grad[0] and not flip, ctx.needs_input_grad[1], False]
        if any(mask):
            gx2, gw, _ = torch.ops.aten.convolution_backward(
                g, x, w, None, [s, s], [p, p], [d, d], False, [0, 0], c, mask
            )
            gx = gx if flip else gx2
        return gx, gw, None, None, None


class DepthwiseConv2d(nn.Conv2d):
    """nn.Conv2d with groups = channels; on CPU uses `_DepthwiseConvFn` for a faster backward."""

    def __init__(self, c: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> None:
        super().__init__(c, c, kernel, stride, padding, dilation=dilation, groups=c, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or not torch.is_grad_enabled() or not FAST_CPU_KERNELS:
            return super().forward(x)
        s, p, d = self.stride[0], self.padding[0], self.dilation[0]
        if s == 2 and d == 2 and p % 2 == 0:
            # A stride-2, dilation-2 conv only reads even rows/cols: it is a plain stride-1 conv
            # on x[::2, ::2] (exact). oneDNN's backward for the strided dilated case is ~10× slower.
            x, s, p, d = x[:, :, ::2, ::2], 1, p // 2, 1
        return _DepthwiseConvFn.apply(x, self.weight, s, p, d)


class _ChannelsLastBNFn(torch.autograd.Function):
    """Batch-statistics BN (no affine) of a channels-last tensor seen as a [M = N·H·W, C] matrix.

    Channel sums and sums of squares come from two matmuls (ones @ X and diag(Xᵀ X)), the
    normalization is one fused multiply-add, and the backward reuses the output; on CPU this is
    ~2× faster than PyTorch's channels-last batch-norm kernels (forward + backward)."""

    @staticmethod
    def forward(ctx, x, eps: float):
        n, c, h, w = x.shape
        x2 = x.permute(0, 2, 3, 1).reshape(-1, c)  # a view for channels-last memory
        m = x2.shape[0]
        mean = (x2.new_ones(1, m) @ x2).squeeze(0) / m  # [C]
        var = (torch.linalg.matmul(x2.t(), x2).diagonal() / m - mean * mean).clamp_min(0)
        rstd = torch.rsqrt(var + eps)
        y2 = torch.addcmul(-mean * rstd, x2, rstd)  # (x − mean)·rstd in one pass
        ctx.save_for_backward(y2, rstd)
        ctx.shape = (n, h, w, c)
        ctx.mark_non_differentiable(mean, var)
        return y2.view(n, h, w, c).permute(0, 3, 1, 2), mean, var

    @staticmethod
    def backward(ctx, g, _gm, _gv):
        y2, rstd = ctx.saved_tensors
        n, h, w, c = ctx.shape
        g2 = g.permute(0, 2, 3, 1).reshape(-1, c)
        m = g2.shape[0]
        mg = (g2.new_ones(1, m) @ g2).squeeze(0) / m
        mgy = torch.linalg.matmul(g2.t(), y2).diagonal() / m
        # dx = rstd·(g − mean(g) − ŷ·mean(g·ŷ)), in two passes over [M, C]
        gx = torch.addcmul(-mg * rstd, y2, -mgy * rstd).addcmul_(g2, rstd)
        return gx.view(n, h, w, c).permute(0, 3, 1, 2), None


class BatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d that uses `_ChannelsLastBNFn` for channels-last training on CPU."""

    def fast_path(self, x: torch.Tensor) -> bool:
        return (
            FAST_CPU_KERNELS
            and self.training
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and x.dim() == 4
            and x.shape[1] > 1
            and x.is_contiguous(memory_format=torch.channels_last)
            and not x.is_contiguous()
        )

    @torch.no_grad()
    def track(self, mean: torch.Tensor, var: torch.Tensor, m: int) -> None:
        """Update the running statistics with a batch's mean and (biased) variance over m values."""
        if self.track_running_stats and self.running_mean is not None:
            self.num_batches_tracked += 1
            mom = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.lerp_(mean, mom)
            self.running_var.lerp_(var * (m / max(m - 1, 1)), mom)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fast_path(x):
            return super().forward(x)
        y, mean, var = _ChannelsLastBNFn.apply(x, self.eps)
        self.track(mean, var, x.numel() // x.shape[1])
        if self.affine:
            y = y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return y


class ConvOp(nn.Module):
    """ReLU followed by `body` (a Sequential of convs and BNs)."""

    pre_relu = True

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(F.relu(x))


def relu_conv_bn(c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool) -> ConvOp:
    return ConvOp(
        nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False),
        BatchNorm2d(c_out, affine=affine),
    )


def dil_conv(c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int, affine: bool) -> ConvOp:
    """Depthwise (dilated) conv → pointwise conv → BN."""
    return ConvOp(
        DepthwiseConv2d(c_in, kernel, stride, padding, dilation),
        nn.Conv2d(c_in, c_out, 1, bias=False),
        BatchNorm2d(c_out, affine=affine),
    )


def sep_conv(c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool) -> ConvOp:
    """Two stacked depthwise-separable convs (DARTS SepConv)."""
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
        if _phase_gather_ok(x):
            return self.bn(factorized_convs([self], x))
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(F.relu(x))


class _PhaseGatherFn(torch.autograd.Function):
    """x [B, C, H, W] (channels-last, even H and W) → [B·H/2·W/2, 2C]: the even-even and the
    odd-odd pixels side by side — the two inputs of FactorizedReduce's 1×1 stride-2 convs, so
    both convs of several edges become one matmul. The backward scatters straight into one
    zero-filled gradient (autograd's slice backward would fill and add two full-size tensors)."""

    @staticmethod
    def forward(ctx, x):
        b, c, h, w = x.shape
        xm = x.permute(0, 2, 3, 1)  # [B, H, W, C], a view for channels-last memory
        out = x.new_empty(b, h // 2, w // 2, 2 * c)
        out[..., :c] = xm[:, ::2, ::2]
        out[..., c:] = xm[:, 1::2, 1::2]
        ctx.shape = (b, c, h, w)
        return out.view(-1, 2 * c)

    @staticmethod
    def backward(ctx, g):
        b, c, h, w = ctx.shape
        g = g.view(b, h // 2, w // 2, 2 * c)
        gx = g.new_zeros(b, h, w, c)
        gx[:, ::2, ::2] = g[..., :c]
        gx[:, 1::2, 1::2] = g[..., c:]
        return gx.permute(0, 3, 1, 2)


def _phase_gather_ok(x: torch.Tensor) -> bool:
    """Whether FactorizedReduce's convs go through the gather + matmul path: training on the CPU in
    channels-last with even H and W. oneDNN's channels-last weight gradient of a 1×1 stride-2 conv
    is wrong for fewer than 8 input channels (torch 2.14 on AVX-512: up to 100 % off, and it can
    hang for minutes at 28×28); the matmul path is exact and as fast."""
    return (x.device.type == "cpu" and x.dim() == 4 and torch.is_grad_enabled()
            and x.shape[-1] % 2 == 0 and x.shape[-2] % 2 == 0
            and x.is_contiguous(memory_format=torch.channels_last) and not torch.compiler.is_compiling())


def factorized_convs(mods: list["FactorizedReduce"], xr: torch.Tensor) -> torch.Tensor:
    """The 1×1 stride-2 convs of all modules (sharing input `xr`, even H and W) as one
    block-diagonal weight [T·C_out, 2C] applied to the gathered even/odd pixels → channels-last
    [B, T·C_out, H/2, W/2], the modules' outputs side by side."""
    b, c, h, w = xr.shape
    weight = torch.cat([torch.block_diag(m.conv_1.weight.view(-1, c), m.conv_2.weight.view(-1, c)) for m in mods])
    y = _PhaseGatherFn.apply(xr) @ weight.t()  # [B·H/2·W/2, T·C_out]
    return y.view(b, h // 2, w // 2, -1).permute(0, 3, 1, 2)


def factorized_reduce_many(mods: list["FactorizedReduce"], xr: torch.Tensor) -> list[torch.Tensor] | None:
    """`[m.body(xr) for m in mods]` as one matmul and one BN (the modules share their input).

    The 1×1 stride-2 convs of all modules are one block-diagonal weight [T·C_out, 2C] applied to
    the gathered even/odd pixels; BN statistics are per channel, so normalizing the T·C_out
    columns at once is exact. Returns None where this path does not apply (then use the modules)."""
    b, c, h, w = xr.shape
    bns = [m.bn for m in mods]
    if h % 2 or w % 2 or (h // 2) * (w // 2) < 2 or any(bn.affine or not bn.fast_path(xr) for bn in bns):
        return None
    y = factorized_convs(mods, xr)  # channels-last [B, T·C_out, H/2, W/2]
    co = y.shape[1] // len(mods)
    y, mean, var = _ChannelsLastBNFn.apply(y, bns[0].eps)
    m = y.numel() // y.shape[1]
    outs = []
    for t, bn in enumerate(bns):
        sl = slice(t * co, (t + 1) * co)
        bn.track(mean[sl], var[sl], m)
        outs.append(y[:, sl])
    return outs


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
    pre_relu = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def make_op(name: str, c: int, stride: int, affine: bool) -> nn.Module:
    """Build candidate op `name` on `c` channels (stride 2 on reduction edges from the inputs)."""
    if name == "max_pool_3x3":
        return PoolBN("max", c, stride)
    if name == "avg_pool_3x3":
        return PoolBN("avg", c, stride)
    if name == "skip_connect":
        return Identity() if stride == 1 else FactorizedReduce(c, c, affine)
    if name == "sep_conv_3x3":
        return sep_conv(c, c, 3, stride, 1, affine)
    if name == "sep_conv_5x5":
        return sep_conv(c, c, 5, stride, 2, affine)
    if name == "dil_conv_3x3":
        return dil_conv(c, c, 3, stride, 2, 2, affine)
    if name == "dil_conv_5x5":
        return dil_conv(c, c, 5, stride, 4, 2, affine)
    raise ValueError(f"unknown op {name!r}")


def drop_path(x: torch.Tensor, p: float) -> torch.Tensor:
    """Drop whole samples of a branch with probability p (scaling the kept ones by 1/(1-p))."""
    if p <= 0.0:
        return x
    keep = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(1.0 - p)
    return x * keep / (1.0 - p)
