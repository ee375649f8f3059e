"""Evaluate the embedded toy model on a clip: `python -m v2v_core toy-eval VIDEO [--frames 48]`.

Figures (JSON):
- vae_psnr_db: mean PSNR of VAE reconstructions of the frames at `size` px;
- recognisability: per deterministic style, the share of frames whose output (strength 0.5, 2 LCM
  steps, the engine's standard path) is closer in mean absolute error to that style's filter target
  than to every other deterministic style's target; recognisability_mean over styles;
- photo_psnr_db: how close the output of "a photo" is to the input (it should resemble it);
- prompt_separation_mae: mean absolute difference between outputs of different prompts on the same
  frames (different prompts must give clearly different outputs);
- fps: frames/second of the per-frame baseline at `size` px (strength 0.4, 2 steps), after warm-up.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from ..backbones import load_backbone, to_tensor, to_uint8
from ..engine import Stream, StreamSettings, fps_after_warmup
from ..video import read_video
from .styles import DETERMINISTIC_STYLES


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def style_grid(video: str, out_png: str, frame: int = 0, size: int = 256, backbone=None, strength: float = 0.5,
               steps: int = 2) -> str:
    """A picture of every style on one frame: top row the filter targets, bottom row the model's
    outputs (the engine's standard path), the input at the left of both rows."""
    import cv2

    from .styles import STYLES

    bb = backbone or load_backbone("toy")
    clip, _ = read_video(video, frame + 1, size)
    f = clip[frame]
    tops, bottoms = [f], [f]
    rng = np.random.default_rng(0)
    for s in STYLES:
        tops.append(s.apply(f, rng=rng))
        stream = Stream(bb, s.prompts[0], StreamSettings(strength=strength, steps=steps, seed=0))
        bottoms.append(list(stream.run([f]))[0])

    def label(img, text):
        img = img.copy()
        cv2.rectangle(img, (0, 0), (img.shape[1], 20), (0, 0, 0), -1)
        cv2.putText(img, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        return img

    names = ["input"] + [f'"{s.prompts[0]}"' for s in STYLES]
    top = np.concatenate([label(t, n + (" target" if i else "")) for i, (t, n) in enumerate(zip(tops, names))], 1)
    bottom = np.concatenate([label(b, n + (" toy output" if i else "")) for i, (b, n) in enumerate(zip(bottoms, names))], 1)
    cv2.imwrite(str(out_png), cv2.cvtColor(np.concatenate([top, bottom], 0), cv2.COLOR_RGB2BGR))
    return str(out_png)


def evaluate(video: str, frames: int = 48, size: int = 256, backbone=None, strength: float = 0.5, steps: int = 2) -> dict:
    bb = backbone or load_backbone("toy")
    clip, _ = read_video(video, frames, size)
    with torch.inference_mode():
        recon = [to_uint8(bb.decode_latents(bb.encode_images(to_tensor(f, bb.device, bb.dtype))))[0] for f in clip]
    vae_psnr = float(np.mean([psnr(r, f) for r, f in zip(recon, clip)]))

    targets = {s.name: [s.apply(f) for f in clip] for s in DETERMINISTIC_STYLES}
    outputs, recog = {}, {}
    for s in DETERMINISTIC_STYLES:
        stream = Stream(bb, s.prompts[0], StreamSettings(strength=strength, steps=steps, seed=0))
        outputs[s.name] = list(stream.run(clip))
        hits = 0
        for i, out in enumerate(outputs[s.name]):
            d = {n: np.abs(out.astype(np.int16) - t[i]).mean() for n, t in targets.items()}
            hits += min(d, key=d.get) == s.name
        recog[s.name] = hits / len(clip)
    sep = [np.mean([np.abs(a.astype(np.int16) - b).mean() for a, b in zip(outputs[x], outputs[y])])
           for x, y in itertools.combinations(outputs, 2)]
    base = Stream(bb, "a pencil sketch", StreamSettings(strength=0.4, steps=2, seed=0))
    list(base.run(clip))
    return {
        "video": str(video), "frames": len(clip), "size": size, "backbone": bb.name,
        "vae_psnr_db": round(vae_psnr, 2),
        "recognisability": {k: round(v, 3) for k, v in recog.items()},
        "recognisability_mean": round(float(np.mean(list(recog.values()))), 3),
        "photo_psnr_db": round(float(np.mean([psnr(o, f) for o, f in zip(outputs["photo"], clip)])), 2),
        "prompt_separation_mae": round(float(np.mean(sep)), 2),
        "fps": round(fps_after_warmup(base.timings), 2),
        "eval_settings": {"strength": strength, "steps": steps, "seed": 0, "threads": torch.get_num_threads()},
    }
