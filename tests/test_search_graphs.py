"""CUDA-graph readiness of the search loops, checked without a GPU: which arch modules may be
replayed, and that they give the same θ and regularizer when λ and the progress come as 0-d
tensors (what a replayed graph reads from its buffers) as when they come as floats."""
import pytest
import torch

from nes.config import SearchConfig, from_preset
from nes.method.hypernet import FixedLambdaArch, HypernetArch, PiecewiseLinearHypernet
from nes.method.regularizers import REGULARIZERS, EdgesRegularizer, LamRange
from nes.method.bilevel import ArchModule
from nes.method.cuda_graphs import use_cuda_graphs
from nes.method.darts import DartsArch
from nes.method.space import ArchLayout, Genotype

STAR = Genotype(reduce=((("sep_conv_3x3", 1),), (("dil_conv_5x5", 0),), (("skip_connect", 2),), (("max_pool_3x3", 3),)))
LAYOUT = ArchLayout(4, ("reduce",))


class Custom(ArchModule):  # a new arch module is not replayed until it says it may be
    layout = LAYOUT


def test_which_arch_modules_are_graphed(monkeypatch):
    cfg = from_preset(SearchConfig, "smoke")
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    darts = DartsArch(LAYOUT)
    reg = EdgesRegularizer(LAYOUT, STAR)
    hyper = HypernetArch(LAYOUT, PiecewiseLinearHypernet(LAYOUT.init_theta(), LamRange(0.0, 4.0, -0.2, 4.2)), reg)
    for arch in (darts, hyper, FixedLambdaArch(LAYOUT, LAYOUT.init_theta(), reg, 1.0)):
        assert use_cuda_graphs(cfg, arch, cuda)
        assert not use_cuda_graphs(cfg, arch, cpu)
    assert not use_cuda_graphs(cfg, Custom(), cuda)
    assert not use_cuda_graphs(from_preset(SearchConfig, "smoke", {"second_order": True}), darts, cuda)
    monkeypatch.setenv("NES_CUDA_GRAPHS", "0")
    assert not use_cuda_graphs(cfg, darts, cuda)


@pytest.mark.parametrize("name", ["js", "edges"])
def test_tensor_lambda_and_progress_give_the_float_results(name):
    torch.manual_seed(0)
    reg = REGULARIZERS[name](LAYOUT, STAR)
    theta_star = LAYOUT.genotype_logits(STAR, scale=3.0)
    arch = HypernetArch(LAYOUT, PiecewiseLinearHypernet(theta_star, LamRange(0.0, 4.0, -0.2, 4.2), init_noise=0.5), reg)
    for lam, frac in [(0.3, 0.0), (2.5, 0.4), (4.1, 0.97)]:
        th_f, th_t = arch.theta(lam), arch.theta(torch.tensor(lam))
        assert torch.allclose(th_f, th_t)
        torch.manual_seed(1)  # the same Gumbel noise for both calls
        r_f = arch.regularizer(lam, th_f, frac)
        torch.manual_seed(1)
        r_t = arch.regularizer(torch.tensor(lam), th_t, torch.tensor(frac))
        assert torch.is_tensor(r_t), \
            f"{name} λ={lam}: the regularizer of a tensor λ is a {type(r_t).__name__}, not a tensor"
        assert r_t.dim() == 0, f"{name} λ={lam}: the regularizer has shape {tuple(r_t.shape)}, not a scalar"
        assert torch.allclose(r_f, r_t, atol=1e-6), (lam, frac)
        g_f = torch.autograd.grad(r_f, arch.hyper.anchors)[0]
        g_t = torch.autograd.grad(r_t, arch.hyper.anchors)[0]
        assert torch.allclose(g_f, g_t, atol=1e-6)
