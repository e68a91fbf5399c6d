"""Search space: Genotype validation and JSON round trip, NNI import, θ layout, JS bounds."""
import json
import math

import pytest
import torch

from nes.method.divergence import arch_js, js_divergence
from nes.method.interop_nni import genotype_from_nni, genotype_to_nni, load_genotype
from nes.method.space import OPS, ArchLayout, Genotype, cell_types_for, edge_index, num_edges, reduction_positions

G = Genotype(reduce=((("sep_conv_3x3", 1),), (("dil_conv_5x5", 0),), (("skip_connect", 2),), (("max_pool_3x3", 3),)))


def test_ops_and_positions():
    assert len(OPS) == 7, f"{len(OPS)} candidate ops: {OPS}"
    assert "none" not in OPS, "the op none is a candidate"
    assert reduction_positions(1) == (0,)
    assert reduction_positions(2) == (0, 1)
    assert reduction_positions(8) == (2, 5)
    assert cell_types_for(1) == ("reduce",), f"1 layer: cell types {cell_types_for(1)}"
    assert cell_types_for(2) == ("reduce",), f"2 layers: cell types {cell_types_for(2)}"
    assert cell_types_for(3) == ("normal", "reduce")
    assert num_edges(4) == 14, f"4 nodes have {num_edges(4)} candidate edges, expected 2 + 3 + 4 + 5"
    assert edge_index(3, 4) == 13, f"the last edge (node 3, input 4) has index {edge_index(3, 4)}"


def test_genotype_json_round_trip_and_hash():
    g2 = Genotype.from_json(G.to_json())
    assert g2 == G, f"JSON round trip changed the genotype: {g2}"
    assert hash(g2) == hash(G), "equal genotypes hash differently"
    assert len({G, g2}) == 1
    assert G.num_kept_edges() == 4, f"G keeps {G.num_kept_edges()} edges, expected 4"
    assert G.matched_edges(G) == 4, f"G shares {G.matched_edges(G)} edges with itself, expected 4"
    assert "sep3(1)" in G.compact()
    both = Genotype(normal=G.reduce, reduce=G.reduce)
    assert Genotype.from_json(both.to_json()) == both, "JSON round trip changed a two-cell genotype"
    assert both.num_kept_edges() == 8, f"a two-cell genotype keeps {both.num_kept_edges()} edges, expected 8"


@pytest.mark.parametrize(
    "obj, field",
    [
        ({"reduce": [[["conv_7x7", 0]], [["skip_connect", 0]]]}, "unknown op"),
        ({"reduce": [[["skip_connect", 2]]]}, "input index 2 out of range"),
        ({"reduce": [[["skip_connect", -1]]]}, "out of range"),
        ({"reduce": [[["skip_connect", 0], ["max_pool_3x3", 0]]]}, "used twice"),
        ({"reduce": [[["skip_connect", "a"]]]}, "must be an integer"),
        ({"reduce": [[]]}, "non-empty"),
        ({"reduce": "x"}, "expected a list of nodes"),
        ({"middle": []}, "unknown field"),
        ({}, "both 'normal' and 'reduce' are empty"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_genotype_validation_names_the_field(obj, field):
    with pytest.raises(ValueError, match=field):
        Genotype.from_dict(obj)


def test_wrong_node_count_and_missing_cell():
    with pytest.raises(ValueError, match="reduce: expected 5 nodes, got 4"):
        G.validate(nodes=5)
    with pytest.raises(ValueError, match="no normal cell"):
        G.validate(cell_types=("normal", "reduce"))
    with pytest.raises(ValueError, match="genotype has 4 nodes"):
        ArchLayout(nodes=3).check_genotype(G)


def test_nni_import_hand_written(tmp_path):
    arc = {
        "reduce_n2_p0": "sepconv3x3", "reduce_n2_p1": "maxpool", "reduce_n2_switch": [1],
        "reduce_n3_p0": "dilconv5x5", "reduce_n3_p1": "avgpool", "reduce_n3_p2": "skipconnect", "reduce_n3_switch": [0],
        "reduce_n4_p0": "sepconv5x5", "reduce_n4_p1": "sepconv5x5", "reduce_n4_p2": "skipconnect",
        "reduce_n4_p3": "maxpool", "reduce_n4_switch": [2],
        "reduce_n5_p0": "dilconv3x3", "reduce_n5_p1": "avgpool", "reduce_n5_p2": "sepconv3x3",
        "reduce_n5_p3": "maxpool", "reduce_n5_p4": "sepconv3x3", "reduce_n5_switch": [3],
    }
    p = tmp_path / "arc.json"
    p.write_text(json.dumps(arc))
    g = load_genotype(str(p))
    assert g.reduce == ((("max_pool_3x3", 1),), (("dil_conv_5x5", 0),), (("skip_connect", 2),), (("max_pool_3x3", 3),))
    assert g.normal == ()
    assert genotype_from_nni(genotype_to_nni(g)) == g


@pytest.mark.parametrize(
    "arc, msg",
    [
        ({"reduce_n2_p0": "sepconv3x3"}, "reduce_n2_switch: missing"),
        ({"reduce_n2_p0": "conv9", "reduce_n2_switch": [0]}, "reduce_n2_p0: unknown op 'conv9'"),
        ({"reduce_n2_switch": [0]}, "reduce_n2_p0: missing"),
        ({"reduce_n2_p0": "maxpool", "reduce_n2_switch": [5]}, "out of range"),
        ({"reduce_n3_p0": "maxpool", "reduce_n3_switch": [0]}, "not consecutive"),
        ({"foo": 1}, "expected a JSON object|no keys like"),
    ],
)
def test_nni_import_bad_input(arc, msg):
    with pytest.raises(ValueError, match=msg):
        genotype_from_nni(arc)


def test_layout_split_join_and_discretize():
    lay = ArchLayout(nodes=4, cell_types=("normal", "reduce"), inputs_per_node=1)
    assert lay.size == 2 * (14 * 7 + 14)
    theta = torch.randn(lay.size)
    assert torch.equal(lay.join(lay.split(theta)), theta)
    # batched θ too
    tb = torch.randn(3, lay.size)
    assert torch.equal(lay.join(lay.split(tb)), tb)
    g = Genotype(normal=G.reduce, reduce=G.reduce)
    t = lay.genotype_logits(g, scale=10.0)
    assert lay.discretize(t) == g
    w = lay.weights(t)
    for ct in lay.cell_types:
        op_w, in_w = w[ct]
        assert op_w.shape == (14, 7), f"{ct}: op weights shape {tuple(op_w.shape)}"
        assert in_w.shape == (14,), f"{ct}: input weights shape {tuple(in_w.shape)}"
        assert torch.allclose(op_w.sum(-1), torch.ones(14))
    assert len(lay.distributions(t)) == lay.num_distributions
    with pytest.raises(ValueError, match="needs"):
        lay.split(torch.zeros(5))


def test_discretize_k2():
    lay = ArchLayout(nodes=4, cell_types=("reduce",), inputs_per_node=2)
    g = lay.discretize(torch.randn(lay.size))
    assert [len(n) for n in g.reduce] == [2, 2, 2, 2]


def test_js_bounds_and_symmetry():
    p = torch.softmax(torch.randn(50, 7), -1)
    q = torch.softmax(torch.randn(50, 7), -1)
    assert torch.allclose(js_divergence(p, p), torch.zeros(50), atol=1e-6)
    assert torch.allclose(js_divergence(p, q), js_divergence(q, p))
    assert (js_divergence(p, q) <= math.log(2) + 1e-9).all(), f"JS above ln 2: {float(js_divergence(p, q).max())}"
    assert (js_divergence(p, q) >= 0).all(), f"negative JS: {float(js_divergence(p, q).min())}"
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    assert abs(js_divergence(a, b).item() - math.log(2)) < 1e-6
    lay = ArchLayout()
    d1 = lay.smoothed_distributions(G, tau=0.99)
    assert arch_js(d1, d1).item() == pytest.approx(0.0, abs=1e-7)
    assert all(torch.allclose(d.sum(), torch.tensor(1.0)) for d in d1)
