"""Images for `python -m nes predict`: an .npz with an `images` array, or a folder of PNG/JPEG files.

Every input is bounded before it is read: an .npz array's header (shape and dtype) is read from
its zip member without inflating the data and must fit the ensemble's input and MAX_INPUT_VALUES;
image files must be regular files (a FIFO would block forever) of at most IMAGE_MAX_BYTES.
"""
from __future__ import annotations

import io
import math
import os
import stat
import warnings
import zipfile
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_INPUT_VALUES = 1 << 26  # pixel values of one predict call: 64 Mi (256 MB as float32); split larger inputs
IMAGE_MAX_BYTES = 64 << 20  # one PNG/JPEG file (a 1024×1024 RGB image is ~3 MB uncompressed)


def load_images(path: str | Path, channels: int, height: int, width: int) -> tuple[np.ndarray, list[str] | None]:
    """Images for `predict` from an .npz (array `images`) or a folder of PNG/JPEG files.

    Returns (uint8 or float array, one name per image; None for an .npz, whose images the caller
    numbers). Files are read with PIL (PNG/JPEG only); a non-image file, an empty folder, or an
    image of the wrong size or channel count is a ValueError that names the file and says what
    the ensemble expects."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{p}: no such file or folder (give an .npz with an 'images' array or a folder of PNG/JPEG images)")
    if p.is_file():
        if p.suffix.lower() != ".npz":
            raise ValueError(f"{p}: INPUT must be an .npz file with an 'images' array or a folder of PNG/JPEG images")
        return _load_npz(p, channels, height, width), None
    if not p.is_dir():
        raise ValueError(f"{p}: not a regular file or a folder (a pipe or device?); give an .npz with an 'images' "
                         "array or a folder of PNG/JPEG images")
    files = sorted(f for f in p.iterdir() if not f.name.startswith("."))
    if not files:
        raise ValueError(f"{p}: the folder is empty; put the PNG/JPEG images to classify in it")
    if len(files) * channels * height * width > MAX_INPUT_VALUES:
        raise ValueError(f"{p}: {len(files)} files are more than one call classifies "
                         f"({MAX_INPUT_VALUES // (channels * height * width)} images of {channels}×{height}×{width}); "
                         "split the folder")
    return np.stack([_load_image(f, channels, height, width) for f in files]), [f.name for f in files]


def _npz_header(f, p: Path) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) from the .npy header at the start of stream `f` (no data read)."""
    try:
        version = np.lib.format.read_magic(f)
        read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read is None:
            raise ValueError(f"unsupported .npy format version {version}")
        return read(f)  # parses the header dict only (literal_eval); no data, no pickle
    except (ValueError, SyntaxError, EOFError, OSError, zipfile.BadZipFile) as e:
        raise ValueError(f"{p}: 'images' is not a readable .npy array ({str(e).splitlines()[0][:160]})") from None


def _check_npz_array(p: Path, shape: tuple[int, ...], dtype: np.dtype, channels: int, height: int, width: int) -> int:
    """The byte count of an `images` array of `shape` and `dtype` once both are known to fit the
    ensemble: uint8 or float, 2 to 4 dimensions, at most MAX_INPUT_VALUES values."""
    if dtype.hasobject or dtype.fields is not None or not (dtype == np.uint8 or dtype.kind == "f"):
        raise ValueError(f"{p}: 'images' has dtype {dtype}; it must be uint8 (0–255) or float (0–1) "
                         "(no object arrays or pickles are loaded)")
    per_image, c, h, w = channels * height * width, channels, height, width
    n = math.prod(shape)
    forms = {4: (shape[1:] in ((c, h, w), (h, w, c))),
             3: (shape in ((c, h, w), (h, w, c)) or (c == 1 and shape[1:] == (h, w))),
             2: (c == 1 and shape == (h, w))}  # the layouts `EnsembleModel.to_batch` accepts
    if not forms.get(len(shape), False):
        raise ValueError(f"{p}: 'images' has shape {list(shape)}; this ensemble takes images of "
                         f"{channels}×{height}×{width} (channels×height×width), as [N, C, H, W] or [N, H, W, C]")
    if n > MAX_INPUT_VALUES:
        raise ValueError(f"{p}: 'images' declares {n:,} values ({n // per_image:,} images); one call classifies at "
                         f"most {MAX_INPUT_VALUES // per_image:,} images of {channels}×{height}×{width}; split the "
                         "file (nothing was inflated)")
    return n * dtype.itemsize


def _load_npz(p: Path, channels: int, height: int, width: int) -> np.ndarray:
    """The `images` array of the .npz `p`, its header checked against the ensemble's input before a
    byte of its data is inflated (a bomb costs nothing); never unpickles."""
    try:
        with zipfile.ZipFile(p) as z:
            names = z.namelist()
            if "images.npy" not in names:
                found = ", ".join(n.removesuffix(".npy") for n in names[:10]) or "none"
                raise ValueError(f"{p}: no array named 'images' (found: {found}); save it with np.savez(path, images=array)")
            with z.open("images.npy") as f:
                shape, fortran, dtype = _npz_header(f, p)
                size = _check_npz_array(p, shape, dtype, channels, height, width)
                data = f.read(size)
    except (OSError, zipfile.BadZipFile, EOFError, RuntimeError, NotImplementedError) as e:
        raise ValueError(f"{p}: not a readable .npz file ({str(e)[:160]})") from None
    if len(data) != size:
        raise ValueError(f"{p}: 'images' holds {len(data)} bytes, its header declares {size}; the file is truncated")
    arr = np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C")
    return np.array(arr, dtype=dtype.newbyteorder("="), order="C")  # writable, native byte order


def _regular_bytes(f: Path) -> io.BytesIO:
    """The bytes of `f` if it is a regular file of at most IMAGE_MAX_BYTES (opened without blocking,
    so a FIFO or device named like an image is refused instead of waited on forever)."""
    try:
        fd = os.open(f, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise ValueError(f"{f}: cannot be read ({e.strerror})") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{f}: not a regular file (a pipe, socket or device); the folder must hold only "
                             "PNG/JPEG image files; move it out of the folder")
        data = fh.read(IMAGE_MAX_BYTES + 1)
    if len(data) > IMAGE_MAX_BYTES:
        raise ValueError(f"{f}: larger than {IMAGE_MAX_BYTES >> 20} MB, more than an image this ensemble takes")
    return io.BytesIO(data)


def _open_image(src: io.BytesIO, f: Path, height: int, width: int):
    """The PIL image of a PNG/JPEG file, opened (header only) and checked to be `width`×`height`
    before any pixel is decoded: a huge or decompression-bomb image costs nothing."""
    from PIL import Image, UnidentifiedImageError  # only `predict` on a folder needs PIL

    try:
        with warnings.catch_warnings():  # PIL only warns below 2× its pixel limit: refuse those too
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(src)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ValueError(f"{f}: declares more than {Image.MAX_IMAGE_PIXELS:,} pixels (not decoded); this "
                         f"ensemble takes {width}×{height} images; resize it first") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"{f}: not a readable PNG/JPEG image ({e})") from None
    try:
        if im.format not in ("PNG", "JPEG"):
            raise ValueError(f"{f}: a {im.format} image; only PNG and JPEG are read")
        if im.size != (width, height):
            raise ValueError(f"{f}: is {im.size[0]}×{im.size[1]} pixels; this ensemble takes {width}×{height} "
                             "images; resize it first")
    except ValueError:
        im.close()
        raise
    return im


def _read_pixels(src: io.BytesIO, f: Path, height: int, width: int) -> np.ndarray:
    """The pixels of a `width`×`height` PNG/JPEG file as [H, W] or [H, W, C] uint8 (palette and
    alpha dropped)."""
    from PIL import UnidentifiedImageError

    with _open_image(src, f, height, width) as im:
        try:
            im.load()
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise ValueError(f"{f}: not a readable PNG/JPEG image ({e})") from None
        img = im
        if img.mode in ("RGBA", "LA", "P", "PA"):
            img = img.convert("RGBA" if img.mode in ("P", "PA", "RGBA") else "LA")
            img = img.convert("RGB" if img.mode == "RGBA" else "L")
        if img.mode in ("I;16", "I", "F", "1"):
            img = img.convert("L")
        return np.asarray(img)


def _load_image(f: Path, channels: int, height: int, width: int) -> np.ndarray:
    """One image file as uint8 [C, H, W], checked against the ensemble's input."""
    if f.is_dir() or f.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"{f}: not a PNG/JPEG image (the folder must hold only .png/.jpg/.jpeg files); "
                         "move it out of the folder")
    a = _read_pixels(_regular_bytes(f), f, height, width)
    a = a[:, :, None] if a.ndim == 2 else a
    if a.shape[2] == 3 and channels == 1 and (a == a[:, :, :1]).all():
        a = a[:, :, :1]  # grayscale saved as RGB
    if a.shape[2] != channels:
        kind = "grayscale (1 channel)" if channels == 1 else f"{channels}-channel (RGB)"
        raise ValueError(f"{f}: has {a.shape[2]} channels; this ensemble takes {kind} images; convert it first")
    return a.astype(np.uint8).transpose(2, 0, 1)
