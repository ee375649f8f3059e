"""Correspondence from diffusion features (the StreamV2V "looking backward" figure, METHODS.md s.5).

An opt-in recorder keeps, for chosen self-attention layers, the queries and keys of the last few
frames at one denoising step. For pixel p of frame n: q = Q_n[p]; for each earlier frame m,
scores = q K_m^T; the arg-max token is the corresponding point and the softmax of the scores a heat
map. Off (no recorder) it costs nothing: the attention path never looks for one.

    rec = CorrespondenceRecorder(keep=5)
    stream = Stream(backbone, prompt, settings, StreamV2V(config, recorder_factory=lambda: rec))
    ... run frames ...
    matches = rec.match(layer, frame=n, x=120, y=80, size=(256, 256))    # frames n-1 .. n-4
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Match:
    frame: int
    x: float            # matched point in pixels (centre of the matched token's cell)
    y: float
    score: float        # softmax probability of the arg-max token
    heat: np.ndarray    # (h_tok, w_tok) softmax over the earlier frame's tokens


def token_grid(n_tokens: int, size: tuple[int, int]) -> tuple[int, int]:
    """(h_tok, w_tok) of a layer with n_tokens for frames of size (H, W)."""
    h, w = size
    ht = int(round(math.sqrt(n_tokens * h / w)))
    return ht, n_tokens // ht


class CorrespondenceRecorder:
    def __init__(self, layers: list[str] | None = None, keep: int = 5, step: int = 0):
        """layers: self-attention layer names to record (None: all); keep: frames kept (n and n-1..);
        step: the denoising step whose features are recorded (0 = the first, noisiest)."""
        self.layers = set(layers) if layers else None
        self.keep, self.step = keep, step
        self.data: dict[str, deque] = {}

    def record(self, name: str, frame: int, step: int, q: torch.Tensor, k: torch.Tensor):
        if step != self.step or (self.layers is not None and name not in self.layers):
            return
        d = self.data.setdefault(name, deque(maxlen=self.keep))
        d.append((frame, q.detach().float().cpu(), k.detach().float().cpu()))   # (N, C) each

    def recorded_layers(self) -> list[str]:
        return list(self.data)

    def frames(self, layer: str) -> list[int]:
        return [f for f, _, _ in self.data.get(layer, ())]

    def match(self, layer: str, frame: int, x: float, y: float, size: tuple[int, int], back: int = 4) -> list[Match]:
        """Matches of pixel (x, y) of `frame` in up to `back` earlier recorded frames (nearest first)."""
        entries = {f: (q, k) for f, q, k in self.data.get(layer, ())}
        if frame not in entries:
            raise KeyError(f"frame {frame} of layer {layer} was not recorded (have {sorted(entries)})")
        q_n, _ = entries[frame]
        ht, wt = token_grid(q_n.shape[0], size)
        h, w = size
        p = min(int(y * ht / h), ht - 1) * wt + min(int(x * wt / w), wt - 1)
        out = []
        for m in sorted((f for f in entries if f < frame), reverse=True)[:back]:
            _, k_m = entries[m]
            scores = (k_m @ q_n[p]) / math.sqrt(q_n.shape[1])             # (N,)
            prob = torch.softmax(scores, dim=0)
            j = int(prob.argmax())
            out.append(Match(m, (j % wt + 0.5) * w / wt, (j // wt + 0.5) * h / ht, float(prob[j]),
                             prob.view(ht, wt).numpy()))
        return out


def render_view(frames: dict[int, np.ndarray], frame: int, x: float, y: float, matches: list[Match]) -> np.ndarray:
    """A picture of the query point on frame n and, beside it, each earlier frame with its heat map
    blended in and the matched point marked. frames: index -> uint8 (H, W, 3). Returns uint8 RGB."""
    import cv2

    def mark(img, px, py, color):
        cv2.circle(img, (int(px), int(py)), 6, color, 2, cv2.LINE_AA)
        cv2.drawMarker(img, (int(px), int(py)), color, cv2.MARKER_CROSS, 10, 1, cv2.LINE_AA)

    panels = []
    q = frames[frame].copy()
    mark(q, x, y, (255, 40, 40))
    cv2.putText(q, f"frame {frame}", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    panels.append(q)
    for mt in matches:
        img = frames[mt.frame]
        h, w = img.shape[:2]
        heat = cv2.resize(mt.heat / max(mt.heat.max(), 1e-12), (w, h), interpolation=cv2.INTER_NEAREST)
        color = cv2.cvtColor(cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
        panel = (0.55 * img + 0.45 * color).astype(np.uint8)
        mark(panel, mt.x, mt.y, (255, 255, 255))
        cv2.putText(panel, f"frame {mt.frame}", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        panels.append(panel)
    return np.concatenate(panels, axis=1)


SHIFT_POINTS = ((96, 96), (128, 128), (160, 112), (112, 160), (144, 144))


def shift_errors(backbone, image: np.ndarray | None = None, photo: str = "astronaut", prompt: str = "a photo",
                 size: int = 256, speed: float = 8.0, points=SHIFT_POINTS, settings=None):
    """How well each self-attention layer's q.k recovers a known motion: a 5-frame clip of the image
    shifted left by `speed` px a frame (synthetic.make_clip "shift"), run per frame with the recorder
    on; for each point of the last frame, the Chebyshev distance (px) between the match in each earlier
    frame and where the point really was. Returns ({layer: median error}, {layer: cell size in px},
    recorder, clip)."""
    from .engine import Stream, StreamSettings
    from .methods import make_method
    from .synthetic import make_clip

    clip = make_clip("shift", 5, size, photo=photo, speed=speed, image=image)
    rec = CorrespondenceRecorder(keep=5)
    method = make_method("streamdiffusion", recorder_factory=lambda: rec)
    list(Stream(backbone, prompt, settings or StreamSettings(), method).run(list(clip.frames)))
    errors, cells = {}, {}
    for layer in rec.recorded_layers():
        errs = [max(abs(m.x - (x + speed * (4 - m.frame))), abs(m.y - y))    # content moves left
                for x, y in points for m in rec.match(layer, 4, x, y, (size, size))]
        errors[layer] = float(np.median(errs))
        cells[layer] = size / token_grid(rec.data[layer][0][1].shape[0], (size, size))[0]
    return errors, cells, rec, clip
