"""CIFAR-10-C corruptions of 32x32 images, with the published parameters, seeded.

Hendrycks & Dietterich ("Benchmarking neural network robustness to common corruptions and perturbations", ICLR
2019) made CIFAR-10-C with ``make_cifar_c.py`` (github.com/hendrycks/robustness, ImageNet-C/create_c/): fifteen
corruptions at five severities, with parameters chosen for 32x32 images. The packages that reproduce them cannot be
used here: ``imagecorruptions`` 1.1.2 targets ImageNet-size images and calls scikit-image's removed ``multichannel``
argument; ``corrupt-tta`` keeps the ImageNet parameters; scikit-image, OpenCV and ImageMagick (Wand), which
make_cifar_c.py calls, are not dependencies of the workbook. So each corruption below is written again from
make_cifar_c.py, with its exact parameters, on numpy, scipy.ndimage (``gaussian_filter`` is what scikit-image's
``gaussian`` calls; ``correlate`` with border "mirror" is OpenCV's ``filter2D``), torch's bilinear interpolation
(scipy's order-1 ``zoom``, which the script calls, much faster), matplotlib's HSV conversion and Pillow (the script's
own JPEG and resize).

Implemented (eleven of the fifteen): noise: gaussian_noise, shot_noise, impulse_noise; blur: defocus_blur,
glass_blur, zoom_blur; weather: brightness, fog; digital: contrast, pixelate, jpeg_compression. Left out, because
they cannot be reproduced faithfully without the script's libraries or files: motion_blur and snow (ImageMagick's
motion blur), frost (the script's frost photographs), elastic_transform (OpenCV's affine warp with its border and
fixed-point interpolation rules).

Faithful means: the same operation with the same parameters on the same [0, 1] floats, quantised as the script saves
its images (``np.uint8`` of values in [0, 255], which truncates). Random draws use numpy's Generator seeded from
(seed, severity, corruption), so results are reproducible but are not the CIFAR-10-C files' draws; the same
distributions otherwise, with these details: impulse noise salts or peppers each value independently, as
scikit-image's ``random_noise(mode="s&p")`` does now; glass blur keeps the script's two quirks (offsets drawn from
{-1, 0} only, by ``randint(-1, 1)``, and a "swap" of two numpy views that copies the neighbour into the pixel and
leaves the neighbour unchanged).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

SIZE = 32


def _out(x: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> uint8 as make_cifar_c.py saves them: np.uint8(clip(x, 0, 1) * 255), truncating."""
    return (np.clip(x, 0, 1) * 255).astype(np.uint8)


def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    """scikit-image's ``gaussian(x, sigma, multichannel=True)`` on (N, H, W, C) floats: scipy's gaussian_filter over
    H and W only, border "nearest", truncated at 4 sigma."""
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode="nearest", truncate=4.0)


# ---------------------------------------------------------------------------------------------- noise
def gaussian_noise(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    return _out(x / 255.0 + rng.normal(size=x.shape, scale=c))


def shot_noise(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    return _out(rng.poisson(x / 255.0 * c) / c)


def impulse_noise(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    out = x / 255.0
    flipped = rng.random(x.shape) < c
    salted = rng.random(x.shape) < 0.5
    out[flipped & salted] = 1.0
    out[flipped & ~salted] = 0.0
    return _out(out)


# ---------------------------------------------------------------------------------------------- blur
def _cv2_gaussian_kernel3(sigma: float) -> np.ndarray:
    """OpenCV's getGaussianKernel(3, sigma): exp(-k^2 / (2 sigma^2)) at k = -1, 0, 1, normalised."""
    g = np.exp(-(np.arange(-1, 2) ** 2) / (2.0 * sigma ** 2))
    return g / g.sum()


def disk(radius: float, alias_blur: float) -> np.ndarray:
    """make_cifar_c.py's ``disk`` for radius <= 8: the 17x17 aliased disk X^2 + Y^2 <= r^2, normalised, blurred by
    a 3x3 Gaussian of std `alias_blur` (cv2.GaussianBlur; the disk lies far from the array's border, so OpenCV's
    border rule never applies)."""
    from scipy.signal import convolve2d

    if radius > 8:
        raise ValueError("the 32x32 parameters use radii <= 8 only")
    L = np.arange(-8, 9)
    X, Y = np.meshgrid(L, L)
    d = ((X ** 2 + Y ** 2) <= radius ** 2).astype(np.float64)
    d /= d.sum()
    g = _cv2_gaussian_kernel3(alias_blur)
    return convolve2d(d, np.outer(g, g), mode="same")


def defocus_blur(x: np.ndarray, c: tuple[float, float], rng=None) -> np.ndarray:
    from scipy.ndimage import correlate

    kernel = disk(*c)
    # drop the kernel's all-zero border rows and columns: exact, and ~10x less work than the full 17x17
    rows, cols = np.flatnonzero(kernel.any(1)), np.flatnonzero(kernel.any(0))
    r = max(8 - rows[0], rows[-1] - 8, 8 - cols[0], cols[-1] - 8)
    kernel = kernel[8 - r : 9 + r, 8 - r : 9 + r]
    # cv2.filter2D per channel with its default border BORDER_REFLECT_101 = scipy's "mirror"
    return _out(correlate(x / 255.0, kernel[None, :, :, None], mode="mirror"))


def glass_blur(x: np.ndarray, c: tuple[float, int, int], rng: np.random.Generator) -> np.ndarray:
    sigma, delta, iterations = c
    y = _out(_gaussian(x / 255.0, sigma))
    n = np.arange(x.shape[0])
    for _ in range(iterations):
        for h in range(SIZE - delta, delta, -1):
            for w in range(SIZE - delta, delta, -1):
                dx, dy = rng.integers(-delta, delta, size=(2, x.shape[0]))  # numpy's randint(-d, d): [-d, d)
                y[n, h, w] = y[n, h + dy, w + dx]
    return _out(_gaussian(y / 255.0, sigma))


def zoom_linear(x: np.ndarray, z: float) -> np.ndarray:
    """scipy.ndimage.zoom(x, (1, z, z, 1), order=1) of (N, H, W, C) floats: output side round(H * z), output pixel o
    read at input coordinate o (H - 1) / (out - 1), bilinear. Written with torch's bilinear interpolation, which
    maps coordinates the same way with align_corners=True, because scipy's spline code also interpolates along the
    image and channel axes (zoom 1) and takes over a minute for the 85 zooms of one zoom-blur pass over 846 images;
    tests check it against scipy."""
    import torch
    import torch.nn.functional as F

    out = int(round(x.shape[1] * z))
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    return F.interpolate(t, size=(out, out), mode="bilinear", align_corners=True).numpy().transpose(0, 2, 3, 1)


def _clipped_zoom(x: np.ndarray, z: float) -> np.ndarray:
    ch = int(np.ceil(SIZE / z))
    top = (SIZE - ch) // 2
    out = zoom_linear(x[:, top : top + ch, top : top + ch], z)
    trim = (out.shape[1] - SIZE) // 2
    return out[:, trim : trim + SIZE, trim : trim + SIZE]


def zoom_blur(x: np.ndarray, c: float, rng=None) -> np.ndarray:
    # the script's zoom factors: np.arange(1, c, 0.01), c in 1.06 ... 1.26 (float steps kept as numpy makes them)
    factors = np.arange(1, c, 0.01)
    x = (x / 255.0).astype(np.float32)
    out = np.zeros_like(x)
    for z in factors:
        out += _clipped_zoom(x, z)
    return _out((x + out) / (len(factors) + 1))


# ---------------------------------------------------------------------------------------------- weather
def brightness(x: np.ndarray, c: float, rng=None) -> np.ndarray:
    from matplotlib.colors import hsv_to_rgb, rgb_to_hsv

    hsv = rgb_to_hsv(x / 255.0)
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return _out(hsv_to_rgb(hsv))


def plasma_fractal(rng: np.random.Generator, mapsize: int = SIZE, wibbledecay: float = 3) -> np.ndarray:
    """make_cifar_c.py's diamond-square height map: (mapsize, mapsize) floats in [0, 1]."""
    maparray = np.empty((mapsize, mapsize), dtype=np.float64)
    maparray[0, 0] = 0
    stepsize, wibble = mapsize, 100.0

    def wibbledmean(array):
        return array / 4 + wibble * rng.uniform(-wibble, wibble, array.shape)

    while stepsize >= 2:
        half = stepsize // 2
        corners = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        square = corners + np.roll(corners, shift=-1, axis=0)
        square += np.roll(square, shift=-1, axis=1)
        maparray[half:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(square)
        dr = maparray[half:mapsize:stepsize, half:mapsize:stepsize]
        ul = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        lt = (dr + np.roll(dr, 1, axis=0)) + (ul + np.roll(ul, -1, axis=1))
        maparray[0:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(lt)
        tt = (dr + np.roll(dr, 1, axis=1)) + (ul + np.roll(ul, -1, axis=0))
        maparray[half:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(tt)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / maparray.max()


def fog(x: np.ndarray, c: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    out = np.empty(x.shape, dtype=np.uint8)
    for i, im in enumerate(x):  # one fractal and one maximum per image, as the script does
        im = im / 255.0
        max_val = im.max()
        im = im + c[0] * plasma_fractal(rng, wibbledecay=c[1])[:SIZE, :SIZE, None]
        out[i] = _out(im * max_val / (max_val + c[0]))
    return out


# ---------------------------------------------------------------------------------------------- digital
def contrast(x: np.ndarray, c: float, rng=None) -> np.ndarray:
    x = x / 255.0
    means = x.mean(axis=(1, 2), keepdims=True)
    return _out((x - means) * c + means)


def pixelate(x: np.ndarray, c: float, rng=None) -> np.ndarray:
    from PIL import Image

    side = int(SIZE * c)
    return np.stack([np.asarray(Image.fromarray(im).resize((side, side), Image.BOX).resize((SIZE, SIZE), Image.BOX))
                     for im in x])


def jpeg_compression(x: np.ndarray, c: int, rng=None) -> np.ndarray:
    import io

    from PIL import Image

    out = []
    for im in x:
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, "JPEG", quality=c)
        out.append(np.asarray(Image.open(buf).convert("RGB")))
    return np.stack(out)


# ---------------------------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Corruption:
    """One corruption: its CIFAR-10-C family, the parameter of each severity 1-5 (make_cifar_c.py's list ``c``) and
    the function (images (N, 32, 32, 3) uint8, parameter, numpy Generator) -> (N, 32, 32, 3) uint8."""

    name: str
    family: str
    parameters: tuple[Any, ...]
    apply: Callable[[np.ndarray, Any, np.random.Generator], np.ndarray]
    random: bool


CORRUPTIONS: dict[str, Corruption] = {c.name: c for c in (
    Corruption("gaussian_noise", "noise", (0.04, 0.06, 0.08, 0.09, 0.10), gaussian_noise, True),
    Corruption("shot_noise", "noise", (500, 250, 100, 75, 50), shot_noise, True),
    Corruption("impulse_noise", "noise", (0.01, 0.02, 0.03, 0.05, 0.07), impulse_noise, True),
    Corruption("defocus_blur", "blur", ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)), defocus_blur,
               False),
    Corruption("glass_blur", "blur", ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
               glass_blur, True),
    Corruption("zoom_blur", "blur", (1.06, 1.11, 1.16, 1.21, 1.26), zoom_blur, False),
    Corruption("brightness", "weather", (0.05, 0.1, 0.15, 0.2, 0.3), brightness, False),
    Corruption("fog", "weather", ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)), fog, True),
    Corruption("contrast", "digital", (0.75, 0.5, 0.4, 0.3, 0.15), contrast, False),
    Corruption("pixelate", "digital", (0.95, 0.9, 0.85, 0.75, 0.65), pixelate, False),
    Corruption("jpeg_compression", "digital", (80, 65, 58, 50, 40), jpeg_compression, False),
)}
SEVERITIES = (1, 2, 3, 4, 5)


def corrupt(images: np.ndarray, name: str, severity: int, *, seed: int = 0) -> np.ndarray:
    """Corruption `name` at `severity` (1-5) of images (N, 32, 32, 3) uint8 RGB -> (N, 32, 32, 3) uint8.

    Deterministic: the random draws come from numpy's Generator seeded with (seed, severity, corruption name), so
    the same images, name, severity and seed always give the same output.
    """
    if name not in CORRUPTIONS:
        import difflib

        close = difflib.get_close_matches(name, list(CORRUPTIONS), n=3, cutoff=0.4)
        raise ValueError(f"unknown corruption {name!r}; valid: {list(CORRUPTIONS)}" + (f"; closest: {close}"
                                                                                     if close else ""))
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}; got {severity!r}")
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (SIZE, SIZE, 3):
        raise ValueError(f"corruptions take (N, 32, 32, 3) uint8 RGB images (CIFAR-10's parameters are for 32x32); "
                         f"got {images.shape} {images.dtype}")
    spec = CORRUPTIONS[name]
    rng = np.random.default_rng([int(seed), int(severity), zlib.crc32(name.encode())])
    return spec.apply(images, spec.parameters[severity - 1], rng)
