"""Clips with known motion, rendered from photos that scikit-image ships, with their TRUE optical flow.

Each frame k is a view of a source photo through an affine map A_k (photo coordinates -> frame
pixels); the flow from frame k to k+1 at pixel x is A_{k+1} A_k^{-1} x - x, exact by construction.
A moving object (a disc cut from a second photo) moves over the background with its own affine
map; where it is, the flow is the object's, and pixels it covers or uncovers are marked occluded.

Used by examples/make_examples.py (the studio's example clips), by the metric tests (flow accuracy,
warp error), the correspondence tests (known shift) and as training data for SVDiff.
Deterministic: the same call gives the same frames on every run.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MOTIONS = ("pan", "zoom", "rotate", "object", "shift")


@dataclass
class SyntheticClip:
    name: str
    frames: np.ndarray          # (N, H, W, 3) uint8
    flow: np.ndarray            # (N-1, H, W, 2) float32, frame k -> k+1, (dx, dy) per pixel
    occluded: np.ndarray        # (N-1, H, W) bool: pixels of frame k with no true match in frame k+1
    fps: float = 20.0


def _photo(name: str) -> np.ndarray:
    import skimage.data as skd

    a = getattr(skd, name)()
    return np.ascontiguousarray(a[..., :3]) if a.ndim == 3 else np.repeat(a[..., None], 3, axis=2)


def _affine(scale: float, angle_deg: float, centre_src, centre_dst) -> np.ndarray:
    """3x3 map: rotate/scale about centre_src in the photo, place it at centre_dst in the frame."""
    m = cv2.getRotationMatrix2D(tuple(map(float, centre_src)), angle_deg, scale)
    m[:, 2] += np.asarray(centre_dst, np.float64) - np.asarray(centre_src, np.float64)
    return np.vstack([m, [0, 0, 1]])


def _flow_between(a0: np.ndarray, a1: np.ndarray, h: int, w: int) -> np.ndarray:
    m = a1 @ np.linalg.inv(a0)
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    nx = m[0, 0] * gx + m[0, 1] * gy + m[0, 2]
    ny = m[1, 0] * gx + m[1, 1] * gy + m[1, 2]
    return np.stack([nx - gx, ny - gy], -1).astype(np.float32)


def _render(src: np.ndarray, a: np.ndarray, h: int, w: int) -> np.ndarray:
    return cv2.warpAffine(src, a[:2], (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def make_clip(motion: str = "pan", frames: int = 16, size: int = 256, photo: str = "astronaut",
              speed: float = 3.0, image: np.ndarray | None = None) -> SyntheticClip:
    """motion: pan (speed px/frame diagonal), zoom (1% a frame), rotate (1 degree a frame),
    object (a disc crossing a slowly panning background at `speed` px/frame), shift (a pure
    horizontal translation by `speed` px/frame; handy for correspondence tests). `image` (uint8 RGB)
    replaces the named photo (e.g. the toy's training images for SVDiff's trainer)."""
    if motion not in MOTIONS:
        raise ValueError(f"motion must be one of {MOTIONS}")
    src = _photo(photo) if image is None else np.ascontiguousarray(image[..., :3])
    sh, sw = src.shape[:2]
    c_src, c_dst = (sw / 2, sh / 2), (size / 2, size / 2)
    base = 1.4 * size / min(sh, sw)  # a margin so that motion never runs off the photo
    maps = []
    for k in range(frames):
        if motion == "pan":
            a = _affine(base, 0, c_src, (c_dst[0] - speed * k, c_dst[1] - 0.5 * speed * k))
        elif motion == "shift":
            a = _affine(base, 0, c_src, (c_dst[0] - speed * k, c_dst[1]))
        elif motion == "zoom":
            a = _affine(base * 1.01 ** k, 0, c_src, c_dst)
        elif motion == "rotate":
            a = _affine(base, 1.0 * k, c_src, c_dst)
        else:  # object: background pans slowly
            a = _affine(base, 0, c_src, (c_dst[0] - 0.5 * k, c_dst[1]))
        maps.append(a)
    imgs = np.stack([_render(src, a, size, size) for a in maps])
    flow = np.stack([_flow_between(maps[k], maps[k + 1], size, size) for k in range(frames - 1)])
    occ = np.zeros(flow.shape[:3], bool)
    # pixels that leave the frame have no match
    gx, gy = np.meshgrid(np.arange(size), np.arange(size))
    occ |= (gx + flow[..., 0] < 0) | (gx + flow[..., 0] > size - 1) | (gy + flow[..., 1] < 0) | (gy + flow[..., 1] > size - 1)
    if motion == "object":
        obj = _photo("coffee" if photo != "coffee" else "chelsea")
        r = size // 6
        oc = (obj.shape[1] / 2, obj.shape[0] / 2)
        disc = np.zeros(obj.shape[:2], np.uint8)
        cv2.circle(disc, (int(oc[0]), int(oc[1])), int(r / (size / min(obj.shape[:2])) / 0.9), 255, -1, cv2.LINE_AA)
        omaps = [_affine(size / min(obj.shape[:2]) * 0.9, 0, oc, (r + 8 + speed * k, size / 2 + 0.3 * speed * k))
                 for k in range(frames)]
        masks = []
        for k, a in enumerate(omaps):
            m = cv2.warpAffine(disc, a[:2], (size, size), flags=cv2.INTER_LINEAR) / 255.0
            fg = _render(obj, a, size, size)
            imgs[k] = (imgs[k] * (1 - m[..., None]) + fg * m[..., None]).round().astype(np.uint8)
            masks.append(m > 0.5)
        for k in range(frames - 1):
            of = _flow_between(omaps[k], omaps[k + 1], size, size)
            flow[k][masks[k]] = of[masks[k]]
            # background pixels covered in k+1, and the soft rim, have no reliable match
            bg_dst_x = np.clip(np.round(gx + flow[k][..., 0]), 0, size - 1).astype(int)
            bg_dst_y = np.clip(np.round(gy + flow[k][..., 1]), 0, size - 1).astype(int)
            covered = ~masks[k] & masks[k + 1][bg_dst_y, bg_dst_x]
            rim = cv2.dilate(masks[k].astype(np.uint8), np.ones((5, 5), np.uint8)) > cv2.erode(
                masks[k].astype(np.uint8), np.ones((5, 5), np.uint8))
            occ[k] |= covered | rim
    return SyntheticClip(f"{photo}-{motion}", imgs, flow, occ)
