"""How long a run holds a ZeroGPU slot: the `duration` the app's GPU-decorated calls request, from the request itself
(frames x methods x size, TokenFlow's passes), and a refusal, before the run, of a request that cannot fit.

ZeroGPU reserves the requested duration from the visitor's quota before the call and schedules shorter requests first,
so a fixed 120 s over-asks for a small run and under-asks for a big one. The figures below are an ESTIMATE for an
SD-1.5-sized backbone in fp16 on ZeroGPU's GPU (an H200 slice), set from the methods' published speeds (StreamV2V:
20 fps on an A100 at 512 px; StreamDiffusion's PyTorch path: tens of fps), not measured on a Space: nothing here can
reach one. The README states the values for two requests (tests keep them equal).
"""
from __future__ import annotations

import math
import os

from v2v_core.errors import V2VError

from .registry import REGISTRY

UNET_STEP_S = 0.025        # one UNet pass of one frame at 512 px (SD-1.5 size, fp16)
FRAME_IO_S = 0.06          # per frame and method: VAE encode + decode (0.02) and the run's metrics and mp4 (0.04)
START_S = 20.0             # per call: weights onto the attached GPU, CUDA warm-up, the first frame's setup
MARGIN = 1.5               # a call that runs past its duration is killed: ask for half again the estimate
# UNet work per frame and step, relative to the per-frame baseline: the bank methods attend over 4 more frames'
# keys at every self-attention layer; TokenFlow runs its source and edit branches together through the keyframe pass
# (2/B of the frames) and the propagation pass (every frame): 2 + 2/B (its stock source pass instead: 2 + 1/B).
COST = {"streamdiffusion": 1.0, "streamv2v": 1.6, "window": 1.4, "temporal-shift": 1.05, "svdiff": 1.2}
MIN_S = 15                 # ZeroGPU's requests below this gain nothing


def max_seconds() -> int:
    """The longest call a ZeroGPU Space may request (V2V_ZEROGPU_MAX_S; 300 s, the platform's maximum per call as its
    maintainers state it; a visitor's remaining daily quota may be less)."""
    return int(os.environ.get("V2V_ZEROGPU_MAX_S", "300"))


def _unet_cost(method) -> float:
    """method: a registered method's name or a preset (an ablation grid's settings are presets)."""
    preset = REGISTRY[method] if isinstance(method, str) else method
    if preset.core_method == "tokenflow":
        branches = 2 if preset.config.source_branch == "released" else 1
        return 2.0 + branches / preset.config.keyframe_group
    return COST[preset.core_method]


def estimate_seconds(methods, frames: int, size: int = 256, steps: int = 2) -> float:
    """The GPU seconds a comparison run needs, margin included, before the platform's cap."""
    scale = (int(size) / 512) ** 2
    per_frame = sum(UNET_STEP_S * int(steps) * _unet_cost(m) + FRAME_IO_S for m in methods or [])
    return MARGIN * (START_S + int(frames) * per_frame * scale)


def duration(methods, frames: int, size: int = 256, steps: int = 2) -> int:
    """What the decorated call asks ZeroGPU for: the estimate rounded up, at least MIN_S, at most max_seconds()."""
    return max(MIN_S, min(max_seconds(), math.ceil(estimate_seconds(methods, frames, size, steps))))


def check_fits(methods, frames: int, size: int = 256, steps: int = 2) -> None:
    """Refuse, before anything runs, a request that needs more than one ZeroGPU call may hold."""
    need, cap = math.ceil(estimate_seconds(methods, frames, size, steps)), max_seconds()
    if need > cap:
        raise V2VError(f"This run needs about {need} s of GPU and a ZeroGPU call may hold at most {cap} s: use fewer "
                       "frames or methods, or a smaller size (or run the studio on a GPU of your own).")
