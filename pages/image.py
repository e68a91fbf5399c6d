"""Your own image: each member's vote and the ensemble's on an uploaded or drawn image.

Streamlit glue only: decoding, preprocessing, the members and their votes are nes.explorer.ownimage.
"""
import numpy as np
import streamlit as st

from nes.explorer import ownimage
from pages._state import route_through_app, selected_run
from pages._widgets import friendly, teach, url_choice

route_through_app()

try:  # optional: a drawing canvas (pip install streamlit-drawable-canvas)
    from streamlit_drawable_canvas import st_canvas
except Exception:  # not installed, or a Streamlit it does not support: upload and samples still work
    st_canvas = None

SAMPLE, UPLOAD, DRAW = "A test image of this run", "Upload a picture", "Draw one"
ZOOM = 8  # screen pixels per image pixel

st.header("Your own image")
teach("What happens to your picture?", r"""
The members only ever saw the dataset's images, so your picture is first made into one: for
Fashion-MNIST a **28×28 grayscale** image of a **light garment on a black background** (a photo on a
light background is inverted, then cropped to the object, centered and resized); for CIFAR a 32×32
colour image. Each member then votes exactly as it did on its test set (same crop, same
normalization, same mirror averaging), and the **ensemble's vote is the mean of the members'
probabilities**. The severity slider applies one of the dataset-shift corruptions (noise, blur,
contrast, …) to the image: watch where the members start to disagree and whether the ensemble holds.""")


@st.cache_resource(show_spinner="Loading the members…", max_entries=4)
def _members(run_id: str, stamp: tuple) -> ownimage.Members:
    return ownimage.load_members(run_id)


@st.cache_resource(show_spinner=False, max_entries=4)
def _samples(run_id: str, stamp: tuple) -> list:
    return ownimage.samples(run_id)


def _big(images) -> np.ndarray:
    """uint8 [1, C, H, W] → an [H·ZOOM, W·ZOOM(, 3)] array that shows the pixels as squares."""
    a = images[0].permute(1, 2, 0).numpy()
    a = a[:, :, 0] if a.shape[2] == 1 else a
    return np.kron(a, np.ones((ZOOM, ZOOM) + (() if a.ndim == 2 else (1,)), dtype=np.uint8))


def _pick_sample(run_id: str, stamp: tuple):
    found = _samples(run_id, stamp)
    if not found:
        st.info("This run's test images are not on this machine (no shift images cached, no dataset): "
                "upload a picture instead.")
        st.stop()
    url_choice("image_sample", range(len(found)), "test image")
    i = st.selectbox("Test image", range(len(found)), key="image_sample", bind="query-params",
                     format_func=lambda k: f"{found[k].label} (test image #{found[k].index})",
                     help="One image of each class from the run's own test set (the images its shift report used).")
    return found[i].images, f"a test image whose true class is **{found[i].label}**"


def _from_bytes(data: bytes, name: str, info):
    """Decode and preprocess; a bad file stops the page with a message that names it."""
    try:
        prepared = ownimage.preprocess(ownimage.decode(data, name), info)
    except ownimage.ImageError as e:
        st.error(str(e))
        st.stop()
    if prepared.inverted:
        st.info("Your picture has a light background, so it was **inverted**: the dataset's images are "
                "light objects on black.")
    return prepared.images, prepared.note


def _pick_upload(info):
    f = st.file_uploader("A PNG or JPEG picture", type=["png", "jpg", "jpeg"], key="image_upload",
                         help=f"At most {ownimage.MAX_BYTES >> 20} MB. One object, filling most of the frame, "
                              "works best.")
    if f is None:
        st.info("Upload a picture, or pick a test image of this run.")
        st.stop()
    return _from_bytes(f.getvalue(), f.name, info)


def _pick_drawing(info):
    st.caption("Draw in white on black, as the dataset's images are; fill most of the square.")
    res = st_canvas(stroke_width=18, stroke_color="#ffffff", background_color="#000000", height=280, width=280,
                    drawing_mode="freedraw", return_image_data=True, key="image_canvas")
    data = res.image_bytes if res is not None else None
    if not data or not (res.json_data or {}).get("objects"):
        st.info("Draw something in the square.")
        st.stop()
    return _from_bytes(data, "your drawing", info)


def _source(run_id: str, stamp: tuple, info):
    choices = [SAMPLE, UPLOAD] + ([DRAW] if st_canvas is not None else [])
    url_choice("image_source", choices, "image source")
    how = st.radio("Image", choices, horizontal=True, key="image_source", bind="query-params")
    if st_canvas is None:
        st.caption("Drawing needs `streamlit-drawable-canvas` (not installed here): upload or pick a test image.")
    if how == SAMPLE:
        return _pick_sample(run_id, stamp)
    return _pick_upload(info) if how == UPLOAD else _pick_drawing(info)


def _votes_panel(sweeps, severity: int) -> None:
    v = sweeps[severity]
    rows = v.rows()
    ens = rows[-1]
    c1, c2, c3 = st.columns(3)
    c1.metric("Ensemble votes", ens["class"])
    c2.metric("Its probability", f"{ens['probability']:.2f}", help="The mean of the members' probabilities for it.")
    c3.metric("Members agreeing with it", f"{v.agreement()}/{len(v.names)}")
    st.dataframe(rows, hide_index=True, width="stretch",
                 column_config={"who": "member", "class": "top class", "probability": "its probability"})


def _load(run_id: str) -> tuple[tuple, ownimage.Members]:
    """The run's members, loaded once per state of their weights; a broken run stops the page."""
    with friendly("load this run's members"):
        stamp = ownimage.members_stamp(run_id)
        return stamp, _members(run_id, stamp)
    st.stop()


run_id = selected_run()
stamp, ms = _load(run_id)

images, what = _source(run_id, stamp, ms.info)
c1, c2 = st.columns(2)
with c1:
    url_choice("image_corruption", ownimage.CORRUPTIONS, "corruption")
corruption = c1.selectbox("Corruption", ownimage.CORRUPTIONS, key="image_corruption", bind="query-params",
                          format_func=lambda c: c.replace("_", " "),
                          help="The dataset-shift issue's test corruptions, with its severity tables.")
with c2:
    url_choice("image_severity", range(6), "severity")
severity = c2.slider("Severity", 0, 5, 0, key="image_severity", bind="query-params",
                     help="0 = your image as it is; 5 = the strongest.")
with friendly("score the image"):
    sweeps = ownimage.sweep(ms, images, corruption)
    shown = ownimage.shifted(images, corruption, severity)
    left, right = st.columns([1, 2])
    left.image(_big(shown), caption=f"What the members see: {corruption.replace('_', ' ')} at severity {severity}"
               if severity else "What the members see", clamp=True)
    left.caption(what[0].upper() + what[1:] if what else "")
    with right:
        _votes_panel(sweeps, severity)
    st.markdown(f"**Across severities** ({corruption.replace('_', ' ')}): the ensemble's vote, and each "
                "member's probability of the class the ensemble picks on the clean image.")
    st.dataframe(ownimage.sweep_rows(sweeps), hide_index=True, width="stretch")
