"""Training images for the toy model, made from what installed packages ship plus procedural scenes.

No clip from ../shared is used (those are the evaluation set). Sources:
- scikit-image's bundled photos (colour and grey), which ship inside its wheel;
- procedural scenes: gradients, textures, shapes and figure-like blobs over backgrounds, seeded.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

SKIMAGE_PHOTOS = (
    "astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
    "colorwheel", "cat", "logo", "camera", "moon", "page", "text", "coins", "brick", "grass", "gravel",
    "clock", "stereo_motorcycle",
)


def _as_rgb(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.shape[2] == 4:  # RGBA over white
        alpha = a[..., 3:4].astype(np.float32) / 255.0
        a = (a[..., :3] * alpha + 255.0 * (1 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(a[..., :3].astype(np.uint8))


def skimage_photos() -> list[np.ndarray]:
    import skimage.data as skd

    out = []
    for name in SKIMAGE_PHOTOS:
        a = getattr(skd, name)()
        if isinstance(a, tuple):  # stereo pairs
            a = a[0]
        out.append(_as_rgb(a))
    return out


def procedural_scene(rng: np.random.Generator, size: int = 320) -> np.ndarray:
    """A seeded synthetic scene: gradient sky/ground, texture, shapes and a 'figure' (limbs + head)."""
    h = w = size
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ramp = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    img = (top * (1 - ramp) + bottom * ramp) * np.ones((1, w, 1), np.float32)
    if rng.random() < 0.6:  # ground plane with texture
        horizon = int(rng.uniform(0.4, 0.8) * h)
        ground = rng.integers(0, 256, 3).astype(np.float32)
        tex = cv2.GaussianBlur(rng.normal(0, 1, (h - horizon, w)).astype(np.float32), (0, 0), rng.uniform(1, 4))
        img[horizon:] = ground + 40 * tex[..., None]
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(3, 12)):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(0, 4)
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = int(rng.integers(8, size // 4))
        if kind == 0:
            cv2.circle(img, (cx, cy), r, color, -1, lineType=cv2.LINE_AA)
        elif kind == 1:
            cv2.rectangle(img, (cx - r, cy - r // 2), (cx + r, cy + r // 2), color, -1)
        elif kind == 2:
            pts = rng.integers(0, size, (int(rng.integers(3, 7)), 2)).astype(np.int32)
            cv2.fillPoly(img, [pts], color, lineType=cv2.LINE_AA)
        else:
            cv2.line(img, (cx, cy), (int(rng.integers(0, w)), int(rng.integers(0, h))), color, int(rng.integers(2, 9)), cv2.LINE_AA)
    if rng.random() < 0.7:  # a person-like figure: head, torso, limbs
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        skin = tuple(int(c) for c in rng.integers(120, 256, 3))
        s = rng.uniform(0.5, 1.2) * size / 320
        x0, y0 = int(rng.integers(size // 5, 4 * size // 5)), int(rng.integers(size // 4, size // 2))
        t = max(2, int(12 * s))
        cv2.circle(img, (x0, y0), int(18 * s), skin, -1, cv2.LINE_AA)
        cv2.line(img, (x0, y0 + int(18 * s)), (x0, y0 + int(100 * s)), color, int(24 * s), cv2.LINE_AA)
        for dx in (-1, 1):
            a = rng.uniform(20, 60)
            cv2.line(img, (x0, y0 + int(35 * s)), (x0 + int(dx * a * s), y0 + int(80 * s)), color, t, cv2.LINE_AA)
            cv2.line(img, (x0, y0 + int(100 * s)), (x0 + int(dx * a * s), y0 + int(170 * s)), color, t, cv2.LINE_AA)
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.5))
    noise = rng.normal(0, rng.uniform(0, 6), img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


SHORT_SIDES = (192, 256, 320)


def at_scales(img: np.ndarray, short_sides) -> list[np.ndarray]:
    """The image resized so its short side is each of `short_sides` (the other side a multiple of 8 px)."""
    h, w = img.shape[:2]
    out = []
    for s in short_sides:
        k = s / min(h, w)
        size = (max(s, int(round(w * k / 8)) * 8), max(s, int(round(h * k / 8)) * 8))
        out.append(cv2.resize(img, size, interpolation=cv2.INTER_AREA))
    return out


def photo_indices(names, short_sides: tuple[int, ...] = SHORT_SIDES) -> list[int]:
    """Indices in image_pool() of the named scikit-image photos (every scale)."""
    return [SKIMAGE_PHOTOS.index(n) * len(short_sides) + k for n in names for k in range(len(short_sides))]


def image_pool(seed: int = 0, n_procedural: int = 60, short_sides: tuple[int, ...] = SHORT_SIDES) -> list[np.ndarray]:
    """All training images, each resized so its short side is one of `short_sides` (the scale at
    which styles are defined), centre-cropped to at most 2:1. Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    bases = skimage_photos() + [procedural_scene(rng) for _ in range(n_procedural)]
    pool = []
    for img in bases:
        h, w = img.shape[:2]
        if max(h, w) > 2 * min(h, w):
            c = 2 * min(h, w)
            img = img[:c] if h > w else img[:, :c]
            h, w = img.shape[:2]
        pool += at_scales(img, short_sides)
    return pool


HELDOUT_SEED = 12345


def heldout_scene(size: int = 512) -> np.ndarray:
    """A procedural scene the toy never trained on: image_pool draws its scenes from one generator seeded
    with the training seed (0), this one from HELDOUT_SEED. For measurements on unseen content."""
    return procedural_scene(np.random.default_rng(HELDOUT_SEED), size)


KODAK_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "images" / "kodak"
KODAK_SHORT_SIDES = (256, 384)


def kodak_images(folder: Path = KODAK_DIR, short_sides: tuple[int, ...] = KODAK_SHORT_SIDES) -> list[np.ndarray]:
    """The 24 Kodak photographs (../shared/data/images/kodak, allowed as training data; never a clip of
    ../shared/data/videos), each at every short side in `short_sides`. Empty when the folder is absent."""
    files = sorted(Path(folder).glob("kodim*.png"))
    out = []
    for f in files:
        out += at_scales(cv2.cvtColor(cv2.imread(str(f), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB), short_sides)
    return out
