"""Procedural item images for the simulator: what a shape looks like, in which palette.

An item's image shows two latent factors of :mod:`cfcore.simulate`:

- its **content class** — a shape family (disc, square, triangle, plus, ring, star, bars,
  crescent, diamond, cross, tee, frame), solid or, for classes 12…23, striped;
- its **style** — a palette (foreground and background colours) and a background kind (flat,
  gradient or waves).

Per item, the shape is jittered (scale, rotation ±12°, position), the colours shift a little, the
background's direction and phase vary and independent (uniform) pixel noise is added, so the class is not
readable from the mean colour (the palette is the style's, and the shape's area varies with its
scale) but a small CNN sees it at 32 px.

Shapes are signed distance functions of the item's shape coordinates (negative inside), turned
into an anti-aliased coverage of the pixel grid, so rendering is a few vectorised numpy passes
per batch of items; the pixel noise comes from a per-item generator seeded by
``(seed, item)``, so one item's image never depends on which other items are rendered with it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cfcore.errors import InputError

SHAPES = (
    "disc",
    "square",
    "triangle",
    "plus",
    "ring",
    "star",
    "bars",
    "crescent",
    "diamond",
    "cross",
    "tee",
    "frame",
)
FILLS = ("solid", "striped")
#: the renderer draws at most this many distinguishable content classes
MAX_CLASSES = len(SHAPES) * len(FILLS)
BACKGROUNDS = ("flat", "gradient", "waves")

#: per-item jitter, one column each in the ``params`` array (:func:`draw_params`)
PARAM_NAMES = (
    "scale",  # shape size: 1 = the shape spans the whole image
    "rotation",  # radians
    "dx",  # shape centre, in image units (the image spans -1…1)
    "dy",
    "hue_shift",  # added to both palette hues
    "value_shift",  # multiplies both palette colours by (1 + value_shift)
    "bg_angle",  # direction of the gradient / waves
    "bg_phase",  # phase of the waves
)
_MAX_ROTATION = np.deg2rad(12.0)
_NOISE_STREAM = 7  # the third word of the per-item noise generator's seed


def class_names(n_classes: int) -> list[str]:
    """Names of the first ``n_classes`` content classes: shapes, then striped shapes."""
    check_n_classes(n_classes)
    names = list(SHAPES) + [f"striped-{s}" for s in SHAPES]
    return names[:n_classes]


def check_n_classes(n_classes: int) -> None:
    if not 1 <= n_classes <= MAX_CLASSES:
        raise InputError(
            f"n_classes={n_classes}: the image renderer draws 1…{MAX_CLASSES} distinct shape "
            "classes (render no images for more)"
        )


def style_names(n_styles: int) -> list[str]:
    """``palette<s>-<background>`` for each style."""
    return [f"palette{s}-{BACKGROUNDS[s % len(BACKGROUNDS)]}" for s in range(n_styles)]


def palettes(n_styles: int) -> np.ndarray:
    """Foreground and background RGB colours of each style, float32 ``(n_styles, 2, 3)`` in 0…1.

    Hues are spread by the golden angle, so any number of styles stays distinguishable;
    foregrounds are bright and saturated, backgrounds the complementary hue, darker and duller
    (even styles) or lighter (odd styles).
    """
    s = np.arange(n_styles, dtype=np.float64)
    hue = (s * 0.618033988749895) % 1.0
    fg = _hsv_to_rgb(hue, np.full_like(s, 0.8), np.full_like(s, 0.95))
    dark = (s % 2) == 0
    bg = _hsv_to_rgb((hue + 0.5) % 1.0, np.full_like(s, 0.45), np.where(dark, 0.3, 0.75))
    return np.stack([fg, bg], axis=1).astype(np.float32)


def draw_params(rng: np.random.Generator, n: int) -> np.ndarray:
    """Per-item jitter, float32 ``(n, len(PARAM_NAMES))`` (see :data:`PARAM_NAMES`)."""
    out = np.empty((n, len(PARAM_NAMES)), dtype=np.float32)
    out[:, 0] = rng.uniform(0.5, 0.8, n)
    out[:, 1] = rng.uniform(-_MAX_ROTATION, _MAX_ROTATION, n)
    out[:, 2:4] = rng.uniform(-0.15, 0.15, (n, 2))
    out[:, 4] = rng.uniform(-0.04, 0.04, n)
    out[:, 5] = rng.uniform(-0.15, 0.15, n)
    out[:, 6] = rng.uniform(0.0, 2 * np.pi, n)
    out[:, 7] = rng.uniform(0.0, 2 * np.pi, n)
    return out


# --------------------------------------------------------------------------- shapes
def _box(x: np.ndarray, y: np.ndarray, w: float, h: float) -> np.ndarray:
    return np.maximum(np.abs(x) - w, np.abs(y) - h)


def _rotate45(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = np.float32(np.sqrt(0.5))
    return c * (x + y), c * (y - x)


def _sdf_disc(x, y):
    return np.hypot(x, y) - 0.8


def _sdf_square(x, y):
    return _box(x, y, 0.68, 0.68)


def _sdf_triangle(x, y):
    # the triangle's centroid is at the origin; a vertex points up
    a = 2 * np.pi / 3
    return np.hypot(x, y) * np.cos(np.arctan2(x, y) % a - a / 2) - 0.42


def _sdf_plus(x, y):
    return np.minimum(_box(x, y, 0.85, 0.24), _box(x, y, 0.24, 0.85))


def _sdf_ring(x, y):
    return np.abs(np.hypot(x, y) - 0.62) - 0.2


def _sdf_star(x, y):
    phi = np.arctan2(x, y)
    return np.hypot(x, y) - (0.6 + 0.32 * np.cos(5 * phi))


def _sdf_bars(x, y):
    return np.minimum(_box(x, y - 0.42, 0.85, 0.2), _box(x, y + 0.42, 0.85, 0.2))


def _sdf_crescent(x, y):
    return np.maximum(np.hypot(x, y) - 0.85, 0.62 - np.hypot(x - 0.4, y - 0.1))


def _sdf_diamond(x, y):
    u, v = _rotate45(x, y)
    return _box(u, v, 0.6, 0.6)


def _sdf_cross(x, y):
    return _sdf_plus(*_rotate45(x, y))


def _sdf_tee(x, y):
    return np.minimum(_box(x, y - 0.62, 0.85, 0.22), _box(x, y + 0.12, 0.22, 0.75))


def _sdf_frame(x, y):
    return np.abs(np.maximum(np.abs(x), np.abs(y)) - 0.62) - 0.17


_SDF: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "disc": _sdf_disc,
    "square": _sdf_square,
    "triangle": _sdf_triangle,
    "plus": _sdf_plus,
    "ring": _sdf_ring,
    "star": _sdf_star,
    "bars": _sdf_bars,
    "crescent": _sdf_crescent,
    "diamond": _sdf_diamond,
    "cross": _sdf_cross,
    "tee": _sdf_tee,
    "frame": _sdf_frame,
}


# --------------------------------------------------------------------------- rendering
def render(
    classes: np.ndarray,
    styles: np.ndarray,
    params: np.ndarray,
    items: np.ndarray,
    n_styles: int,
    size: int,
    pixel_noise: float = 0.06,
    seed: int = 0,
) -> np.ndarray:
    """Render one image per row, uint8 ``(n, size, size, 3)``.

    Parameters
    ----------
    classes, styles : ndarray of int, shape (n,)
        Content class (``0…MAX_CLASSES-1``) and style (``0…n_styles-1``) of each image.
    params : ndarray, shape (n, len(PARAM_NAMES))
        Per-item jitter from :func:`draw_params`.
    items : ndarray of int, shape (n,)
        Item numbers: the pixel noise of item ``i`` is drawn from
        ``numpy.random.default_rng([seed, i, 7])``.
    n_styles : int
        Number of palettes (styles index into :func:`palettes`).
    size : int
        Image side in pixels.
    pixel_noise : float
        Standard deviation of the pixel noise (uniform, independent per pixel and channel),
        in units of the 0…1 intensity range.
    seed : int
        The world's seed.
    """
    classes = np.asarray(classes, dtype=np.int64)
    styles = np.asarray(styles, dtype=np.int64)
    params = np.asarray(params, dtype=np.float32)
    n = len(classes)
    if size < 8:
        raise InputError(f"image size must be >= 8 pixels, got {size}")
    if len(classes) and (classes.min() < 0 or classes.max() >= MAX_CLASSES):
        raise InputError(f"classes must lie in 0…{MAX_CLASSES - 1}")
    # pixel centres in image units, y pointing up
    t = ((np.arange(size, dtype=np.float32) + 0.5) / size) * 2 - 1
    gx, gy = t[None, None, :], -t[None, :, None]
    p = params[:, :, None, None]
    scale, rot, dx, dy = p[:, 0], p[:, 1], p[:, 2], p[:, 3]
    cos, sin = np.cos(rot), np.sin(rot)
    x = ((gx - dx) * cos + (gy - dy) * sin) / scale
    y = ((gy - dy) * cos - (gx - dx) * sin) / scale
    pixel = np.float32(2.0 / size)
    cover = np.empty((n, size, size), dtype=np.float32)
    stripes = np.zeros((n, size, size), dtype=np.float32)
    for k in np.unique(classes):
        rows = np.flatnonzero(classes == k)
        sdf = _SDF[SHAPES[k % len(SHAPES)]](x[rows], y[rows])
        cover[rows] = np.clip(0.5 - sdf * scale[rows] / pixel, 0.0, 1.0)
        if k >= len(SHAPES):  # striped fill: darker bands across the shape
            band = np.sin(y[rows] * np.float32(2 * np.pi / 0.36)) * scale[rows] / pixel
            stripes[rows] = np.clip(0.5 + band, 0.0, 1.0)
    pal = palettes(n_styles)[styles]  # (n, 2, 3)
    hue_shift, value = params[:, 4], 1.0 + params[:, 5]
    fg = _shift_hue(pal[:, 0], hue_shift) * value[:, None]
    bg = _shift_hue(pal[:, 1], hue_shift) * value[:, None]
    # background: flat, a linear gradient, or waves, in the item's direction
    kind = styles % len(BACKGROUNDS)
    ang, phase = p[:, 6], p[:, 7]
    along = gx * np.cos(ang) + gy * np.sin(ang)
    shade = np.where(
        (kind == 1)[:, None, None],
        0.65 + 0.35 * (along + 1) / 2,
        np.where((kind == 2)[:, None, None], 1.0 + 0.3 * np.sin(7.0 * along + phase), 1.0),
    ).astype(np.float32)
    fill = fg[:, None, None, :] * (1.0 - 0.55 * stripes[..., None])
    back = bg[:, None, None, :] * shade[..., None]
    img = back + (fill - back) * cover[..., None]
    if pixel_noise > 0:  # uniform on ±√3·σ: standard deviation σ, 5× cheaper than Gaussian
        half = np.float32(np.sqrt(3.0) * pixel_noise)
        for r, item in enumerate(np.asarray(items, dtype=np.int64).tolist()):
            rng = np.random.default_rng([seed, item, _NOISE_STREAM])
            img[r] += (rng.random(img.shape[1:], dtype=np.float32) * 2 - 1) * half
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV → RGB, all in 0…1; returns ``(n, 3)``."""
    i = np.floor(h * 6.0).astype(np.int64) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack(
        [
            np.stack([v, t, p], -1),
            np.stack([q, v, p], -1),
            np.stack([p, v, t], -1),
            np.stack([p, q, v], -1),
            np.stack([t, p, v], -1),
            np.stack([v, p, q], -1),
        ],
        axis=0,
    )
    return table[i, np.arange(len(h))]


def _shift_hue(rgb: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Rotate the hue of ``rgb`` (n, 3) by ``shift`` (n,) turns (about the grey axis)."""
    angle = 2 * np.pi * shift.astype(np.float32)
    c, s = np.cos(angle)[:, None], np.sin(angle)[:, None]
    k = np.float32(1 / np.sqrt(3))
    cross = k * np.stack(
        [rgb[:, 2] - rgb[:, 1], rgb[:, 0] - rgb[:, 2], rgb[:, 1] - rgb[:, 0]], axis=1
    )
    dot = (k * rgb.sum(axis=1))[:, None]
    return (rgb * c + cross * s + k * dot * (1 - c)).astype(np.float32)
