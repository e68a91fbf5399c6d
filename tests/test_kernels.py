"""The op table and the CPU kernels: each kernel gives the plain PyTorch outputs and gradients."""
import pytest
import torch
import torch.nn.functional as F

from nes.method import kernels
from nes.method.backbone import Stem
from nes.method.kernels import (BatchNorm2d, ChannelsLastAffineBNFn, ChannelsLastBNFn, DepthwiseConv2d,
                                DepthwiseConvFn, PhaseGatherFn, StemConvBNFn, factorized_reduce_many, stem_patches)
from nes.method.ops import OP_TABLE, FactorizedReduce, make_op
from nes.method.space import OPS

CL = torch.channels_last


def test_op_table_holds_the_search_space_ops():
    assert list(OP_TABLE) == list(OPS), f"OP_TABLE keys {list(OP_TABLE)} are not space.OPS {list(OPS)}"
    with pytest.raises(ValueError, match="unknown op"):
        make_op("none", 4, 1, False)


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("stride", [1, 2])
def test_every_op_keeps_channels_divides_resolution_and_shares_its_relu(name, stride):
    """[B, c, H, W] → [B, c, H/stride, W/stride]; an op with `pre_relu` is ReLU then `body`."""
    torch.manual_seed(0)
    op = make_op(name, 4, stride, affine=True)
    x = torch.randn(2, 4, 8, 8)
    y = op(x)
    assert y.shape == (2, 4, 8 // stride, 8 // stride), f"{name} stride {stride}: output shape {tuple(y.shape)}"
    if op.pre_relu:
        op.eval()  # the BN running statistics must not move between the two calls
        assert torch.equal(op(x), op.body(F.relu(x))), f"{name} stride {stride}: forward ≠ body(relu(x))"


@pytest.mark.parametrize("k, s, d", [(3, 1, 1), (5, 1, 1), (3, 1, 2), (5, 1, 2), (3, 2, 1), (5, 2, 2), (3, 2, 2)])
def test_depthwise_conv_matches_reference(k, s, d):
    torch.manual_seed(0)
    p = d * (k - 1) // 2
    conv = DepthwiseConv2d(6, k, s, p, d)
    x = torch.randn(3, 6, 10, 10).contiguous(memory_format=CL).requires_grad_()
    y = conv(x)
    ref = F.conv2d(x, conv.weight, None, s, p, d, 6)
    case = f"kernel {k}, stride {s}, dilation {d}"
    assert y.shape == ref.shape, f"{case}: output shape {tuple(y.shape)} vs reference {tuple(ref.shape)}"
    assert torch.allclose(y, ref, atol=1e-5), f"{case}: output differs from F.conv2d"
    g = torch.randn_like(y)
    gx, gw = torch.autograd.grad(y, [x, conv.weight], g)
    rx, rw = torch.autograd.grad(ref, [x, conv.weight], g)
    assert torch.allclose(gx, rx, atol=1e-4), f"{case}: input gradient differs from F.conv2d's"
    assert torch.allclose(gw, rw, atol=1e-4), f"{case}: weight gradient differs from F.conv2d's"


@pytest.mark.parametrize("affine", [False, True])
def test_channels_last_batchnorm_matches_reference(affine):
    torch.manual_seed(0)
    bn, ref = BatchNorm2d(5, affine=affine), torch.nn.BatchNorm2d(5, affine=affine)
    if affine:
        with torch.no_grad():
            bn.weight.uniform_(0.5, 2)
            bn.bias.uniform_(-1, 1)
        ref.load_state_dict(bn.state_dict())
    x = (3 * torch.randn(4, 5, 6, 6) + 1).contiguous(memory_format=CL).requires_grad_()
    assert bn.fast_path(x), "a channels-last CPU batch in training should take the kernel"
    y, yr = bn(x), ref(x)
    assert torch.allclose(y, yr, atol=1e-4), "output differs from nn.BatchNorm2d"
    g = torch.randn_like(y)
    names = ["input"] + [n for n, _ in bn.named_parameters()]
    grads = torch.autograd.grad(y, [x, *bn.parameters()], g)
    grads_ref = torch.autograd.grad(yr, [x, *ref.parameters()], g)
    for name, a, b in zip(names, grads, grads_ref):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), f"affine={affine}: {name} gradient differs from nn.BatchNorm2d's"
    assert torch.allclose(bn.running_mean, ref.running_mean, atol=1e-5), "running_mean differs"
    assert torch.allclose(bn.running_var, ref.running_var, atol=1e-4), "running_var differs"


STEM_QE = stem_patches(torch.randn(2, 1, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1)), 3)[0]


@pytest.mark.parametrize("fn, args", [
    (lambda x, w: DepthwiseConvFn.apply(x, w, 1, 2, 2), [(2, 3, 6, 6), (3, 1, 3, 3)]),
    (lambda x, w: DepthwiseConvFn.apply(x, w, 2, 1, 1), [(2, 3, 6, 6), (3, 1, 3, 3)]),
    (lambda x: ChannelsLastBNFn.apply(x, 1e-5)[0], [(2, 3, 4, 4)]),
    (lambda x, gamma, beta: ChannelsLastAffineBNFn.apply(x, gamma.view(3), beta.view(3), 1e-5)[0],
     [(2, 3, 4, 4), (3, 1, 1, 1), (3, 1, 1, 1)]),
    (lambda x: PhaseGatherFn.apply(x), [(2, 3, 4, 6)]),
    (lambda w, gamma, beta: StemConvBNFn.apply(STEM_QE, w.view(4, 9), gamma.view(4), beta.view(4), (2, 5, 5), 1e-5)[0],
     [(4, 1, 3, 3), (4, 1, 1, 1), (4, 1, 1, 1)]),
], ids=["depthwise-flip", "depthwise-strided", "batchnorm", "affine-batchnorm", "phase-gather",
        "stem-conv-bn"])
def test_autograd_functions_pass_gradcheck(fn, args):
    """Each backward is the derivative of its forward (finite differences, float64, channels-last)."""
    torch.manual_seed(0)
    inputs = [torch.randn(*s, dtype=torch.float64).contiguous(memory_format=CL).requires_grad_() for s in args]
    assert torch.autograd.gradcheck(fn, inputs, atol=1e-6), "analytic and numerical gradients differ"


@pytest.mark.parametrize("c_in", [2, 4, 12])
def test_factorized_reduce_channels_last_gradients_match_nchw(c_in):
    """FactorizedReduce in channels-last gives the NCHW outputs and gradients. (oneDNN's stock
    channels-last weight gradient of a 1×1 stride-2 conv is wrong for fewer than 8 input
    channels on AVX-512 CPUs; the module routes around it.)"""
    torch.manual_seed(0)
    fr = FactorizedReduce(c_in, 6, affine=True)
    x = torch.randn(3, c_in, 8, 8)
    g = torch.randn(3, 6, 4, 4)
    results = []
    for fmt in (torch.contiguous_format, CL):
        m = fr.to(memory_format=fmt)
        xi = x.contiguous(memory_format=fmt).requires_grad_()
        y = m.body(xi)
        results.append((y.detach().contiguous(), *[t.contiguous() for t in
                        torch.autograd.grad(y, [xi, m.conv_1.weight, m.conv_2.weight, m.bn.weight], g)]))
    for what, a, b in zip(["output", "input grad", "conv_1 grad", "conv_2 grad", "bn weight grad"], *results):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), f"c_in {c_in}: channels-last {what} differs from NCHW"


def test_factorized_reduce_many_equals_each_module():
    """Several FactorizedReduce sharing an input, as one matmul and one BN: each module's output,
    every gradient and every running statistic as if each ran alone."""
    torch.manual_seed(0)
    mods = [FactorizedReduce(4, 6, affine=False).to(memory_format=CL) for _ in range(3)]
    refs = [FactorizedReduce(4, 6, affine=False).to(memory_format=CL) for _ in range(3)]
    for m, r in zip(mods, refs):
        r.load_state_dict(m.state_dict())
    x = torch.randn(2, 4, 8, 8).contiguous(memory_format=CL).requires_grad_()
    ys = factorized_reduce_many(mods, x)
    assert ys is not None, "the fused path refused a channels-last CPU batch in training"
    ys_ref = [r.body(x) for r in refs]
    gs = [torch.randn_like(y) for y in ys]
    grads = torch.autograd.grad(ys, [x] + [p for m in mods for p in m.parameters()], gs)
    grads_ref = torch.autograd.grad(ys_ref, [x] + [p for r in refs for p in r.parameters()], gs)
    for t, (y, yr) in enumerate(zip(ys, ys_ref)):
        assert torch.allclose(y, yr, atol=1e-5), f"module {t}: output differs"
    names = ["x"] + [f"module {t} {n}" for t, m in enumerate(mods) for n, _ in m.named_parameters()]
    for name, a, b in zip(names, grads, grads_ref):
        assert torch.allclose(a, b, atol=1e-4), f"{name}: gradient differs"
    for t, (m, r) in enumerate(zip(mods, refs)):
        for (name, a), b in zip(m.named_buffers(), r.buffers()):
            assert torch.allclose(a.float(), b.float(), atol=1e-5), f"module {t} {name} differs"


def test_kernels_switched_off_give_the_same_network(monkeypatch):
    """FAST_CPU_KERNELS = False (stock PyTorch) and True give the same outputs and gradients."""
    results = []
    for fast in (True, False):
        monkeypatch.setattr(kernels, "FAST_CPU_KERNELS", fast)
        torch.manual_seed(0)
        op = make_op("sep_conv_3x3", 4, 1, affine=True).to(memory_format=CL)
        x = torch.randn(2, 4, 8, 8).contiguous(memory_format=CL).requires_grad_()
        y = op(x)
        g = torch.randn_like(y)
        results.append((y.detach(), *torch.autograd.grad(y, [x, *op.parameters()], g)))
    names = ["output", "x grad"] + [n for n, _ in op.named_parameters()]
    for name, a, b in zip(names, *results):
        assert torch.allclose(a, b, atol=1e-4), f"{name} differs with the kernels off"


@pytest.mark.parametrize("c_in", [1, 3])
def test_fused_stem_matches_conv_then_batchnorm(c_in, monkeypatch):
    """The stem's conv + affine BN as one patch matmul (statistics from the patch covariance):
    the output, every parameter gradient and the running statistics of conv → BN."""
    torch.manual_seed(0)
    stem, ref = Stem(c_in, 12).to(memory_format=CL), Stem(c_in, 12).to(memory_format=CL)
    with torch.no_grad():
        stem[1].weight.uniform_(0.5, 2)
        stem[1].bias.uniform_(-1, 1)
    ref.load_state_dict(stem.state_dict())
    x = (2 * torch.randn(4, c_in, 9, 9) + 0.5).contiguous(memory_format=CL)
    y = stem(x)
    monkeypatch.setattr(kernels, "FAST_CPU_KERNELS", False)
    yr = ref(x)
    assert y.is_contiguous(memory_format=CL), "the fused stem's output is not channels-last"
    assert torch.allclose(y, yr, atol=1e-4), f"c_in {c_in}: output differs from conv → BN"
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, list(stem.parameters()), g)
    grads_ref = torch.autograd.grad(yr, list(ref.parameters()), g)
    for (name, _), a, b in zip(stem.named_parameters(), grads, grads_ref):
        assert torch.allclose(a, b, atol=1e-3, rtol=1e-4), f"c_in {c_in}: {name} gradient differs"
    for (name, a), b in zip(stem.named_buffers(), ref.buffers()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), f"c_in {c_in}: {name} differs"


def test_fused_stem_steps_aside_where_it_does_not_apply():
    """An input that needs a gradient (saliency) or evaluation mode takes conv → BN."""
    stem = Stem(1, 6).to(memory_format=CL)
    x = torch.randn(2, 1, 6, 6).contiguous(memory_format=CL).requires_grad_()
    y = stem(x)
    assert y.grad_fn is not None and "StemConvBNFn" not in type(y.grad_fn).__name__, \
        "an input that needs a gradient went through the fused stem (it gives no input gradient)"
    assert torch.autograd.grad(y.sum(), x)[0].abs().sum() > 0, "no gradient reached the input"
    y_eval = stem.eval()(x.detach())
    assert "StemConvBNFn" not in type(y_eval.grad_fn).__name__, "evaluation mode went through the fused stem"
