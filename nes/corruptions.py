"""Shifted test sets made here: deterministic image corruptions at severities 1–5.

Severity tables are those of MNIST-C (Mu & Gilmer 2019, github.com/google-research/mnist-c,
`corruptions.py`) for 28×28 images and of CIFAR-10-C (Hendrycks & Dietterich 2019,
github.com/hendrycks/robustness, `make_cifar_c.py`) for 32×32 images; other sizes (digits, 8×8) use
MNIST-C's with every length in pixels scaled by size/28. CIFAR-10-C has no geometric corruptions:
rotation, translation, shear and scale take MNIST-C's table there too (lengths scaled to 32 px).

The NES protocol keeps the corruptions that select and calibrate apart from those that test, so
the types are split in two sets that never overlap: `VAL_CORRUPTIONS` (model selection, a re-fitted
temperature) and `TEST_CORRUPTIONS` (the reported numbers).

Every function maps float images x [N, C, H, W] in [0, 1] to corrupted images of the same shape in
[0, 1]; `corrupt` wraps them for uint8 images and draws all randomness from one seeded
`torch.Generator`, so the same (seed, corruption, severity) gives the same images on every machine.
"""
from __future__ import annotations

import math
import zlib
from typing import Callable

import torch
import torch.nn.functional as F

SEVERITIES = (1, 2, 3, 4, 5)
VERSION = 1  # bump when an image changes: caches of shifted sets and their scores are keyed by it

# name: (MNIST-C table for 28×28, CIFAR-10-C table for 32×32), one value per severity 1..5
TABLES: dict[str, tuple[tuple, tuple]] = {
    "gaussian_noise": ((.08, .12, .18, .26, .38), (.04, .06, .08, .09, .10)),      # noise std
    "shot_noise": ((60, 25, 12, 5, 3), (500, 250, 100, 75, 50)),                    # photons at white
    "impulse_noise": ((.03, .06, .09, .17, .27), (.01, .02, .03, .05, .07)),        # salt & pepper fraction
    "speckle_noise": ((.15, .2, .35, .45, .6), (.06, .1, .12, .16, .2)),            # multiplicative std
    "gaussian_blur": ((1, 2, 3, 4, 6), (.4, .6, .7, .8, 1)),                        # sigma, pixels
    "contrast": ((.4, .3, .2, .1, .05), (.75, .5, .4, .3, .15)),                    # kept fraction of contrast
    "brightness": ((.1, .2, .3, .4, .5), (.05, .1, .15, .2, .3)),                   # added to HSV value
    "pixelate": ((.6, .5, .4, .3, .25), (.95, .9, .85, .75, .65)),                  # kept resolution
    "rotate": ((.2, .4, .6, .8, 1.), None),                                         # radians, random sign
    "translate": ((1, 2, 3, 4, 5), None),                                           # pixels each axis, random signs
    "shear": ((.2, .4, .6, .8, 1.), None),                                          # radians, random sign
    "scale": ((1 / .9, 1 / .8, 1 / .7, 1 / .6, 1 / .5), None),                      # zoom out by 1/c
}
TEST_CORRUPTIONS = ("gaussian_noise", "shot_noise", "gaussian_blur", "contrast", "brightness",
                    "rotate", "translate", "pixelate")
VAL_CORRUPTIONS = ("impulse_noise", "speckle_noise", "shear", "scale")
CORRUPTIONS = TEST_CORRUPTIONS + VAL_CORRUPTIONS
_LENGTHS = {"gaussian_blur", "translate"}  # table values in pixels: scaled with the image size


class CorruptionError(ValueError):
    """An unknown corruption or severity, or images of the wrong kind."""


def level(name: str, severity: int, size: int) -> float:
    """The table value of corruption `name` at `severity` for square images of side `size`."""
    if name not in TABLES:
        raise CorruptionError(f"unknown corruption {name!r}; choose one of: {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise CorruptionError(f"severity must be one of 1..5, got {severity!r}")
    mnist, cifar = TABLES[name]
    if size == 32 and cifar is not None:
        return float(cifar[severity - 1])
    value = float(mnist[severity - 1])
    return value * size / 28 if name in _LENGTHS else value


# ----------------------------------------------------------------------------- noise
def _gaussian_noise(x: torch.Tensor, c: float, g: torch.Generator) -> torch.Tensor:
    return x + c * torch.randn(x.shape, generator=g)


def _shot_noise(x: torch.Tensor, c: float, g: torch.Generator) -> torch.Tensor:
    return torch.poisson(x * c, generator=g) / c


def _impulse_noise(x: torch.Tensor, c: float, g: torch.Generator) -> torch.Tensor:
    hit = torch.rand(x.shape, generator=g) < c  # a fraction c of the pixels, half salt, half pepper
    salt = (torch.rand(x.shape, generator=g) < 0.5).to(x.dtype)
    return torch.where(hit, salt, x)


def _speckle_noise(x: torch.Tensor, c: float, g: torch.Generator) -> torch.Tensor:
    return x + x * c * torch.randn(x.shape, generator=g)


# ----------------------------------------------------------------------------- photometric
def _gaussian_blur(x: torch.Tensor, sigma: float, g: torch.Generator) -> torch.Tensor:
    """Separable Gaussian, radius 4σ (scikit-image's truncation), edges replicated."""
    r = max(1, math.ceil(4 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    n, c, h, w = x.shape
    y = F.pad(x.reshape(n * c, 1, h, w), (r, r, r, r), mode="replicate")
    y = F.conv2d(F.conv2d(y, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))
    return y.reshape(n, c, h, w)


def _contrast(x: torch.Tensor, c: float, g: torch.Generator) -> torch.Tensor:
    mean = x.mean(dim=(2, 3), keepdim=True)  # per image and channel, as both tables' code
    return (x - mean) * c + mean


def _brightness(x: torch.Tensor, c: float, g: torch.Generator) -> torch.Tensor:
    """HSV value + c, hue and saturation kept: every channel scaled by new V / V (black → grey c)."""
    v = x.amax(dim=1, keepdim=True)
    nv = (v + c).clamp(0, 1)
    return torch.where(v > 0, x * nv / v.clamp_min(1e-12), nv.expand_as(x))


def _pixelate(x: torch.Tensor, c: float, g: torch.Generator) -> torch.Tensor:
    h, w = x.shape[2:]
    small = F.interpolate(x, size=(max(1, int(h * c)), max(1, int(w * c))), mode="area")  # box filter down
    return F.interpolate(small, size=(h, w), mode="nearest")  # box filter up


# ----------------------------------------------------------------------------- geometric
def _warp(x: torch.Tensor, linear: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """output(p) = input(A·p + t) about the image centre, bilinear, zeros outside: linear A [N, 2, 2]
    in pixels (square images), shift t [N, 2] in pixels (x, y)."""
    n, _, h, w = x.shape
    theta = torch.cat([linear, (2 * shift / torch.tensor([w, h], dtype=x.dtype))[:, :, None]], dim=2)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _sign(n: int, g: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, (n,), generator=g).to(torch.float32) * 2 - 1


def _rotate(x: torch.Tensor, c: float, g: torch.Generator) -> torch.Tensor:
    a = c * _sign(len(x), g)
    cos, sin = torch.cos(a), torch.sin(a)
    linear = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    return _warp(x, linear, torch.zeros(len(x), 2))


def _shear(x: torch.Tensor, c: float, g: torch.Generator) -> torch.Tensor:
    a = c * _sign(len(x), g)  # scikit-image's AffineTransform(shear=a): [[1, −sin a], [0, cos a]]
    one, zero = torch.ones_like(a), torch.zeros_like(a)
    linear = torch.stack([torch.stack([one, -torch.sin(a)], 1), torch.stack([zero, torch.cos(a)], 1)], 1)
    return _warp(x, linear, torch.zeros(len(x), 2))


def _scale(x: torch.Tensor, c: float, g: torch.Generator) -> torch.Tensor:
    linear = torch.eye(2).expand(len(x), 2, 2) * c  # sampling c× further out: the image shrinks by 1/c
    return _warp(x, linear, torch.zeros(len(x), 2))


def _translate(x: torch.Tensor, c: float, g: torch.Generator) -> torch.Tensor:
    shift = c * torch.stack([_sign(len(x), g), _sign(len(x), g)], 1)
    return _warp(x, torch.eye(2).expand(len(x), 2, 2), shift)


_FUNCS: dict[str, Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]] = {
    "gaussian_noise": _gaussian_noise, "shot_noise": _shot_noise, "impulse_noise": _impulse_noise,
    "speckle_noise": _speckle_noise, "gaussian_blur": _gaussian_blur, "contrast": _contrast,
    "brightness": _brightness, "pixelate": _pixelate, "rotate": _rotate, "translate": _translate,
    "shear": _shear, "scale": _scale,
}


def corruption_seed(seed: int, name: str, severity: int) -> int:
    """The generator seed of one (seed, corruption, severity): stable across runs and machines."""
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode()) * 7 + severity) % (2 ** 63)


def corrupt(images: torch.Tensor, name: str, severity: int, seed: int = 0) -> torch.Tensor:
    """Corruption `name` at `severity` (1–5) of uint8 images [N, C, H, W] → uint8 [N, C, H, W]
    (CPU), the same for the same seed. Images must be square (every table is for square images)."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise CorruptionError(f"corrupt takes uint8 [N, C, H, W] images, got {images.dtype} {list(images.shape)}")
    h, w = images.shape[2:]
    if h != w:
        raise CorruptionError(f"corruption tables are for square images, got {h}×{w}")
    c = level(name, severity, h)
    g = torch.Generator().manual_seed(corruption_seed(seed, name, severity))
    x = images.detach().cpu().to(torch.float32) / 255
    with torch.no_grad():
        y = _FUNCS[name](x, c, g)
    return (y.clamp(0, 1) * 255).round().to(torch.uint8)
