"""TokenFlow (Geyer et al. 2023) as the studio's offline reference: SDEdit on the engine's LCM steps,
METHODS.md section 4. Whole clip in, whole clip out.

    frames_out = tokenflow(backbone, frames, "a pencil sketch", StreamSettings(), TokenFlowConfig())

Same schedule, noise and LCM update as the streaming engine (one seeded eps0 for every frame), so the
only difference from the per-frame baseline is how self-attention outputs are made. At each step:
1. keyframes: frames in consecutive groups of B, one random keyframe per group (seeded, new draw per step);
2. source correspondences: the UNet on the noised SOURCE latents records every self-attention layer's
   output tokens; each frame's tokens find their nearest neighbour (cosine) among the tokens of its
   previous and next keyframe;
3. keyframe pass: the keyframes denoised jointly, each attending to the keys/values of ALL keyframes;
   their self-attention outputs are kept;
4. propagation pass: every frame denoised with its self-attention outputs replaced by
   w * T_prev[nn_prev] + (1 - w) * T_next[nn_next], w falling linearly from 1 at the previous keyframe.

Memory: the source and propagation passes run in chunks of `chunk` frames and keep only what the next
chunk needs (keyframe tokens and nearest-neighbour indices); the keyframes are chosen over the whole
clip and every frame blends its own two nearest keyframes, wherever chunk borders fall, so chunking
leaves no seam (and gives the same frames: tested). The joint keyframe pass holds all ceil(N / B)
keyframes at once: its memory grows with N / B. Before anything is decoded, `check_memory` estimates
the peak from the clip size and refuses, naming the limit and what to lower, rather than dying mid-run.
The estimate is parts plus a term calibrated on measured runs (toy, 256 px, CPU); it errs high: 385 MiB
estimated against 295-320 MiB of measured peak RSS growth at 48 frames, 592 against 325-440 at 96.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from .config import param, validate
from .errors import V2VError

if TYPE_CHECKING:
    import numpy as np
    import torch


@dataclass
class TokenFlowConfig:
    """TokenFlow's knobs. keyframe_group is the paper's B; chunk and memory_limit_gb are this
    project's memory controls (they do not change the result)."""
    keyframe_group: int = param(8, "B: frames per keyframe group (one random keyframe per group per step)",
                                lo=1, hi=512, step=1)
    chunk: int = param(8, "frames per UNet batch in the source and propagation passes (lower: less memory, "
                          "same result)", lo=1, hi=512, step=1, flag="--tokenflow-chunk")
    memory_limit_gb: float = param(0.0, "refuse a run whose estimated peak exceeds this many GB (0: 80% of "
                                        "the memory free now)", lo=0.0, hi=4096.0)


# -- memory estimate ---------------------------------------------------------------------------------------
ACTIVATION_FACTOR = 12   # live activations of a UNet forward pass, in units of (self-attention tokens x width)
# What the parts above do not capture (allocator growth, per-frame temporaries, workspaces), calibrated by
# measuring peak RSS growth of whole runs on the toy backbone at 256 px on a CPU (48 frames: 295 MiB;
# 96 frames: 440 MiB) and expressed in the same unit, so it scales with the backbone and the frame size:
CALIBRATED_FIXED_UNITS = 330
CALIBRATED_PER_FRAME_UNITS = 6.5


def self_attention_layers(unet, height: int, width: int) -> dict[str, tuple[int, int, int]]:
    """name -> (tokens, channels, heads) of every self-attention layer for a latent of height x width."""
    n_down = len(unet.config.block_out_channels)
    out = {}
    for name, m in unet.named_modules():
        if not name.endswith("attn1"):
            continue
        part = name.split(".")
        level = (int(part[1]) if part[0] == "down_blocks" else n_down - 1 - int(part[1]) if part[0] == "up_blocks"
                 else n_down - 1)
        h, w = math.ceil(height / 2 ** level), math.ceil(width / 2 ** level)
        out[name] = (h * w, m.to_q.out_features, m.heads)
    return out


def estimate_peak_bytes(backbone, n_frames: int, height: int, width: int, config: TokenFlowConfig) -> dict:
    """An estimate (by parts, bytes) of what a run adds to memory, from the clip size alone."""
    f = backbone.vae_factor            # pixels per latent cell (8 for SD's and the toy's VAEs)
    h, w = height // f, width // f
    el = 2 if str(backbone.dtype) == "torch.float16" else 4
    layers = self_attention_layers(backbone.unet, h, w)
    per_frame = sum(n * c for n, c, _ in layers.values())            # self-attention output values per frame
    tokens = sum(n for n, _, _ in layers.values())
    k = math.ceil(n_frames / config.keyframe_group)
    batch = max(min(config.chunk, n_frames), k)
    parts = {
        "frames (input + output, uint8)": 2 * n_frames * height * width * 3,
        "latents (source, current, next)": 3 * n_frames * 4 * h * w * el,
        "nearest-neighbour indices": 2 * n_frames * tokens * 8,
        "keyframe tokens (source + edited)": 2 * k * per_frame * el,
        "UNet activations (largest batch)": ACTIVATION_FACTOR * batch * per_frame * el,
        "joint attention scores (one keyframe)": max(n * k * n * hd for n, _, hd in layers.values()) * el,
        "working memory (calibrated on measured runs)":
            int((CALIBRATED_FIXED_UNITS + CALIBRATED_PER_FRAME_UNITS * n_frames) * per_frame * el),
    }
    parts["total"] = sum(parts.values())
    return parts


def memory_limit_bytes(backbone, config: TokenFlowConfig) -> tuple[int, str]:
    if config.memory_limit_gb > 0:
        return int(config.memory_limit_gb * 2 ** 30), "memory_limit_gb"
    import torch

    if backbone.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(backbone.device)
        return int(0.8 * free), "80% of the GPU memory free now"
    import psutil

    return int(0.8 * psutil.virtual_memory().available), "80% of the RAM free now"


def check_memory(backbone, n_frames: int, height: int, width: int, config: TokenFlowConfig) -> dict:
    """Raise V2VError, before any frame is read or any tensor allocated, when the estimate exceeds
    the limit; return the estimate otherwise."""
    est = estimate_peak_bytes(backbone, n_frames, height, width, config)
    limit, why = memory_limit_bytes(backbone, config)
    if est["total"] > limit:
        gb = 2 ** 30
        raise V2VError(
            f"TokenFlow would need about {est['total'] / gb:.1f} GB for {n_frames} frames at {width}x{height} "
            f"(limit {limit / gb:.1f} GB: {why}). Lower it: fewer frames (--frames), a smaller --size, a larger "
            f"--keyframe-group (now {config.keyframe_group}: fewer keyframes in the joint pass) or a smaller "
            f"--tokenflow-chunk (now {config.chunk}); or use a streaming method, whose memory does not grow with the clip.")
    return est


# -- attention contexts (through v2v_core.attention's routed processors) -----------------------------------
class _Record:
    """Stock self-attention; keeps each layer's output tokens (B, N, C)."""

    def __init__(self):
        self.tokens: dict[str, torch.Tensor] = {}

    def self_attention(self, name, attn, hidden_states, mask):
        from . import attention

        p = attention.project(attn, hidden_states)
        out = attention.attend(attn, p.q, p.k, p.v, mask)
        self.tokens[name] = out
        return attention.finish(attn, out, hidden_states)


class _Joint(_Record):
    """Extended attention across the batch: every keyframe attends to the keys/values of all of them
    (one keyframe at a time, so only one keyframe's score matrix exists at once)."""

    def self_attention(self, name, attn, hidden_states, mask):
        import torch

        from . import attention

        p = attention.project(attn, hidden_states)
        b, n, c = p.k.shape
        k_all, v_all = p.k.reshape(1, b * n, c), p.v.reshape(1, b * n, c)
        out = torch.cat([attention.attend(attn, p.q[i:i + 1], k_all, v_all, mask) for i in range(b)])
        self.tokens[name] = out
        return attention.finish(attn, out, hidden_states)


class _Propagate:
    """Self-attention outputs replaced by the blend of the two nearest keyframes' tokens."""

    def __init__(self, key_tokens, nn_prev, nn_next, prev, nxt, weights):
        self.key_tokens, self.nn_prev, self.nn_next = key_tokens, nn_prev, nn_next
        self.prev, self.next, self.w = prev, nxt, weights          # per batch item: keyframe slots and w

    def self_attention(self, name, attn, hidden_states, mask):
        import torch

        from . import attention

        t = self.key_tokens[name]                                   # (K, N, C)
        out = []
        for b in range(hidden_states.shape[0]):
            tp = t[self.prev[b]][self.nn_prev[name][b]]
            tn = t[self.next[b]][self.nn_next[name][b]]
            out.append(self.w[b] * tp + (1 - self.w[b]) * tn)
        return attention.finish(attn, torch.stack(out), hidden_states)


# -- the method ----------------------------------------------------------------------------------------------
def keyframes_for_step(n: int, group: int, generator) -> list[int]:
    """One random frame from each consecutive group of `group` frames."""
    import torch

    return [g + int(torch.randint(min(group, n - g), (1,), generator=generator)) for g in range(0, n, group)]


def neighbours(i: int, keys: list[int]) -> tuple[int, int, float]:
    """(slot of the previous keyframe, slot of the next keyframe, w) for frame i; w = 1 at the previous
    keyframe falling linearly to 0 at the next. Before the first / after the last keyframe both are it."""
    j = bisect.bisect_right(keys, i)
    p, q = max(j - 1, 0), min(j, len(keys) - 1)
    if i <= keys[0]:
        p = q = 0
    if keys[p] == i or p == q:
        return p, p, 1.0
    return p, q, 1.0 - (i - keys[p]) / (keys[q] - keys[p])


def tokenflow(backbone, frames: list[np.ndarray], prompt: str, settings=None, config: TokenFlowConfig | None = None,
              progress: Callable[[dict], None] | None = None, return_latents: bool = False):
    """Translate a whole clip (list of uint8 (H, W, 3) frames); returns the list of output frames
    (and the final latents with return_latents). progress(event) gets dicts with stage, step, steps,
    done, total."""
    import torch
    import torch.nn.functional as F

    from . import attention
    from .backbones import seeded_noise, to_tensor, to_uint8
    from .engine import Stream, StreamSettings

    settings = settings or StreamSettings()
    config = config or TokenFlowConfig()
    validate(config)
    n = len(frames)
    if n == 0:
        raise V2VError("TokenFlow needs at least one frame.")
    check_memory(backbone, n, frames[0].shape[0], frames[0].shape[1], config)
    stream = Stream(backbone, prompt, settings)       # the engine's schedule, scalings and text embedding
    attention.install(backbone.unet)
    dev, dt = backbone.device, backbone.dtype
    chunks = [list(range(s, min(s + config.chunk, n))) for s in range(0, n, config.chunk)]
    steps = settings.steps
    report = progress or (lambda e: None)

    def unet(x, k, ctx):
        t = stream._timesteps[k].expand(x.shape[0])
        return backbone.unet(x, t, encoder_hidden_states=stream.text.expand(x.shape[0], -1, -1),
                             cross_attention_kwargs={"v2v": ctx}).sample

    with torch.inference_mode():
        z_src = []
        for c in chunks:
            z_src.append(torch.cat([backbone.encode_images(to_tensor(frames[i], dev, dt)) for i in c]))
            report({"stage": "encode", "step": 0, "steps": steps, "done": c[-1] + 1, "total": n})
        z_src = torch.cat(z_src)
        noise = seeded_noise(z_src.shape[1:], settings.seed, dev, dt)
        gen = torch.Generator("cpu").manual_seed(int(settings.seed))
        z = z_src
        for k in range(steps):
            a, b = stream._sqrt_a[k], stream._sqrt_1ma[k]
            keys = keyframes_for_step(n, config.keyframe_group, gen)
            near = [neighbours(i, keys) for i in range(n)]
            # 2. source correspondences: keyframes' source tokens, then every frame's nearest neighbours
            rec = _Record()
            src_keys: dict[str, list] = {}
            for s in range(0, len(keys), config.chunk):
                unet(a * z_src[keys[s:s + config.chunk]] + b * noise, k, rec)
                for name, tok in rec.tokens.items():
                    src_keys.setdefault(name, []).append(F.normalize(tok.float(), dim=-1))
            src_keys = {name: torch.cat(v) for name, v in src_keys.items()}
            nn_prev: dict[str, torch.Tensor] = {}
            nn_next: dict[str, torch.Tensor] = {}
            for c in chunks:
                unet(a * z_src[c] + b * noise, k, rec)
                for name, tok in rec.tokens.items():
                    tok = F.normalize(tok.float(), dim=-1)
                    ip = torch.stack([(tok[j] @ src_keys[name][near[i][0]].T).argmax(-1) for j, i in enumerate(c)])
                    iq = torch.stack([(tok[j] @ src_keys[name][near[i][1]].T).argmax(-1) for j, i in enumerate(c)])
                    nn_prev.setdefault(name, torch.empty(n, tok.shape[1], dtype=torch.long, device=dev))[c] = ip
                    nn_next.setdefault(name, torch.empty(n, tok.shape[1], dtype=torch.long, device=dev))[c] = iq
                report({"stage": "source", "step": k + 1, "steps": steps, "done": c[-1] + 1, "total": n})
            del src_keys
            # 3. joint keyframe pass
            joint = _Joint()
            unet(a * z[keys] + b * noise, k, joint)
            key_tokens = joint.tokens
            report({"stage": "keyframes", "step": k + 1, "steps": steps, "done": len(keys), "total": len(keys)})
            # 4. propagation pass, chunk by chunk
            z_next = torch.empty_like(z)
            for c in chunks:
                x = a * z[c] + b * noise
                ctx = _Propagate(key_tokens, {nm: t[c] for nm, t in nn_prev.items()},
                                 {nm: t[c] for nm, t in nn_next.items()},
                                 [near[i][0] for i in c], [near[i][1] for i in c], [near[i][2] for i in c])
                eps = unet(x, k, ctx)
                x0 = (x - b * eps) / a
                z_next[c] = stream._c_out[k] * x0 + stream._c_skip[k] * x
                report({"stage": "propagate", "step": k + 1, "steps": steps, "done": c[-1] + 1, "total": n})
            z = z_next
            del key_tokens, nn_prev, nn_next
        out = []
        for c in chunks:
            out += to_uint8(backbone.decode_latents(z[c]))
            report({"stage": "decode", "step": steps, "steps": steps, "done": c[-1] + 1, "total": n})
    return (out, z) if return_latents else out


class TokenFlow:
    """The offline method object (registry / CLI): not a stream plug-in; call run()."""
    online = False

    def __init__(self, config: TokenFlowConfig | None = None, name: str = "tokenflow"):
        self.config = config or TokenFlowConfig()
        validate(self.config)
        self.name = name

    def check_memory(self, backbone, n_frames: int, height: int, width: int) -> dict:
        """What every offline method offers its callers: refuse (V2VError) before any frame is read."""
        return check_memory(backbone, n_frames, height, width, self.config)

    def run(self, backbone, frames, prompt, settings=None, progress=None):
        return tokenflow(backbone, frames, prompt, settings, self.config, progress)
