"""Your own image (nes.explorer.ownimage and pages/image.py) on the bundled demo run (read only)."""
from __future__ import annotations

import importlib.util
import io

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from helpers import ROOT
from nes.artifacts import load_tensors
from nes.explorer import ownimage
from nes.explorer.demo import DEMO_DIR
from nes.layout import RunDir
from nes.method.train import read_member

pytestmark = pytest.mark.skipif(not (DEMO_DIR / "demo.json").exists(), reason="no bundled demo (assets/demo)")
APP = str(ROOT / "explorer_app.py")


@pytest.fixture(scope="module")
def members() -> ownimage.Members:
    return ownimage.load_members(DEMO_DIR)


@pytest.fixture(scope="module")
def sample() -> ownimage.Sample:
    return ownimage.samples(DEMO_DIR)[0]


def png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def garment(light_background: bool, size=(90, 61)) -> Image.Image:
    """An RGB picture of a filled rectangle: dark on white, or light on black."""
    h, w = size
    a = np.full((h, w, 3), 255 if light_background else 0, np.uint8)
    a[15:h - 15, 12:w - 12] = 40 if light_background else 220
    return Image.fromarray(a)


def test_an_rgb_picture_of_any_size_becomes_one_fashion_mnist_image(members):
    p = ownimage.preprocess(garment(True, (123, 77)), members.info)
    assert p.images.dtype == torch.uint8, f"preprocess gives {p.images.dtype}, not uint8"
    assert list(p.images.shape) == [1, 1, 28, 28], f"preprocess gives shape {list(p.images.shape)}, not [1, 1, 28, 28]"


def test_a_light_background_is_inverted_and_a_dark_one_is_not(members):
    light = ownimage.preprocess(garment(True), members.info)
    dark = ownimage.preprocess(garment(False), members.info)
    assert light.inverted, f"a dark garment on white was not inverted: {light.note}"
    assert not dark.inverted, f"a light garment on black was inverted: {dark.note}"
    x = light.images[0, 0]
    assert int(x[14, 14]) > 128, f"the inverted garment is not light: centre {int(x[14, 14])}"
    assert int(x[0, 0]) < 32, f"the inverted picture's background is not dark: corner {int(x[0, 0])}"
    assert "inverted" in light.note, f"the note does not say the picture was inverted: {light.note!r}"


def test_a_non_image_upload_gives_a_clear_error():
    junk = np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    with pytest.raises(ownimage.ImageError) as e:
        ownimage.decode(junk, "notes.png")
    assert "notes.png" in str(e.value), f"the error does not name the file: {e.value}"
    assert "PNG or JPEG" in str(e.value), f"the error does not say what to upload: {e.value}"


def test_a_huge_upload_is_refused_before_decoding():
    with pytest.raises(ownimage.ImageError, match="big.png"):
        ownimage.decode(b"\x89PNG" + bytes(ownimage.MAX_BYTES), "big.png")


def test_a_png_round_trip_of_a_test_image_is_that_image(members, sample):
    img = ownimage.decode(png(sample.images[0, 0].numpy()), "sample.png")
    p = ownimage.preprocess(img, members.info)
    assert torch.equal(p.images, sample.images), "a 28×28 test image saved as PNG did not come back unchanged"


def test_member_probabilities_sum_to_one_and_the_ensemble_is_their_mean(members, sample):
    v = ownimage.votes(members, ownimage.preprocess(garment(True), members.info).images)
    for name, p in zip(v.names, v.probs):
        assert abs(float(p.sum()) - 1) < 1e-5, f"member {name}'s probabilities sum to {float(p.sum())}"
    gap = (v.ensemble - v.probs.mean(0)).abs().max().item()
    assert gap < 1e-7, f"the ensemble's vote is {gap} away from the members' mean"
    assert len(v.rows()) == len(members.members) + 1, "rows() is not one per member plus the ensemble"


def test_each_member_mirrors_as_its_config_says(members):
    """Flip TTA per member follows its own config (and the dataset's flip rule); the next test
    checks the votes against the member's saved last-epoch test probabilities. (The members'
    shift caches are generated on first use and not in the repository, so they are not read.)"""
    run = RunDir(DEMO_DIR)
    for m in members.members:
        cfg = read_member(run.member(m.name)).config
        assert m.flip == bool(cfg.tta_flip and members.info.flip), f"member {m.name} does not mirror its tta_flip"


def test_the_sample_is_the_test_set_image_whose_last_epoch_probabilities_match(members, sample):
    """The cached shift images are the test set's first 1000 of a seed-0 shuffle: the member's last
    epoch's test probabilities at that position are the same vote."""
    run = RunDir(DEMO_DIR)
    pos = int(torch.randperm(10000, generator=torch.Generator().manual_seed(0))[sample.index])
    v = ownimage.votes(members, sample.images)
    for m, p in zip(members.members, v.probs):
        cfg = read_member(run.member(m.name)).config
        epoch = load_tensors(run.member(m.name).path / "probs" / f"epoch_{cfg.epochs - 1:03d}.safetensors")[0]
        gap = (epoch["test"][pos].float() - p).abs().max().item()
        assert gap < 2e-3, f"member {m.name}: {gap} from its last epoch's test probabilities at test image {pos}"


def test_severity_zero_leaves_the_image_and_five_changes_it(sample):
    for name in ownimage.CORRUPTIONS:
        assert torch.equal(ownimage.shifted(sample.images, name, 0), sample.images), f"{name} at severity 0 changed it"
        assert not torch.equal(ownimage.shifted(sample.images, name, 5), sample.images), f"{name} at 5 left it unchanged"


def test_the_sweep_starts_at_the_clean_votes(members, sample):
    sweeps = ownimage.sweep(members, sample.images, "gaussian_blur")
    assert len(sweeps) == 6, f"the sweep has {len(sweeps)} severities, not 0–5"
    gap = (sweeps[0].probs - ownimage.votes(members, sample.images).probs).abs().max().item()
    assert gap < 1e-4, f"the sweep's severity 0 is {gap} from the votes on the image itself"


@pytest.fixture
def home(app_home):
    """The app tests' store (conftest's app_home)."""
    return app_home


def test_the_page_offers_the_samples_and_shows_votes(home):
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("pages/image.py").run()
    assert not at.exception, f"the page raised: {[e.value for e in at.exception]}"
    assert not at.error, f"the page shows errors: {[e.value for e in at.error]}"
    assert at.radio(key="image_source").value == "A test image of this run", "the page does not start on the samples"
    assert len(at.selectbox(key="image_sample").options) >= 2, "the page offers fewer than 2 test images"
    labels = {m.label for m in at.metric}
    assert "Ensemble votes" in labels, f"no ensemble vote is shown: {labels}"
    at.slider(key="image_severity").set_value(5).run()
    assert not at.exception, f"severity 5 raised: {[e.value for e in at.exception]}"
    assert len(at.dataframe) == 2, f"expected the votes and the severity tables, got {len(at.dataframe)}"


def upload_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("pages/image.py").run()
    at.radio(key="image_source").set_value("Upload a picture").run()
    assert not at.exception, f"the upload choice raised: {[e.value for e in at.exception]}"
    return at


def test_without_a_file_the_upload_asks_for_one(home):
    at = upload_page()
    assert any("Upload a picture" in i.value for i in at.info), "no upload prompt without a file"


def test_a_light_photo_upload_is_inverted_and_voted_on(home):
    at = upload_page()
    buf = io.BytesIO()
    garment(True, (300, 200)).save(buf, format="JPEG")
    at.file_uploader(key="image_upload").set_value(("shirt.jpg", buf.getvalue(), "image/jpeg"))
    at.run()
    assert not at.exception, f"the upload raised: {[e.value for e in at.exception]}"
    assert any("inverted" in i.value for i in at.info), "the page does not say the light photo was inverted"
    assert "Ensemble votes" in {m.label for m in at.metric}, "no ensemble vote for the upload"


def test_a_non_image_upload_gives_a_message_naming_it(home):
    at = upload_page()
    at.file_uploader(key="image_upload").set_value(("notes.png", b"not an image at all" * 50, "image/png"))
    at.run()
    assert not at.exception, f"a junk upload raised: {[e.value for e in at.exception]}"
    errors = [e.value for e in at.error]
    assert any("notes.png" in e for e in errors), f"no error names the file: {errors}"


def test_the_draw_choice_shows_a_canvas_when_it_is_installed(home):
    if importlib.util.find_spec("streamlit_drawable_canvas") is None:
        pytest.skip("streamlit-drawable-canvas is not installed (the page offers upload and samples)")
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("pages/image.py").run()
    assert "Draw one" in at.radio(key="image_source").options, "the canvas is installed but not offered"
    at.radio(key="image_source").set_value("Draw one").run()
    assert not at.exception, f"the draw choice raised: {[e.value for e in at.exception]}"
    assert any("Draw something" in i.value for i in at.info), "an empty canvas does not ask for a drawing"
