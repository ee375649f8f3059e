"""Metrics that distinguish the methods: warp error (two variants), CLIP scores, memory.

Warp error (METHODS.md section 6, the StreamV2V tools definition): flow between consecutive SOURCE
frames, forward and backward; occlusion by forward-backward consistency (0.01 / 0.5); the edited
frame i is warped onto frame i+1 with the backward flow; mean absolute difference over
non-occluded pixels on the 0..255 scale; averaged over frame pairs. Lower is more consistent.

- `warp_error` (the studio's number): float differences, and the occlusion mask of frame i+1, the
  frame where the comparison happens.
- `warp_error_paper_compatible`: the reference script's arithmetic, reproduced on purpose so our
  figures can be set beside the paper's: it subtracts two uint8 arrays, so differences wrap around
  (3 - 5 gives 254 instead of 2), which inflates every figure; and it masks with frame i's occlusion
  instead of frame i+1's. Always labelled as such.

CLIP (transformers' CLIPModel; default openai/clip-vit-base-patch32 or a local folder): frame
consistency = cosine of consecutive frames' image embeddings x 100 (the paper's "CLIP score"); text
alignment = cosine of each frame with the prompt x 100. When no CLIP model can be loaded, the values
are None and the reason is given: never 0.
"""
from __future__ import annotations

import resource
from pathlib import Path

import cv2
import numpy as np

from .errors import V2VError
from .flow import SourceFlow, source_flow, warp_backward

DEFAULT_CLIP = "openai/clip-vit-base-patch32"


def warp_error_pair(edit_i: np.ndarray, edit_j: np.ndarray, bwd: np.ndarray, occ_i: np.ndarray, occ_j: np.ndarray,
                    paper_compatible: bool = False) -> float:
    """Warp error of one frame pair (uint8 RGB frames of the source's size)."""
    if paper_compatible:
        warped = warp_backward(edit_i, bwd)            # uint8, as cv2.remap of uint8 gives
        warped[occ_i] = 0
        diff = np.abs(warped - edit_j)                 # uint8 - uint8 wraps around: the reference's arithmetic
        keep = ~occ_i
    else:
        warped = warp_backward(edit_i.astype(np.float32), bwd)
        diff = np.abs(warped - edit_j.astype(np.float32))
        keep = ~occ_j
    return float(diff[keep].mean()) if keep.any() else float("nan")


def warp_error(edited, flow: SourceFlow, paper_compatible: bool = False) -> tuple[float, list[float]]:
    """(mean, per-pair series) over the first len(edited) frames of the source's flow."""
    n = min(len(edited) - 1, flow.pairs)
    series = [warp_error_pair(edited[i], edited[i + 1], flow.bwd[i], flow.occ_i[i], flow.occ_j[i], paper_compatible)
              for i in range(n)]
    valid = [s for s in series if np.isfinite(s)]
    return (float(np.mean(valid)) if valid else float("nan")), series


def laplacian_energy(frames) -> float:
    """Mean absolute Laplacian of the grey frames: how much fine detail (dots, flakes, edges) they hold. A steadier
    output that scores it well below the baseline's won by blurring."""
    return float(np.mean([np.abs(cv2.Laplacian(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), cv2.CV_32F)).mean() for f in frames]))


def match_to_source(edited, source_shape) -> list[np.ndarray]:
    """Resize edited frames to the source's (H, W) (frame i matches frame i)."""
    h, w = source_shape[:2]
    return [f if f.shape[:2] == (h, w) else cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA if f.shape[0] > h
                                                       else cv2.INTER_LINEAR) for f in edited]


class ClipScorer:
    """Image/text embeddings from a CLIP model (hub id or local folder)."""

    def __init__(self, model: str = DEFAULT_CLIP, device: str | None = None):
        import torch
        from transformers import CLIPModel, CLIPProcessor

        from .backbones import _hub_load

        def load(src, **kw):
            return CLIPModel.from_pretrained(src, **kw), CLIPProcessor.from_pretrained(src, **kw)

        hint = "Pass a local CLIP folder (--clip-model PATH) or skip CLIP metrics (--no-clip)."
        self.model, self.processor = load(model) if Path(model).exists() else _hub_load(load, model, "the CLIP model", hint)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.eval().to(self.device)
        self.name = str(model)

    def image_embeds(self, frames, batch: int = 16) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for k in range(0, len(frames), batch):
                px = self.processor(images=list(frames[k:k + batch]), return_tensors="pt")["pixel_values"].to(self.device)
                e = self.model.get_image_features(pixel_values=px)
                e = getattr(e, "pooler_output", e)
                out.append(torch.nn.functional.normalize(e.float(), dim=-1).cpu().numpy())
        return np.concatenate(out)

    def text_embed(self, prompt: str) -> np.ndarray:
        import torch

        with torch.inference_mode():
            tok = self.processor(text=[prompt], return_tensors="pt", padding=True)
            e = self.model.get_text_features(input_ids=tok["input_ids"].to(self.device),
                                             attention_mask=tok["attention_mask"].to(self.device))
            e = getattr(e, "pooler_output", e)
            return torch.nn.functional.normalize(e.float(), dim=-1).cpu().numpy()[0]


_CLIP_CACHE: dict[str, ClipScorer] = {}


def load_clip(model: str = DEFAULT_CLIP) -> tuple[ClipScorer | None, str | None]:
    """(scorer, None) or (None, the reason no CLIP model is available)."""
    if model in _CLIP_CACHE:
        return _CLIP_CACHE[model], None
    try:
        _CLIP_CACHE[model] = ClipScorer(model)
        return _CLIP_CACHE[model], None
    except V2VError as e:
        return None, str(e)
    except Exception as e:
        return None, f"Could not load CLIP model '{model}': {e}"


def clip_metrics(frames, prompt: str | None, scorer: ClipScorer) -> dict:
    emb = scorer.image_embeds(frames)
    consistency = [float(100 * emb[i] @ emb[i + 1]) for i in range(len(emb) - 1)]
    out = {"clip_consistency": float(np.mean(consistency)) if consistency else None,
           "clip_consistency_series": consistency, "clip_text": None, "clip_text_series": None,
           "clip_model": scorer.name}
    if prompt:
        t = scorer.text_embed(prompt)
        series = [float(100 * e @ t) for e in emb]
        out.update(clip_text=float(np.mean(series)), clip_text_series=series)
    return out


def peak_memory_bytes(device=None) -> dict:
    """Peak resident memory of this process, and peak CUDA allocation when on a GPU."""
    out = {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    try:
        import torch

        if torch.cuda.is_available():
            out["peak_cuda_bytes"] = int(torch.cuda.max_memory_allocated())
    except ImportError:
        pass
    return out


def evaluate_clip(source, edited, flow: str = "dis", prompt: str | None = None, clip_model: str | None = DEFAULT_CLIP) -> dict:
    """All metrics of an edited clip against its source (lists of uint8 RGB frames).

    The edited frames are resized to the source's size; an edited clip shorter than the source is
    compared with the source's first frames (as the reference does; `note` says so); a longer one is
    refused."""
    if len(edited) > len(source):
        raise V2VError(f"The edited clip has {len(edited)} frames but the source only {len(source)}: frame i of "
                       "one must match frame i of the other. Trim the edited clip or give the full source.")
    if len(edited) < 2:
        raise V2VError("The edited clip needs at least 2 frames.")
    note = None
    if len(edited) < len(source):
        note = f"edited clip is shorter: compared with the first {len(edited)} of {len(source)} source frames"
        source = source[:len(edited)]
    edited = match_to_source(edited, source[0].shape)
    sf = source_flow(source, flow)
    we, we_series = warp_error(edited, sf)
    wp, wp_series = warp_error(edited, sf, paper_compatible=True)
    out = {"warp_error": we, "warp_error_paper_compatible": wp, "flow": sf.estimator, "frames": len(edited),
           "warp_error_series": we_series, "warp_error_paper_compatible_series": wp_series,
           "size": [int(source[0].shape[1]), int(source[0].shape[0])], "note": note,
           "clip_consistency": None, "clip_text": None, "clip_unavailable_reason": None}
    if clip_model is None:
        out["clip_unavailable_reason"] = "CLIP metrics not requested"
        return out
    scorer, reason = load_clip(clip_model)
    if scorer is None:
        out["clip_unavailable_reason"] = reason
    else:
        out.update(clip_metrics(edited, prompt, scorer))
    return out
