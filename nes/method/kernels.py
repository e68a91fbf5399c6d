"""Hand-written CPU autograd kernels behind the ops' depthwise convs, batch norms and FactorizedReduce.

Each gives the outputs and gradients of the plain PyTorch path (tests/test_kernels.py) and is
only there because it is faster, or exact where oneDNN is not, for channels-last training on CPU:

- `DepthwiseConv2d` (`DepthwiseConvFn`): the input gradient as a forward conv with the flipped kernel.
- `BatchNorm2d` (`ChannelsLastBNFn`, `ChannelsLastAffineBNFn`): batch statistics and their
  backward as column reductions over [N·H·W, C], with γ and β folded into the same passes.
- `factorized_convs` / `factorized_reduce_many` (`PhaseGatherFn`): FactorizedReduce's two 1×1
  stride-2 convs, for several modules sharing an input, as one matmul (and one BN).
- `stem_conv_bn` (`StemConvBNFn`): the stem's conv on a few input channels and its affine BN as
  one matmul over image patches, the BN statistics taken from the patches' covariance.

`FAST_CPU_KERNELS = False` sends the depthwise convs and batch norms through stock PyTorch
(the benchmarks compare both); the FactorizedReduce gather stays, as it is also a correctness fix.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
import torch.nn.functional as F

FAST_CPU_KERNELS = True


class DepthwiseConvFn(torch.autograd.Function):
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
    """nn.Conv2d with groups = channels; on CPU uses `DepthwiseConvFn` for a faster backward."""

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
        return DepthwiseConvFn.apply(x, self.weight, s, p, d)


def _batch_stats(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, ...]:
    """(x as [M, C], mean [C], biased var [C], 1/√(var + eps)) of channels-last x [N, C, H, W]."""
    c = x.shape[1]
    x2 = x.permute(0, 2, 3, 1).reshape(-1, c)  # a view for channels-last memory
    m = x2.shape[0]
    mean = x2.sum(0) / m
    var = ((x2 * x2).sum(0) / m - mean * mean).clamp_min(0)
    return x2, mean, var, torch.rsqrt(var + eps)


class ChannelsLastBNFn(torch.autograd.Function):
    """Batch-statistics BN (no affine) of a channels-last tensor seen as a [M = N·H·W, C] matrix.

    Channel sums and sums of squares are column reductions of X and X∘X (2–9× faster than the
    matmuls ones @ X and diag(Xᵀ X) at the search's and members' sizes, which compute the whole
    Gram matrix), the normalization is one fused multiply-add, and the backward reuses the output;
    on CPU this is faster than PyTorch's channels-last batch-norm kernels (forward + backward).
    Returns (y [N, C, H, W] channels-last, mean [C], biased var [C])."""

    @staticmethod
    def forward(ctx, x, eps: float):
        n, c, h, w = x.shape
        x2, mean, var, rstd = _batch_stats(x, eps)
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
        mg = g2.sum(0) / m
        mgy = (g2 * y2).sum(0) / m
        # dx = rstd·(g − mean(g) − ŷ·mean(g·ŷ)), in two passes over [M, C]
        gx = torch.addcmul(-mg * rstd, y2, -mgy * rstd).addcmul_(g2, rstd)
        return gx.view(n, h, w, c).permute(0, 3, 1, 2), None


class ChannelsLastAffineBNFn(torch.autograd.Function):
    """`ChannelsLastBNFn` followed by γ·ŷ + β, as one op: the scale and shift fold into the one
    normalizing pass, and the backward gets Σg (β's gradient) and Σg·ŷ (γ's) from the sums it
    needs anyway, with ŷ = (x − mean)·rstd written out of x, so that no pass over [M, C] is spent
    on the affine part (9 passes forward + backward become 5). Saves x instead of ŷ (the same
    memory). Returns (y channels-last, mean [C], biased var [C])."""

    @staticmethod
    def forward(ctx, x, gamma, beta, eps: float):
        n, c, h, w = x.shape
        x2, mean, var, rstd = _batch_stats(x, eps)
        scale = gamma * rstd
        y2 = torch.addcmul(beta - mean * scale, x2, scale)
        ctx.save_for_backward(x2, mean, rstd, gamma)
        ctx.shape = (n, h, w, c)
        ctx.mark_non_differentiable(mean, var)
        return y2.view(n, h, w, c).permute(0, 3, 1, 2), mean, var

    @staticmethod
    def backward(ctx, g, _gm, _gv):
        x2, mean, rstd, gamma = ctx.saved_tensors
        n, h, w, c = ctx.shape
        g2 = g.permute(0, 2, 3, 1).reshape(-1, c)
        m = g2.shape[0]
        sg = g2.sum(0)
        sgy = rstd * ((g2 * x2).sum(0) - mean * sg)  # Σ g·ŷ
        # dx = γ·rstd·(g − Σg/M − ŷ·Σgŷ/M) = a·g + b·x + c per channel, in two passes
        a = gamma * rstd
        b = -a * rstd * sgy / m
        gx = torch.addcmul(-a * sg / m - b * mean, x2, b).addcmul_(g2, a)
        return gx.view(n, h, w, c).permute(0, 3, 1, 2), sgy, sg, None


class BatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d that uses `ChannelsLastBNFn` (`ChannelsLastAffineBNFn` with γ and β) for
    channels-last training on CPU."""

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
        if self.affine:
            y, mean, var = ChannelsLastAffineBNFn.apply(x, self.weight, self.bias, self.eps)
        else:
            y, mean, var = ChannelsLastBNFn.apply(x, self.eps)
        self.track(mean, var, x.numel() // x.shape[1])
        return y


class PhaseGatherFn(torch.autograd.Function):
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


def phase_gather_ok(x: torch.Tensor) -> bool:
    """Whether FactorizedReduce's convs go through the gather + matmul path: training on the CPU in
    channels-last with even H and W. oneDNN's channels-last weight gradient of a 1×1 stride-2 conv
    is wrong for fewer than 8 input channels (AVX-512: up to 100 % off, and it can hang for
    minutes at 28×28); the matmul path is exact and as fast."""
    return (x.device.type == "cpu" and x.dim() == 4 and torch.is_grad_enabled()
            and x.shape[-1] % 2 == 0 and x.shape[-2] % 2 == 0
            and x.is_contiguous(memory_format=torch.channels_last) and not torch.compiler.is_compiling())


def factorized_convs(mods: Sequence[nn.Module], xr: torch.Tensor) -> torch.Tensor:
    """The 1×1 stride-2 convs (`conv_1`, `conv_2`) of FactorizedReduce modules sharing input `xr`
    [B, C, H, W] (even H and W) as one block-diagonal weight [T·C_out, 2C] applied to the gathered
    even/odd pixels → channels-last [B, T·C_out, H/2, W/2], the modules' outputs side by side."""
    b, c, h, w = xr.shape
    weight = torch.cat([torch.block_diag(m.conv_1.weight.view(-1, c), m.conv_2.weight.view(-1, c)) for m in mods])
    y = PhaseGatherFn.apply(xr) @ weight.t()  # [B·H/2·W/2, T·C_out]
    return y.view(b, h // 2, w // 2, -1).permute(0, 3, 1, 2)


def factorized_reduce_many(mods: Sequence[nn.Module], xr: torch.Tensor) -> list[torch.Tensor] | None:
    """`[m.body(xr) for m in mods]` for FactorizedReduce modules sharing input `xr` [B, C, H, W],
    as one matmul and one BN: BN statistics are per channel, so normalizing the T·C_out columns
    at once is exact. Returns None where this path does not apply (then use the modules)."""
    b, c, h, w = xr.shape
    bns = [m.bn for m in mods]
    if h % 2 or w % 2 or (h // 2) * (w // 2) < 2 or any(bn.affine or not bn.fast_path(xr) for bn in bns):
        return None
    y = factorized_convs(mods, xr)  # channels-last [B, T·C_out, H/2, W/2]
    co = y.shape[1] // len(mods)
    y, mean, var = ChannelsLastBNFn.apply(y, bns[0].eps)
    m = y.numel() // y.shape[1]
    outs = []
    for t, bn in enumerate(bns):
        sl = slice(t * co, (t + 1) * co)
        bn.track(mean[sl], var[sl], m)
        outs.append(y[:, sl])
    return outs


def _many_bn(bns: Sequence[nn.Module], y: torch.Tensor) -> torch.Tensor:
    """The T non-affine BNs of T modules over their outputs side by side in y [B, T·C, H, W]:
    statistics are per channel, so one normalization is exact; each module tracks its slice."""
    z, mean, var = ChannelsLastBNFn.apply(y, bns[0].eps)
    m = y.numel() // y.shape[1]
    for bn, mu, v in zip(bns, mean.chunk(len(bns)), var.chunk(len(bns))):
        bn.track(mu, v, m)
    return z


def conv_ops_many(mods: Sequence[nn.Module], xr: torch.Tensor) -> list[torch.Tensor] | None:
    """`[m.body(xr) for m in mods]` for T same-kind sep_conv or dil_conv ops (`ops.sep_conv`,
    `ops.dil_conv`: depthwise → pointwise → BN, twice for sep) sharing input `xr` [B, C, H, W]
    (the edges leaving one state), as one op per stage instead of T: the first depthwise convs as
    one conv with channel multiplier T (output channel c·T + t is module t's channel c), the
    first pointwise convs as one 1×1 conv whose weight [T·C, C·T] reads module t's channels
    c·T + t into block t (output channel-blocked from here on), the later depthwise and pointwise
    convs as grouped convs over the blocks, each BN stage as one normalization. At the search's
    sizes a step is mostly per-op overhead, so this saves time although the block weight multiplies
    zeros. Returns None where it does not apply (then use the modules)."""
    t, c = len(mods), xr.shape[1]
    body = [m.body for m in mods]
    bns = [b[i] for b in body for i in range(2, len(b), 4)]
    if t < 2 or not FAST_CPU_KERNELS or any(bn.affine or not bn.fast_path(xr) for bn in bns):
        return None
    first = body[0][0]
    s, p, d = first.stride[0], first.padding[0], first.dilation[0]
    x = xr
    if s == 2 and d == 2 and p % 2 == 0:  # as in DepthwiseConv2d: only even rows/cols are read
        x, s, p, d = xr[:, :, ::2, ::2], 1, p // 2, 1
    dw = torch.stack([b[0].weight for b in body], 1).reshape(c * t, 1, *first.weight.shape[-2:])
    y = F.conv2d(x, dw, None, s, p, d, c)  # [B, C·T], channel c·T + t from module t
    pw = torch.stack([b[1].weight.view(-1, c) for b in body])  # [T, C_out, C]
    block = (pw.unsqueeze(-1) * torch.eye(t, dtype=pw.dtype, device=pw.device)[:, None, None, :])
    y = F.conv2d(y, block.reshape(-1, c * t, 1, 1))  # [B, T·C_out], module t's channels in block t
    y = _many_bn([b[2] for b in body], y)
    if len(body[0]) > 3:  # sep_conv: ReLU → depthwise → pointwise → BN once more, per block
        second = body[0][4]
        y = DepthwiseConvFn.apply(F.relu(y), torch.cat([b[4].weight for b in body]),
                                  second.stride[0], second.padding[0], second.dilation[0])
        y = F.conv2d(y, torch.cat([b[5].weight for b in body]), None, 1, 0, 1, t)
        y = _many_bn([b[6] for b in body], y)
    return list(y.chunk(t, 1))


class StemConvBNFn(torch.autograd.Function):
    """conv(x, W) → batch-statistics BN → γ·ŷ + β for an input that needs no gradient (the image),
    with K = C_in·k·k small (9 for one channel). The conv is linear in the centred patches
    q [N·H·W, K], so channel o's batch mean is m·w_o and its variance w_oᵀ S w_o (S = qᵀq / N,
    [K, K]): the normalized, scaled output is one matmul of [q | 1] with the folded weight
    [γ·w/σ | β] [C_out, K + 1], written once instead of conv, statistics and normalization
    passes over [N·H·W, C_out]; the backward is one matmul gᵀ[q | 1] (the image needs no
    gradient). Returns (y [B, C_out, H, W] channels-last, biased var [C_out]); the batch mean,
    m·w, is the caller's to compute for the running statistics."""

    @staticmethod
    def forward(ctx, qe, w2, gamma, beta, shape, eps: float):
        # qe: [N, K + 1] centred patches with a ones column; w2: [C_out, K]
        n = qe.shape[0]
        q = qe[:, :-1]
        s = (q.t() @ q).double() / n  # [K, K]
        var = ((w2.double() @ s) * w2.double()).sum(1).clamp_min(0).to(qe.dtype)
        rstd = torch.rsqrt(var + eps)
        scale = gamma * rstd
        y = qe @ torch.cat([w2 * scale[:, None], beta[:, None]], 1).t()  # [N, C_out]
        ctx.save_for_backward(qe, w2, gamma, rstd, s.to(qe.dtype))
        ctx.mark_non_differentiable(var)
        b, h, w = shape
        return y.view(b, h, w, -1).permute(0, 3, 1, 2), var

    @staticmethod
    def backward(ctx, g, _gv):
        qe, w2, gamma, rstd, s = ctx.saved_tensors
        c = g.shape[1]
        ge = (qe.t() @ g.permute(0, 2, 3, 1).reshape(-1, c)).t()  # [C_out, K + 1]: gᵀq and Σg
        gq, gbeta = ge[:, :-1], ge[:, -1]
        ggamma = rstd * (gq * w2).sum(1)  # Σ g·ŷ per channel
        gw = gamma[:, None] * (gq * rstd[:, None] - (ggamma * rstd * rstd)[:, None] * (w2 @ s))
        return None, gw, ggamma, gbeta, None, None


def stem_patches(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The 'same'-padded k×k patches of x [B, C, H, W] as [B·H·W, C·k·k] (column order of a conv
    weight's view [C_out, C·k·k]), centred, with a ones column appended; and their mean [C·k·k]."""
    b, c, h, w = x.shape
    xp = F.pad(x, (k // 2,) * 4)
    p = torch.stack([xp[:, :, i:i + h, j:j + w] for i in range(k) for j in range(k)], -1)
    p = p.permute(0, 2, 3, 1, 4).reshape(-1, c * k * k)
    mean = p.mean(0)
    return torch.cat([p - mean, torch.ones_like(p[:, :1])], 1), mean


def stem_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor | None:
    """bn(conv(x)) through `StemConvBNFn`, or None where it does not apply: training on CPU with
    the fast kernels, an input without gradient, a stride-1 'same' conv without bias on
    C_in·k·k ≤ 32 columns, and an affine BN tracking its statistics."""
    k = conv.kernel_size[0]
    if not (FAST_CPU_KERNELS and bn.training and bn.affine and bn.track_running_stats
            and x.device.type == "cpu" and x.dtype == torch.float32 and not x.requires_grad
            and torch.is_grad_enabled() and not torch.compiler.is_compiling()
            and conv.bias is None and conv.groups == 1 and conv.stride == (1, 1) and conv.dilation == (1, 1)
            and conv.kernel_size == (k, k) and conv.padding == (k // 2, k // 2) and k % 2 == 1
            and x.shape[1] * k * k <= 32):
        return None
    qe, pmean = stem_patches(x, k)
    w2 = conv.weight.reshape(conv.weight.shape[0], -1)
    b, _, h, w = x.shape
    y, var = StemConvBNFn.apply(qe, w2, bn.weight, bn.bias, (b, h, w), bn.eps)
    bn.track(w2.detach() @ pmean, var.detach(), qe.shape[0])
    return y
