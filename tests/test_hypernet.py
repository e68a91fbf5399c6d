"""Hypernetwork α(λ), regularizers, sampling API, and the hypernet CLI on digits/smoke."""
import json
import math
from pathlib import Path

import pytest
import torch

from nes.artifacts import load_tensors, save_tensors
from nes.method.divergence import pairwise_arch_js
from nes.method.diversity import sample_architectures, unique_genotypes
from nes.method.hypernet import PiecewiseLinearHypernet, load_hypernet
from nes.method.regularizers import JsRegularizer, LamRange, SharedEdges, Warmup, check_regularizer, js_to_star
from nes.method.space import ArchLayout, Genotype
from helpers import nes

ROOT = Path(__file__).resolve().parents[1]
LAY = ArchLayout(4, ("reduce",), 1)
STAR = Genotype(reduce=((("sep_conv_3x3", 1),), (("dil_conv_5x5", 0),), (("skip_connect", 2),), (("max_pool_3x3", 3),)))


def make_hyper(k=5, seed=0):
    return PiecewiseLinearHypernet(torch.randn(LAY.size), LamRange.exact(-0.2, 4.2), k, init_noise=0.5,
                                   generator=torch.Generator().manual_seed(seed))


def test_exact_at_pivots_and_continuous():
    h = make_hyper()
    with torch.no_grad():
        h.pivot_logits.copy_(torch.tensor([0.3, -1.0, 2.0, 0.1]))
        r = h.pivots()
        for k in range(5):
            assert torch.allclose(h(float(r[k])), h.anchors[k], atol=1e-5)
        # continuity: tiny steps around every interior pivot give tiny changes
        for k in range(1, 4):
            a, b = h(float(r[k]) - 1e-4), h(float(r[k]) + 1e-4)
            assert (a - b).abs().max() < 1e-2
        # linear in between
        mid = 0.5 * (r[1] + r[2])
        assert torch.allclose(h(float(mid)), 0.5 * (h.anchors[1] + h.anchors[2]), atol=1e-5)
    # batched λ equals per-λ calls
    lams = torch.linspace(-0.2, 4.2, 7)
    assert torch.allclose(h(lams), torch.stack([h(float(x)) for x in lams]), atol=1e-6)
    assert h(lams).shape == (7, LAY.size)


def test_gradients_reach_every_anchor_and_interior_pivot():
    h = make_hyper()
    lams = torch.tensor([-0.1, 0.7, 1.9, 3.0, 4.1])  # one λ in every segment
    out = h(lams)
    (out * torch.randn_like(out)).sum().backward()
    assert (h.anchors.grad.abs().sum(1) > 0).all()
    assert (h.pivot_logits.grad != 0).all()


def test_pivots_stay_sorted_after_many_steps():
    h = make_hyper()
    opt = torch.optim.Adam(h.parameters(), lr=0.5)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        opt.zero_grad()
        lam = float(-0.2 + 4.4 * torch.rand((), generator=g))
        (h(lam) * torch.randn(LAY.size, generator=g)).sum().mul(10).backward()
        opt.step()
    r = h.pivots().detach()
    assert (r[1:] > r[:-1]).all()
    assert r[0] == pytest.approx(-0.2), f"the first pivot moved to {float(r[0])}, expected -0.2"
    assert r[-1] == pytest.approx(4.2), f"the last pivot moved to {float(r[-1])}, expected 4.2"


def test_bad_hypernet_input():
    with pytest.raises(ValueError, match="pivots must be >= 2"):
        PiecewiseLinearHypernet(torch.zeros(LAY.size), LamRange.exact(0, 1), pivots=1)
    h = make_hyper()
    with pytest.raises(ValueError, match="outside the range this hypernetwork was trained on"):
        h(7.0)
    with pytest.raises(ValueError, match="unknown regularizer 'kl'"):
        check_regularizer("kl")


def test_shared_edges_limit_is_the_exact_count():
    """Large logits, small temperature and τ = 1 → S = matched edges of the discretized θ."""
    torch.manual_seed(0)
    se = SharedEdges(LAY, STAR, tau=1.0)
    for _ in range(20):
        # logits 50 apart: Gumbel noise (scale ~1) never changes the argmax
        parts = LAY.split(torch.zeros(LAY.size))
        parts["reduce"][0].copy_(50.0 * torch.stack([torch.randperm(7) for _ in range(LAY.num_edges)]).float())
        for b in parts["reduce"][1]:
            b.copy_(50.0 * torch.randperm(len(b)).float())
        theta = LAY.join(parts)
        # with some probability copy genotype*'s choices so that counts 0..4 all occur
        keep = torch.rand(4) < 0.5
        big = LAY.genotype_logits(STAR, 500.0)
        parts, star_parts = LAY.split(theta), LAY.split(big)
        for i, node in enumerate(STAR.reduce):
            if keep[i]:
                (op, inp), = node
                from nes.method.space import edge_index

                parts["reduce"][0][edge_index(i, inp)] = star_parts["reduce"][0][edge_index(i, inp)]
                parts["reduce"][1][i].copy_(star_parts["reduce"][1][i])
        theta = LAY.join(parts)
        exact = LAY.discretize(theta).matched_edges(STAR)
        assert se(theta, temperature=0.01).item() == pytest.approx(exact, abs=1e-3)
        assert se(theta, temperature=0.01, noise=False).item() == pytest.approx(exact, abs=1e-3)


def test_regularizer_gradients_move_alpha_the_intended_way():
    torch.manual_seed(0)
    theta0 = LAY.genotype_logits(STAR, 2.0) + 0.1 * torch.randn(LAY.size)
    # js: a gradient step on −λ·JS increases JS(α*, α)
    reg = JsRegularizer(LAY, STAR)
    th = theta0.clone().requires_grad_()
    reg(2.0, th, 0.5).backward()
    after = theta0 - 0.5 * th.grad
    d = LAY.smoothed_distributions(STAR)
    assert js_to_star(LAY, after, d) > js_to_star(LAY, theta0, d)
    # edges (noise-free S for a deterministic check): λ below S lowers S, λ above raises it
    se = SharedEdges(LAY, STAR)
    s0 = se(theta0, 1.0, noise=False).item()
    for lam, sign in ((0.0, -1), (4.0, +1)):
        th = theta0.clone().requires_grad_()
        ((lam - se(th, 1.0, noise=False)) ** 2).backward()
        s1 = se(theta0 - 0.5 * th.grad, 1.0, noise=False).item()
        assert sign * (s1 - s0) > 0
    # warm-up schedules run the right way
    w = Warmup()
    assert w.at(0.0) == (0.3, 1.0), f"warm-up at the start {w.at(0.0)}, expected (0.3, 1.0)"
    assert w.at(1.0) == pytest.approx((3.0, 0.05)), f"warm-up at the end {w.at(1.0)}, expected (3.0, 0.05)"


def test_sampling_api_and_pairwise_js():
    h = make_hyper()
    samples = sample_architectures(h, LAY, STAR, [0, 1, 2, 3, 4])
    assert [s.lam for s in samples] == [0, 1, 2, 3, 4]
    for s in samples:
        assert 0 <= s.matched_edges <= 4, f"λ={s.lam}: {s.matched_edges} matched edges, outside [0, 4]"
        assert 0 <= s.js_to_star <= math.log(2), f"λ={s.lam}: JS to α* {s.js_to_star}, outside [0, ln 2]"
        assert s.matched_edges == s.genotype.matched_edges(STAR)
        json.dumps(s.to_dict())
    m = pairwise_arch_js(LAY, [s.theta for s in samples])
    assert m.shape == (5, 5), f"pairwise JS shape {tuple(m.shape)} for 5 samples"
    assert torch.allclose(m, m.T), "pairwise JS is not symmetric"
    assert (m.diagonal() == 0).all(), f"a sample's JS to itself is not 0: {m.diagonal().tolist()}"
    assert (m >= 0).all(), f"negative pairwise JS: {float(m.min())}"
    assert (m <= math.log(2)).all(), f"pairwise JS above ln 2: {float(m.max())}"
    u = unique_genotypes(samples + samples[:2])
    assert sum(len(l) for _, l in u) == 7, \
        f"unique_genotypes lists {sum(len(l) for _, l in u)} λ values of the 7 sampled"
    assert len({g for g, _ in u}) == len(u), "unique_genotypes lists a genotype twice"
    with pytest.raises(ValueError, match="outside"):
        sample_architectures(h, LAY, STAR, [9.0])


@pytest.fixture(scope="module")
def hyper_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("hyper") / "run"
    assert nes("search", "--preset", "smoke", "--run", str(run)).returncode == 0
    for reg in ("edges", "js"):
        r = nes("hypernet", "--run", str(run), "--regularizer", reg, "--preset", "smoke")
        assert r.returncode == 0, r.stderr
    return run


def test_hypernet_cli_and_sample_json(hyper_run):
    for reg in ("edges", "js"):
        d = hyper_run / "hypernet" / reg
        assert (d / "hypernet.safetensors").exists(), f"{reg}: no hypernet.safetensors"
        assert (d / "curve.json").exists(), f"{reg}: no curve.json"
        hist = json.loads((d / "history.json").read_text())
        assert hist, f"{reg}: empty history"
        assert any(k.startswith("val_loss_lam_") for k in hist[-1]), \
            f"{reg}: the last epoch records no validation loss per λ: {sorted(hist[-1])}"
    r = nes("sample", "--run", str(hyper_run), "--lam", "0", "1", "2", "3", "4", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [o["lam"] for o in out] == [0, 1, 2, 3, 4]
    for o in out:
        assert set(o) >= {"lam", "matched_edges", "js_to_star", "genotype"}
        assert Genotype.from_dict(o["genotype"]).num_kept_edges() == 4
        assert 0 <= o["js_to_star"] <= math.log(2)
    r = nes("sample", "--run", str(hyper_run), "--regularizer", "js", "--lam", "0.5")
    assert r.returncode == 0, f"sample --regularizer js: exit {r.returncode}:\n{r.stderr}"
    assert "matched" in r.stdout, f"sample --regularizer js does not show matched edges:\n{r.stdout}"


def test_fixed_lambda_cli(hyper_run):
    r = nes("fixed-lambda", "--run", str(hyper_run), "--lam", "2", "--preset", "smoke", "--set", "epochs=1")
    assert r.returncode == 0, r.stderr
    g = json.loads((hyper_run / "fixed_lambda" / "lam_2" / "genotype.json").read_text())
    assert 0 <= g["matched_edges"] <= 4, f"{g['matched_edges']} matched edges, outside [0, 4]"
    assert g["lam"] == 2, f"the genotype records λ {g['lam']}, asked for 2"


def test_hypernet_bad_input(hyper_run, tmp_path):
    cases = [
        (["sample", "--run", str(hyper_run), "--lam", "9"], "outside the range"),
        (["hypernet", "--run", str(hyper_run), "--regularizer", "js", "--set", "pivots=1"], "pivots must be >= 2"),
        (["hypernet", "--run", str(tmp_path), "--regularizer", "js"], "no finished search"),
        (["sample", "--run", str(tmp_path)], "no finished search|no trained hypernetwork"),
        (["fixed-lambda", "--run", str(hyper_run), "--lam", "50"], "outside"),
    ]
    for args, msg in cases:
        r = nes(*args)
        assert r.returncode == 2, f"{args}: exit {r.returncode}, expected 2:\n{r.stderr}"
        assert "Traceback" not in r.stderr, f"{args}: a traceback instead of a message:\n{r.stderr}"
        assert __import__("re").search(msg, r.stderr), (args, r.stderr)
    r = nes("hypernet", "--run", str(hyper_run), "--regularizer", "kl")
    assert r.returncode == 2, f"hypernet --regularizer kl: exit {r.returncode}, expected 2:\n{r.stderr}"
    assert "invalid choice" in r.stderr, f"hypernet --regularizer kl does not say it is an invalid choice:\n{r.stderr}"


def test_hypernet_checkpoint_that_does_not_fit(hyper_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(hyper_run, run)
    p = run / "hypernet" / "edges" / "hypernet.safetensors"
    tensors, meta = load_tensors(p)
    meta["layout"]["nodes"] = 3
    save_tensors(p, tensors, meta)
    with pytest.raises(ValueError, match="does not fit this run's search space \\(nodes 3 vs 4\\)"):
        load_hypernet(run, "edges")
    meta["layout"]["nodes"] = 4
    save_tensors(p, {**tensors, "anchors": tensors["anchors"][:, :10]}, meta)
    with pytest.raises(ValueError, match="do not fit the search space"):
        load_hypernet(run, "edges")
    r = nes("sample", "--run", str(run), "--regularizer", "edges")
    assert r.returncode == 2, \
        f"sample with a hypernetwork that does not fit: exit {r.returncode}, expected 2:\n{r.stderr}"
    assert "do not fit" in r.stderr, f"sample does not say the hypernetwork does not fit:\n{r.stderr}"


def test_renamed_edges_weight_settings_still_read():
    """c_start / c_end (earlier versions) are read as target_weight_start / target_weight_end, from
    --set and from stored configs (the bundled demo's hypernetworks were written with them)."""
    from nes.config import HypernetConfig, from_dict, from_preset, to_dict

    cfg = from_preset(HypernetConfig, "smoke", {"c_start": "0.5", "target_weight_end": "4"})
    assert (cfg.target_weight_start, cfg.target_weight_end) == (0.5, 4.0)
    old = {("c_start" if k == "target_weight_start" else k): v for k, v in to_dict(cfg).items()}
    assert "c_start" in old, f"the old-style config lacks c_start: {sorted(old)}"
    assert from_dict(HypernetConfig, old) == cfg, "a config saved with c_start reads back differently"


@pytest.mark.parametrize("poison", ["anchors", "lam_max"])
def test_a_non_finite_hypernetwork_is_refused_naming_its_file(hyper_run, tmp_path, poison):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(hyper_run, run)
    path = run / "hypernet" / "edges" / "hypernet.safetensors"
    tensors, meta = load_tensors(path)
    if poison == "anchors":
        tensors["anchors"][0, 0] = float("nan")
    else:
        meta["lam_max"] = float("nan")
    save_tensors(path, tensors, meta)
    with pytest.raises(ValueError, match=r"hypernet\.safetensors: .*(NaN or infinite|not two finite numbers)"):
        load_hypernet(run, "edges")
    out = nes("sample", "--run", str(run), "--lam", "1")
    assert out.returncode == 2, f"sample over a NaN hypernetwork exited {out.returncode}: {out.stderr}"
    assert "hypernet.safetensors" in out.stderr, f"the message does not name the file: {out.stderr}"
