"""Images for `python -m nes predict`: an .npz with an `images` array, or a folder of PNG/JPEG files."""
from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


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
        return _load_npz(p), None
    files = sorted(f for f in p.iterdir() if not f.name.startswith("."))
    if not files:
        raise ValueError(f"{p}: the folder is empty; put the PNG/JPEG images to classify in it")
    return np.stack([_load_image(f, channels, height, width) for f in files]), [f.name for f in files]


def _load_npz(p: Path) -> np.ndarray:
    try:
        with np.load(p, allow_pickle=False) as z:
            if "images" not in z.files:
                raise ValueError(f"{p}: no array named 'images' (found: {', '.join(z.files) or 'none'}); "
                                 "save it with np.savez(path, images=array)")
            return z["images"]
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"{p}: not a readable .npz file ({e})") from None
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise ValueError(f"{p}: 'images' is an object array; it must be a numeric array (no pickles are loaded)") from None
        raise


def _open_image(f: Path, height: int, width: int):
    """The PIL image of a PNG/JPEG file, opened (header only) and checked to be `width`×`height`
    before any pixel is decoded: a huge or decompression-bomb image costs nothing."""
    from PIL import Image, UnidentifiedImageError  # only `predict` on a folder needs PIL

    try:
        with warnings.catch_warnings():  # PIL only warns below 2× its pixel limit: refuse those too
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(f)
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


def _read_pixels(f: Path, height: int, width: int) -> np.ndarray:
    """The pixels of a `width`×`height` PNG/JPEG file as [H, W] or [H, W, C] uint8 (palette and
    alpha dropped)."""
    from PIL import UnidentifiedImageError

    with _open_image(f, height, width) as im:
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
    a = _read_pixels(f, height, width)
    a = a[:, :, None] if a.ndim == 2 else a
    if a.shape[2] == 3 and channels == 1 and (a == a[:, :, :1]).all():
        a = a[:, :, :1]  # grayscale saved as RGB
    if a.shape[2] != channels:
        kind = "grayscale (1 channel)" if channels == 1 else f"{channels}-channel (RGB)"
        raise ValueError(f"{f}: has {a.shape[2]} channels; this ensemble takes {kind} images; convert it first")
    return a.astype(np.uint8).transpose(2, 0, 1)
