"""The architecture map (`nes.explorer.archmap`, `python -m nes map`) on the bundled demo run.

The demo is only read (the CLI writes its HTML under tmp_path). The embedding's invariants: one
point per finished member, one path per trained hypernetwork, the project's architecture JS as the
distance, the same map for the same seed, Kruskal stress-1 within [0, 1] and 0 where the distances
embed exactly, and a slider marker that lies on its path and moves with λ.
"""
from __future__ import annotations

import numpy as np
import pytest

from helpers import ROOT, nes
from nes.cli.main import main
from nes.explorer.archmap import (arch_distributions, build_map, distance_matrix, embed, kruskal_stress, map_figure,
                                  path_position)
from nes.explorer.runview import RunView
from nes.method.divergence import genotype_js_matrix, pairwise_arch_js

DEMO = ROOT / "assets" / "demo"
GRID = 9


@pytest.fixture(scope="module")
def view():
    return RunView(DEMO)


@pytest.fixture(scope="module")
def amap(view):
    return build_map(DEMO, grid=GRID, seed=0, view=view)


def test_one_point_per_finished_member(amap, view):
    members = sorted(p.label for p in amap.of_kind("member"))
    assert members == sorted(view.finished_members()), f"member points {members} vs {view.finished_members()}"


def test_one_path_per_hypernetwork_from_its_star_end(amap, view):
    assert sorted(amap.paths) == sorted(view.regularizers()), f"paths {list(amap.paths)} vs {view.regularizers()}"
    for reg, ix in amap.paths.items():
        assert len(ix) == GRID, f"{reg}: {len(ix)} path points, grid {GRID}"
        div = [amap.points[i].diversity for i in ix]
        assert div == sorted(div), f"{reg}: path not in diversity order: {div}"


def test_alpha_star_once_at_the_origin_and_baselines_present(amap):
    stars = amap.of_kind("alpha_star")
    assert len(stars) == 1, f"{len(stars)} α* points"
    assert (stars[0].x, stars[0].y) == (0.0, 0.0), f"α* at {(stars[0].x, stars[0].y)}"
    pools = {p.pool for p in amap.of_kind("baseline")}
    assert pools == {"deepens s0"}, f"baseline pools {pools}"


def test_identical_architectures_share_a_position(amap):
    seen: dict = {}
    for p in amap.points:
        q = seen.setdefault(p.genotype, p)
        assert (p.x, p.y) == (q.x, q.y), f"{p.label} and {q.label}: same genotype, different places"


def test_members_and_baselines_carry_their_test_accuracy(amap):
    for p in amap.of_kind("member") + amap.of_kind("baseline"):
        assert p.accuracy is not None and 0.0 < p.accuracy <= 1.0, f"{p.label}: accuracy {p.accuracy}"


def test_distance_is_the_projects_architecture_js(view, amap):
    thetas = [view.theta_star] + [s.theta for s in view.sample("edges", view.axis_grid("edges", 4))]
    ours = distance_matrix([arch_distributions(view.layout, view.star, t, "continuous") for t in thetas]) ** 2
    theirs = pairwise_arch_js(view.layout, thetas).numpy()
    assert np.allclose(ours, theirs, atol=1e-5), f"continuous: √JS² {ours} vs pairwise_arch_js {theirs}"
    genos = [p.genotype for p in amap.points[:6]]
    ours = distance_matrix([arch_distributions(view.layout, g, None, "genotype") for g in genos]) ** 2
    theirs = np.array(genotype_js_matrix(genos))
    assert np.allclose(ours, theirs, atol=1e-5), f"genotype: √JS² {ours} vs genotype_js_matrix {theirs}"


def test_same_seed_same_map(view, amap):
    again = build_map(DEMO, grid=GRID, seed=0, view=view)
    assert np.array_equal(amap.coords(), again.coords()), "two maps with seed 0 differ"


@pytest.mark.parametrize("space", ["genotype", "continuous"])
def test_stress_within_zero_and_one(view, space):
    m = build_map(DEMO, grid=GRID, seed=0, space=space, view=view)
    assert 0.0 <= m.stress <= 1.0, f"{space}: stress {m.stress}"


def test_stress_is_zero_where_distances_embed_exactly():
    line = np.array([[0.0, 1.0, 3.0], [1.0, 0.0, 2.0], [3.0, 2.0, 0.0]])  # three points on a line
    exact = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    assert kruskal_stress(line, exact) < 1e-12, f"stress of the exact drawing {kruskal_stress(line, exact)}"
    assert kruskal_stress(line, embed(line)) < 1e-6, f"stress of MDS of a line {kruskal_stress(line, embed(line))}"
    assert kruskal_stress(line, 2 * exact) > 0.1, "a drawing at twice the scale has no stress"


def test_stress_of_a_simplex_is_positive_and_bounded():
    simplex = 1.0 - np.eye(4)  # four equidistant points: a tetrahedron, not drawable in a plane
    s = kruskal_stress(simplex, embed(simplex))
    assert 0.05 < s <= 1.0, f"stress of a tetrahedron drawn in 2-D: {s}"


def _segment_with_length(amap, reg):
    ix = amap.paths[reg]
    for a, b in zip(ix, ix[1:]):
        pa, pb = amap.points[a], amap.points[b]
        if np.hypot(pa.x - pb.x, pa.y - pb.y) > 1e-6:
            return pa, pb
    return None


def test_marker_at_a_grid_point_is_that_point(amap):
    for reg, ix in amap.paths.items():
        p = amap.points[ix[GRID // 2]]
        got = path_position(amap, reg, lam=p.lam)
        assert np.allclose(got, (p.x, p.y)), f"{reg}: marker at λ={p.lam} is {got}, the grid point {(p.x, p.y)}"


def test_marker_lies_on_the_path_and_moves_with_lambda(amap):
    seg = _segment_with_length(amap, "edges")
    assert seg is not None, "the edges path never moves on the demo"
    pa, pb = seg
    pos = []
    for t in (0.25, 0.75):
        x, y = path_position(amap, "edges", lam=pa.lam + t * (pb.lam - pa.lam))
        want = (pa.x + t * (pb.x - pa.x), pa.y + t * (pb.y - pa.y))
        assert np.allclose((x, y), want), f"marker at t={t} between {pa.label} and {pb.label}: {(x, y)} vs {want}"
        pos.append((x, y))
    assert not np.allclose(pos[0], pos[1]), f"the marker stayed at {pos[0]} while λ moved"


def test_marker_refuses_lambda_off_the_path(amap):
    lams = [amap.points[i].lam for i in amap.paths["edges"]]
    with pytest.raises(ValueError, match="outside"):
        path_position(amap, "edges", lam=max(lams) + 1.0)


def test_figure_one_line_per_hypernetwork_one_marker_per_member(amap):
    fig = map_figure(amap, at={"edges": amap.points[amap.paths["edges"][1]].lam})
    kinds = [(t.meta or {}).get("kind") for t in fig.data]
    assert kinds.count("path") == len(amap.paths), f"path traces {kinds.count('path')} for {len(amap.paths)} paths"
    n_members = sum(len(t.x) for t in fig.data if (t.meta or {}).get("kind") == "member")
    assert n_members == len(amap.of_kind("member")), f"{n_members} member markers"
    assert kinds.count("alpha_star") == 1 and kinds.count("marker") == 1, f"trace kinds {kinds}"
    assert f"{amap.stress:.3f}" in fig.layout.title.text, f"stress missing from the title {fig.layout.title.text!r}"


def test_cli_writes_a_self_contained_html(tmp_path):
    out = tmp_path / "map.html"
    r = nes("map", "--run", str(DEMO), "--out", str(out), "--grid", "5")
    assert r.returncode == 0, r.stderr
    html = out.read_text()
    head = html.lstrip()[:40].lower()
    assert head.startswith(("<!doctype html>", "<html")), f"the file does not open as HTML: {head!r}"
    assert html.rstrip().endswith("</html>"), "the HTML document is not closed"
    assert "architecture map of demo" in html, "the run's name is not in the file"
    assert "Plotly.newPlot" in html, "the file draws no plotly figure"
    assert "<script src=\"http" not in html, "plotly.js is loaded from the network, not inlined"


def test_cli_refuses_to_overwrite_without_force(tmp_path, capsys):
    out = tmp_path / "map.html"
    out.write_text("keep")
    assert main(["map", "--run", str(DEMO), "--out", str(out)]) == 2, "an existing --out was not refused"
    assert out.read_text() == "keep", "the refused command changed the file"
    assert "--force" in capsys.readouterr().err, "the refusal does not say how to replace the file"
    assert main(["map", "--run", str(DEMO), "--out", str(out), "--grid", "3", "--force"]) == 0, "--force failed"
    assert "</html>" in out.read_text(), "--force did not replace the file"


def test_cli_exits_2_on_a_missing_run_or_search(tmp_path, capsys):
    out = tmp_path / "map.html"
    assert main(["map", "--run", str(tmp_path / "nope"), "--out", str(out)]) == 2, "a missing run was accepted"
    assert str(tmp_path / "nope") in capsys.readouterr().err, "the message does not name the missing run"
    (tmp_path / "empty").mkdir()
    assert main(["map", "--run", str(tmp_path / "empty"), "--out", str(out)]) == 2, "a run without search accepted"
    assert "nes search" in capsys.readouterr().err, "the message does not say to run the search"
    assert not out.exists(), "a refused command wrote its --out"


def _map_spec(at):
    import json
    figs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    maps = [f for f in figs if "stress" in ((f.get("layout") or {}).get("meta") or {})]
    assert len(maps) == 1, f"the Explore page shows {len(maps)} architecture maps, expected 1"
    return maps[0]


def _traces(spec, kind):
    return [t for t in spec["data"] if (t.get("meta") or {}).get("kind") == kind]


def test_the_explore_page_shows_the_map_and_its_marker_follows_the_slider(app_home):
    from streamlit.testing.v1 import AppTest

    from nes.explorer.demo import DEMO_DIR
    from nes.explorer.runview import RunView

    at = AppTest.from_file(str(ROOT / "explorer_app.py"), default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    spec = _map_spec(at)
    view = RunView(DEMO_DIR)
    members = sum(len(t["x"]) for t in _traces(spec, "member"))
    assert members == len(view.finished_members()), f"{members} member points for {len(view.finished_members())} members"
    regs = [t["meta"]["regularizer"] for t in _traces(spec, "path")]
    assert sorted(regs) == sorted(view.regularizers()), f"map paths {regs} vs hypernetworks {view.regularizers()}"
    before = _traces(spec, "marker")[0]
    at.slider[0].set_value(1.0).run()
    assert not at.exception, [e.value for e in at.exception]
    after = _traces(_map_spec(at), "marker")[0]
    assert (before["x"], before["y"]) != (after["x"], after["y"]), "the map's marker did not move with the slider"
