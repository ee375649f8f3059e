"""Optical flow on SOURCE frames, computed once per clip and cached, plus the pure warp/occlusion math.

Estimators: OpenCV's DIS flow (offline default) and torchvision's RAFT-large when torchvision and its
weights are present (never required). Convention: flow[y, x] = (dx, dy) maps pixel (x, y) of the
first frame to (x + dx, y + dy) in the second.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np

from .errors import V2VError

FLOW_ESTIMATORS = ("dis", "raft")


def _grid(h: int, w: int):
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return gx, gy


def warp_backward(img: np.ndarray, flow: np.ndarray, border=cv2.BORDER_CONSTANT) -> np.ndarray:
    """out[y, x] = img[y + flow_y, x + flow_x] (bilinear; zeros outside, like the reference).
    With flow = the backward flow (frame i+1 -> i) this carries frame i onto frame i+1."""
    h, w = flow.shape[:2]
    gx, gy = _grid(h, w)
    return cv2.remap(img, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR, borderMode=border)


def occlusion(fwd: np.ndarray, bwd: np.ndarray, alpha: float = 0.01, beta: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Forward-backward consistency (UnFlow's alpha/beta, as the StreamV2V tools use):
    a pixel of frame i is occluded when |f + b(x + f)| > alpha (|f| + |b|) + beta, both norms at x.
    Returns (occluded in frame i, occluded in frame i+1), bool (H, W)."""
    mag = np.linalg.norm(fwd, axis=-1) + np.linalg.norm(bwd, axis=-1)
    thr = alpha * mag + beta
    occ_i = np.linalg.norm(fwd + warp_backward(bwd, fwd), axis=-1) > thr
    occ_j = np.linalg.norm(bwd + warp_backward(fwd, bwd), axis=-1) > thr
    return occ_i, occ_j


class FlowEstimator:
    name = "?"

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:  # RGB uint8 -> (H, W, 2) float32
        raise NotImplementedError


class DISFlow(FlowEstimator):
    """OpenCV DIS, MEDIUM preset, on grey frames."""
    name = "dis"

    def __init__(self, preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM):
        self._dis = cv2.DISOpticalFlow_create(preset)

    def __call__(self, a, b):
        ga, gb = (cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) for x in (a, b))
        return self._dis.calc(ga, gb, None)


class RAFTFlow(FlowEstimator):
    """torchvision's RAFT-large (the reference's estimator). Needs torchvision and its cached weights."""
    name = "raft"

    def __init__(self, device: str | None = None):
        try:
            import torch
            from torchvision.models.optical_flow import Raft_Large_Weights, raft_large
        except ImportError:
            raise V2VError("RAFT needs torchvision, which is not installed (there is no CPU build here); "
                           "use --flow dis.") from None
        try:
            self._model = raft_large(weights=Raft_Large_Weights.DEFAULT, progress=False).eval()
        except Exception as e:
            raise V2VError(f"RAFT weights could not be loaded ({e}); use --flow dis.") from None
        self._device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._model.to(self._device)

    def __call__(self, a, b):
        import torch

        h, w = a.shape[:2]
        ph, pw = (8 - h % 8) % 8, (8 - w % 8) % 8
        t = lambda x: torch.from_numpy(np.pad(x, ((0, ph), (0, pw), (0, 0)), mode="edge")).permute(2, 0, 1)[None].float().div(127.5).sub(1).to(self._device)  # noqa: E731
        with torch.inference_mode():
            f = self._model(t(a), t(b))[-1][0].permute(1, 2, 0).cpu().numpy()
        return np.ascontiguousarray(f[:h, :w])


def make_estimator(name: str = "dis") -> FlowEstimator:
    if name == "dis":
        return DISFlow()
    if name == "raft":
        return RAFTFlow()
    raise V2VError(f"Unknown flow estimator '{name}'; choose one of {', '.join(FLOW_ESTIMATORS)}.")


@dataclass
class SourceFlow:
    """Forward/backward flows and occlusion masks of a source clip (N frames -> N-1 pairs)."""
    estimator: str
    fwd: np.ndarray      # (N-1, H, W, 2) frame i -> i+1
    bwd: np.ndarray      # (N-1, H, W, 2) frame i+1 -> i
    occ_i: np.ndarray    # (N-1, H, W) occluded in frame i (the reference's mask)
    occ_j: np.ndarray    # (N-1, H, W) occluded in frame i+1 (where the comparison happens)

    @property
    def pairs(self) -> int:
        return len(self.fwd)


_CACHE: OrderedDict[tuple, SourceFlow] = OrderedDict()
_CACHE_SIZE = 8


def _fingerprint(frames) -> str:
    h = hashlib.sha1()
    h.update(str((len(frames), frames[0].shape)).encode())
    for f in frames:
        h.update(np.ascontiguousarray(f[::7, ::7]).tobytes())
    return h.hexdigest()


def source_flow(frames, estimator: str = "dis") -> SourceFlow:
    """Flows of a source clip, computed once and cached in memory (keyed by content and estimator),
    so comparing several methods on one source pays for the flow once."""
    if len(frames) < 2:
        raise V2VError("Warp error needs at least 2 frames.")
    key = (_fingerprint(frames), estimator)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    est = make_estimator(estimator)
    fwd = np.stack([est(frames[i], frames[i + 1]) for i in range(len(frames) - 1)])
    bwd = np.stack([est(frames[i + 1], frames[i]) for i in range(len(frames) - 1)])
    occ = [occlusion(f, b) for f, b in zip(fwd, bwd)]
    sf = SourceFlow(estimator, fwd, bwd, np.stack([o[0] for o in occ]), np.stack([o[1] for o in occ]))
    _CACHE[key] = sf
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return sf
