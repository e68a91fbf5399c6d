"""End to end: `streamlit run explorer_app.py` driven by a real headless Chromium (Debian's) via Playwright.

Screenshots land in tests/artifacts/ (kept as test artifacts, ignored by git).
"""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (requirements-dev.txt)")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="apt-get install -y chromium")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`streamlit run explorer_app.py` on a free port with a fresh store: its URL once healthy."""
    home = tmp_path_factory.mktemp("e2e") / "home"
    port = _free_port()
    env = {**os.environ, "NES_HOME": str(home), "NES_NO_PROGRESS": "1"}
    env.pop("NES_DEMO_DIR", None)
    log = open(tmp_path_factory.mktemp("e2e_log") / "streamlit.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "explorer_app.py", "--server.port", str(port),
                             "--server.headless", "true", "--server.fileWatcherType", "none",
                             "--browser.gatherUsageStats", "false"], cwd=ROOT, env=env, stdout=log, stderr=log)
    url = f"http://localhost:{port}"
    deadline = time.time() + 120
    while True:  # wait on the health endpoint
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read().strip() == b"ok":
                break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise AssertionError("streamlit did not become healthy:\n" + Path(log.name).read_text()[-3000:])
        time.sleep(0.5)
    yield url
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


# Every text plotly drew outside the data (titles, axis ticks and titles, legends, annotations such
# as the cell graphs' edge labels) with its WCAG contrast ratio against its figure's paper colour.
CONTRAST = """() => { const lum = c => { const v = c.match(/[\\d.]+/g).slice(0, 3).map(x => +x / 255)
        .map(x => x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4));
        return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2]; };
    const out = [];
    for (const gd of document.querySelectorAll('.js-plotly-plot')) {
        const paper = gd._fullLayout.paper_bgcolor;
        for (const el of gd.querySelectorAll('.gtitle, .annotation-text, .legendtext, .xtick text, .ytick text, .xtitle, .ytitle, .y2title')) {
            if (!el.textContent.trim()) continue;
            const a = lum(getComputedStyle(el).fill), b = lum(paper.startsWith('#') ?
                'rgb(' + [1, 3, 5].map(i => parseInt(paper.slice(i, i + 2), 16)).join(',') + ')' : paper);
            out.push([el.textContent.slice(0, 40), (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)]);
        } }
    return out; }"""


def _low_contrast(page, minimum: float = 4.5) -> list:
    """The figure texts on the page whose contrast with their paper is below `minimum` (WCAG AA)."""
    return [(text, round(ratio, 2)) for text, ratio in page.evaluate(CONTRAST) if ratio < minimum]


# every cell graph on the page differs from α* (the old α* figures are gone)
SETTLED_DIFFERENT = """() => { const m = Array.from(document.querySelectorAll('.js-plotly-plot'))
    .map(gd => gd.layout && gd.layout.meta).filter(m => m && m.cell_type);
    return m.length > 0 && m.every(x => x.edges_differing > 0); }"""


def _cell_meta(page) -> list:
    """layout.meta of every cell graph plotly drew (the figure spec as the browser has it)."""
    return page.evaluate("""() => Array.from(document.querySelectorAll('.js-plotly-plot'))
        .map(gd => gd.layout && gd.layout.meta).filter(m => m && m.cell_type)""")


def test_slider_changes_the_graph_in_a_real_browser(server):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page.goto(server + "/explore", wait_until="domcontentloaded")
        page.wait_for_function("""() => Array.from(document.querySelectorAll('.js-plotly-plot'))
            .some(gd => gd.layout && gd.layout.meta && gd.layout.meta.cell_type)""", timeout=90_000)
        page.get_by_text("Matched edges with α*").first.wait_for(timeout=30_000)
        before = _cell_meta(page)
        assert before, "the Explore page shows no cell figure"
        assert all(m["edges_differing"] == 0 for m in before), f"at diversity 0 the cells differ from α*: {before}"
        page.screenshot(path=str(ARTIFACTS / "e2e_explore_alpha_star.png"), full_page=True)

        slider = page.locator('[data-testid="stSlider"] input[type="range"]').first
        slider.focus()
        page.keyboard.press("End")  # diversity 1 (edges: λ = 0, share no edge with α*)
        page.wait_for_function(SETTLED_DIFFERENT, timeout=60_000)
        time.sleep(1.0)  # let the rerun finish (stale elements are removed at its end)
        page.wait_for_function(SETTLED_DIFFERENT, timeout=60_000)
        after = _cell_meta(page)
        assert after != before, "moving the slider did not change the cell figures"
        assert sum(m["edges_differing"] for m in after) > 0, f"at diversity 1 no edge differs from α*: {after}"
        page.wait_for_function("() => window.location.search.includes('div=')", timeout=30_000)
        assert "run=demo" in page.url
        page.screenshot(path=str(ARTIFACTS / "e2e_explore_lambda_0.png"), full_page=True)

        # the link reproduces the view in a fresh page
        fresh = browser.new_page(viewport={"width": 1400, "height": 1000})
        fresh.goto(page.url, wait_until="domcontentloaded")
        deadline, seen = time.time() + 90, None
        while time.time() < deadline:  # the fresh page settles on the same figures
            seen = _cell_meta(fresh)
            if seen == after:
                break
            time.sleep(0.5)
        assert seen == after, (fresh.url, seen, after)

        # a link from before the diversity axis: js λ = 1 of [0, 4] becomes diversity 0.25, lam leaves the URL
        fresh.goto(f"{server}/explore?run=demo&reg=js&lam=1.0", wait_until="domcontentloaded")
        fresh.wait_for_function("() => { const q = new URLSearchParams(window.location.search); "
                                "return q.get('div') === '0.25' && !q.has('lam'); }", timeout=60_000)
        fresh.get_by_text("Genotype at diversity 0.25").first.wait_for(timeout=60_000)

        for name in ("ensemble", "search", "hypernetwork", "compare"):
            page.goto(f"{server}/{name}", wait_until="domcontentloaded")
            page.wait_for_selector(".js-plotly-plot", timeout=90_000)
            assert page.locator('[data-testid="stException"]').count() == 0
            page.screenshot(path=str(ARTIFACTS / f"e2e_{name}.png"), full_page=True)

        # Export: write a bundle from the demo's members, download the zip, load it with the library
        page.goto(f"{server}/export", wait_until="domcontentloaded")
        page.wait_for_selector(".js-plotly-plot", timeout=90_000)
        page.get_by_role("button", name="Export", exact=True).click()
        download_button = page.get_by_role("button", name="Download zip")
        download_button.wait_for(timeout=120_000)
        assert page.locator('[data-testid="stException"]').count() == 0
        page.screenshot(path=str(ARTIFACTS / "e2e_export.png"), full_page=True)
        with page.expect_download(timeout=60_000) as dl:
            download_button.click()
        zpath = ARTIFACTS / "e2e_export_bundle.zip"
        dl.value.save_as(str(zpath))
        import nes

        model = nes.load_ensemble(zpath)
        assert len(model.member_names) == 3, f"the downloaded bundle holds members {model.member_names}, expected 3"
        assert model.class_names[0] == "T-shirt/top", \
            f"the downloaded bundle's first class is {model.class_names[0]!r}, expected T-shirt/top"
        browser.close()


MAP = "() => Array.from(document.querySelectorAll('.js-plotly-plot')).find(gd => gd.layout && gd.layout.meta && 'stress' in gd.layout.meta)"


def test_the_lesson_and_the_map_in_a_room_sized_window(server):
    """The Lesson's six steps and the architecture map at 1280×720 (a projector): every step draws
    without an exception; a click on a path point of the map shows that architecture and its one-shot
    estimate; the map's HTML snapshot downloads and names the run. Screenshots in tests/artifacts/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1280, "height": 720}, accept_downloads=True)
        for step in range(1, 7):
            page.goto(f"{server}/lesson?run=demo&step={step}", wait_until="domcontentloaded")
            page.get_by_text("What to notice").first.wait_for(timeout=90_000)
            page.wait_for_function(f"() => new URLSearchParams(window.location.search).get('step') === '{step}'",
                                   timeout=30_000)
            assert page.locator('[data-testid="stException"]').count() == 0, f"lesson step {step} raised"
            page.screenshot(path=str(ARTIFACTS / f"e2e_lesson_step{step}.png"), full_page=True)

        page.goto(f"{server}/?run=demo", wait_until="domcontentloaded")  # Explore, the default page, is the root
        page.wait_for_function(f"() => !!({MAP})()", timeout=90_000)
        page.get_by_text("The architecture map").first.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "e2e_map.png"), full_page=True)
        low = _low_contrast(page)
        assert low == [], f"light theme: figure texts below 4.5:1 {low}"
        # a point of the first path that no member, α* or ring sits on, in viewport pixels (plotly's axes map data to pixels)
        x, y = page.evaluate(f"""() => {{ const gd = ({MAP})(); const t = gd.data.find(d => d.meta && d.meta.kind === 'path');
            const others = gd.data.filter(d => d.meta && d.meta.kind !== 'path').flatMap(d => d.x.map((x, k) => [x, d.y[k]]));
            const free = t.x.map((x, k) => k).filter(k => !others.some(o => Math.hypot(o[0] - t.x[k], o[1] - t.y[k]) < 1e-6));
            const i = free[free.length - 1], L = gd._fullLayout;
            gd.scrollIntoView({{block: 'center'}}); const r = gd.getBoundingClientRect();
            return [r.left + L._size.l + L.xaxis.l2p(t.x[i]), r.top + L._size.t + L.yaxis.l2p(t.y[i])]; }}""")
        page.mouse.click(x, y)
        page.get_by_text("One-shot estimate").first.wait_for(timeout=90_000)
        assert page.locator('[data-testid="stException"]').count() == 0, "clicking the map raised"
        page.screenshot(path=str(ARTIFACTS / "e2e_map_clicked.png"), full_page=True)

        with page.expect_download(timeout=60_000) as dl:
            page.get_by_role("button", name="HTML snapshot").first.click()
        from nes.explorer.snapshot import read_state

        state = read_state(Path(dl.value.path()).read_text())
        assert state["run"] == "demo", f"the snapshot names run {state['run']!r}, expected demo"
        browser.close()


def test_figures_are_legible_on_the_dark_theme_in_presentation_mode(server):
    """The Explore and Ensemble pages in a browser whose system setting is dark (Streamlit then
    draws its dark theme) with ?present=true at 1280×720: every
    figure text (titles, ticks, legends, edge labels) has a WCAG AA contrast (≥ 4.5) with its
    paper; the developer toolbar and the store path are hidden. Screenshots in tests/artifacts/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1280, "height": 720}, color_scheme="dark")
        for path, name in (("/", "explore"), ("/ensemble", "ensemble")):
            page.goto(f"{server}{path}?run=demo&present=true", wait_until="domcontentloaded")
            page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .gtitle').length > 1", timeout=90_000)
            page.wait_for_timeout(1500)  # the last figures of the script run
            assert page.locator('[data-testid="stException"]').count() == 0, f"the {name} page raised"
            page.screenshot(path=str(ARTIFACTS / f"e2e_dark_present_{name}.png"), full_page=True)
            assert _low_contrast(page) == [], f"{name} page, dark theme: figure texts below 4.5:1 {_low_contrast(page)}"
            assert not page.locator('[data-testid="stToolbar"]').is_visible(), f"the {name} page shows the toolbar"
            assert page.get_by_text("Run store").count() == 0, f"the {name} page shows the store path"
        browser.close()
