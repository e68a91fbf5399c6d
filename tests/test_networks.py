"""Supernet and discrete network: shapes, gradients, one-hot equivalence, unused cells.

The op table and the CPU kernels are tested in test_kernels.py."""
import pytest
import torch
import torch.nn.functional as F

from nes.method.network import Network, discrete_state_from_supernet
from nes.method.flaws import unused_cells, unused_cells_note
from nes.method.space import ArchLayout, Genotype, cell_types_for
from nes.method.supernet import Supernet

G = Genotype(reduce=((("sep_conv_3x3", 1),), (("dil_conv_5x5", 0),), (("skip_connect", 2),), (("max_pool_3x3", 3),)))
G2 = Genotype(
    normal=((("sep_conv_5x5", 0), ("skip_connect", 1)), (("avg_pool_3x3", 2), ("dil_conv_3x3", 0)),
            (("max_pool_3x3", 1), ("sep_conv_3x3", 3)), (("skip_connect", 4), ("dil_conv_5x5", 2))),
    reduce=((("max_pool_3x3", 0), ("skip_connect", 1)), (("avg_pool_3x3", 2), ("sep_conv_5x5", 0)),
            (("dil_conv_3x3", 1), ("skip_connect", 3)), (("sep_conv_3x3", 4), ("dil_conv_5x5", 2))),
)


@pytest.mark.parametrize("layers, cl", [(1, False), (1, True), (3, True)])
def test_supernet_shapes_and_every_parameter_gets_a_gradient(layers, cl):
    torch.manual_seed(0)
    net = Supernet(4, 10, layers, nodes=3, in_channels=1)
    lay = ArchLayout(3, cell_types_for(layers))
    theta = lay.init_theta().requires_grad_()
    x = torch.randn(4, 1, 8, 8)
    if cl:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    out = net(x, lay.weights(theta))
    assert out.shape == (4, 10)
    F.cross_entropy(out, torch.arange(4)).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert theta.grad is not None, f"layers {layers}, channels_last {cl}: θ got no gradient"
    assert (theta.grad != 0).all(), \
        f"layers {layers}, channels_last {cl}: some θ entries got a zero gradient"


@pytest.mark.parametrize("genotype, layers, k", [(G, 1, 1), (G, 2, 1), (G2, 3, 2)])
def test_supernet_with_one_hot_weights_equals_discrete_network(genotype, layers, k):
    """Same conv weights + one-hot op weights and 0/1 input weights → identical outputs."""
    torch.manual_seed(1)
    nodes = genotype.nodes
    sup = Supernet(4, 10, layers, nodes=nodes, in_channels=3)
    lay = ArchLayout(nodes, cell_types_for(layers), k)
    # run a few training batches so BN running statistics are non-trivial
    with torch.no_grad():
        for _ in range(3):
            sup(torch.randn(8, 3, 8, 8), lay.weights(lay.init_theta()))
    sup.eval()
    net = Network(genotype, 4, 10, layers, in_channels=3, affine=False)
    net.load_state_dict(discrete_state_from_supernet(sup.state_dict(), net))
    net.eval()
    weights = {}
    for ct in lay.cell_types:
        op_w = torch.zeros(lay.num_edges, 7)
        in_w = torch.zeros(lay.num_edges)
        for ct_, i, inp, op in genotype.edges():
            if ct_ == ct:
                from nes.method.space import OP_INDEX, edge_index

                op_w[edge_index(i, inp), OP_INDEX[op]] = 1.0
                in_w[edge_index(i, inp)] = 1.0
        weights[ct] = (op_w, in_w)
    x = torch.randn(5, 3, 8, 8)
    assert torch.allclose(sup(x, weights), net(x), atol=1e-5)
    if k == 1:  # large logits through the softmax relaxation give the same network
        theta = lay.genotype_logits(genotype, scale=40.0)
        assert torch.allclose(sup(x, lay.weights(theta)), net(x), atol=1e-4)


def test_discrete_network_gradients_aux_and_drop_path():
    torch.manual_seed(0)
    net = Network(G2, 4, 10, 3, in_channels=3, auxiliary=True)
    net.drop_prob = 0.3
    logits, aux = net(torch.randn(4, 3, 16, 16))
    assert logits.shape == aux.shape == (4, 10)
    (F.cross_entropy(logits, torch.arange(4)) + F.cross_entropy(aux, torch.arange(4))).backward()
    assert all(p.grad is not None for p in net.parameters())
    net.eval()
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    with pytest.raises(ValueError, match="no normal cell"):
        Network(G, 4, 10, 3)


@pytest.mark.parametrize("reduction, cl, partial_k, sampled", [
    (True, True, 1, False), (False, True, 1, False), (True, False, 1, False), (False, False, 1, False),
    (True, True, 2, False), (False, False, 2, False), (True, True, 1, True), (True, False, 2, True)])
def test_cell_source_by_source_equals_edge_by_edge(reduction, cl, partial_k, sampled):
    """The supernet cell's per-source evaluation (shared pools/identity, FactorizedReduce of all
    stride-2 edges of a source as one matmul) gives the edge-by-edge outputs, the gradients of
    every weight, of the op and input weights and of the input, and the BN running statistics;
    also with PC-DARTS partial channels (`partial_k`) and GDAS's one sampled op per edge, whose
    other ops are never run (their weights get no gradient)."""
    import copy

    from nes.method.ops import PoolBN
    from nes.method.supernet import MixedCell

    torch.manual_seed(3)
    cell = MixedCell(6, 6, 4, reduction, False, nodes=3, affine=False, partial_k=partial_k)
    for m in cell.modules():
        if hasattr(m, "sparse"):
            m.sparse = sampled
    ref = copy.deepcopy(cell)
    fmt = torch.channels_last if cl else torch.contiguous_format
    cell, ref = cell.to(memory_format=fmt), ref.to(memory_format=fmt)
    s0 = torch.randn(5, 6, 8, 8).contiguous(memory_format=fmt).requires_grad_()
    s1 = torch.randn(5, 6, 8, 8).contiguous(memory_format=fmt)
    logits = torch.randn(len(cell.edges), 7).requires_grad_()
    op_w = (torch.nn.functional.gumbel_softmax(logits, tau=1.0, hard=True) if sampled
            else torch.softmax(logits, -1))
    in_w = torch.rand(len(cell.edges)).requires_grad_()
    ref.edge_by_edge = True
    out, out_ref = cell(s0, s1, op_w, in_w), ref(s0, s1, op_w, in_w)
    assert out.shape == out_ref.shape == (5, 12, 4 if reduction else 8, 4 if reduction else 8)
    assert torch.allclose(out, out_ref, atol=1e-5)
    g = torch.randn_like(out)
    params = [logits, in_w, s0] + list(cell.parameters())
    grads = torch.autograd.grad(out, params, g, allow_unused=True, retain_graph=True)
    grads_ref = torch.autograd.grad(out_ref, [logits, in_w, s0] + list(ref.parameters()), g, allow_unused=True)
    names = ["logits", "in_w", "s0"] + [n for n, _ in cell.named_parameters()]
    for name, a, b in zip(names, grads, grads_ref):
        assert (a is None) == (b is None), name
        assert a is None or torch.allclose(a, b, atol=1e-4), name
    if sampled:  # the ops that were not sampled on any edge were never run
        assert any(a is None for a in grads[3:])
        assert grads[0].abs().sum() > 0  # the straight-through gradient still reaches every α row
    else:
        assert all(a is not None for a in grads)
    for (name, a), b in zip(cell.named_buffers(), ref.buffers()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), name
    pools = [m for m in cell.modules() if isinstance(m, PoolBN)]
    assert pools, "the cell holds no PoolBN"
    assert all(p.bn.num_batches_tracked.item() <= 1 for p in pools), \
        f"a PoolBN tracked more than one batch: {[p.bn.num_batches_tracked.item() for p in pools]}"
    assert sampled or all(p.bn.num_batches_tracked.item() == 1 for p in pools)


INPUT0_ONLY = Genotype(reduce=((("dil_conv_5x5", 0),), (("max_pool_3x3", 2),), (("sep_conv_3x3", 3),), (("max_pool_3x3", 4),)))


@pytest.mark.parametrize("genotype, layers", [(INPUT0_ONLY, 1), (INPUT0_ONLY, 2), (G, 2), (G2, 3), (G2, 5)])
def test_unused_cells_are_exactly_the_cells_without_gradient(genotype, layers):
    """`unused_cells` agrees with the real network: a cell is reported unused iff no gradient of the
    loss reaches any of its parameters."""
    torch.manual_seed(0)
    net = Network(genotype, 4, 10, layers, in_channels=1)
    F.cross_entropy(net(torch.randn(4, 1, 12, 12)), torch.randint(0, 10, (4,))).backward()
    no_grad = tuple(k + 1 for k, cell in enumerate(net.cells)
                    if all(p.grad is None or not p.grad.any() for p in cell.parameters()))
    assert unused_cells(genotype, layers) == no_grad
    assert (unused_cells_note(genotype, layers) is None) == (no_grad == ())
    if genotype is INPUT0_ONLY and layers == 2:
        assert no_grad == (1,), f"cells without gradient {no_grad}, expected (1,)"
        assert "cell 1" in unused_cells_note(genotype, layers), \
            f"the note does not name cell 1: {unused_cells_note(genotype, layers)!r}"


@pytest.mark.parametrize("genotype, layers", [(G, 2), (INPUT0_ONLY, 2), (G2, 3)])
def test_unread_cell_inputs_are_skipped_without_changing_the_network(genotype, layers):
    """A cell input that no node reads is not preprocessed; the logits and every gradient are those
    of the network that preprocesses it (`compute_unused`, DARTS's reference computation)."""
    results = []
    for compute_unused in (False, True):
        torch.manual_seed(0)
        net = Network(genotype, 4, 10, layers, in_channels=1)
        net.compute_unused = compute_unused
        x, y = torch.randn(4, 1, 12, 12), torch.arange(4)
        logits = net(x)
        grads = torch.autograd.grad(F.cross_entropy(logits, y), list(net.parameters()), allow_unused=True)
        ran = {name: int(bn.num_batches_tracked) for name, bn in net.named_modules() if ".pre" in name
               and isinstance(bn, torch.nn.BatchNorm2d)}
        results.append((logits.detach(), grads, ran))
    (l0, g0, ran0), (l1, g1, ran1) = results
    assert torch.allclose(l0, l1, atol=1e-6), "skipping the unread inputs changed the logits"
    for (name, _), a, b in zip(net.named_parameters(), g0, g1):
        if a is None:  # a skipped preprocessing's parameters: the reference gives them no gradient either
            assert b is None or not b.any(), f"{name}: no gradient when skipped, a nonzero one when computed"
        else:
            assert b is not None and torch.allclose(a, b, atol=1e-6), f"{name}: gradient differs when skipped"
    reads = [cell.reads for cell in net.cells]
    skipped = {n for n, k in ran0.items() if k == 0}
    expected = {n for n in ran0 if not reads[int(n.split(".")[1])][int(n.split(".pre")[1][0])]}
    assert skipped == expected, f"preprocessing skipped {sorted(skipped)}, unread inputs {sorted(expected)}"
    assert all(k == 1 for k in ran1.values()), f"compute_unused left some preprocessing out: {ran1}"
