"""TokenFlow (Geyer et al. 2023) as the studio's offline reference: SDEdit on the engine's LCM steps,
METHODS.md section 4. Whole clip in, whole clip out.

    frames_out = tokenflow(backbone, frames, "a pencil sketch", StreamSettings(), TokenFlowConfig())

Same schedule, per-step noises and LCM update as the streaming engine, so the only difference from the
per-frame baseline is how self-attention outputs are made. At each step, as the released code
(run_tokenflow_pnp.py / tokenflow_utils.py) computes it:
1. keyframes: frames in consecutive groups of B, one random keyframe per group (seeded, new draw per step);
2. source correspondences: the UNet on the SOURCE latents records every self-attention layer's INPUT
   (the transformer block's norm1 output); each frame's tokens find their nearest neighbour (cosine)
   among the tokens of its own group's keyframe and of the previous group's keyframe;
3. keyframe pass: the keyframes denoised jointly, each attending to the keys/values of ALL keyframes;
   their self-attention outputs are kept;
4. propagation pass: every frame (keyframes too) denoised with its self-attention outputs replaced by
   w * T_own[nn_own] + (1 - w) * T_prev[nn_prev], w = sigmoid(d_prev / (d_own + d_prev)) from the
   distances to the two GROUP CENTRES (0.62-0.73; group 0 uses its own keyframe only). So a keyframe
   also takes about 30% from the previous keyframe. `propagation="paper"` is the paper's text instead:
   the two nearest keyframes, w falling linearly with the distance to the previous one.
The source branch is not the edit branch: by default it reads the CLEAN source latents. Noised with the
stream's noise (the same for every frame: `source_noise="shared"`), matches are pulled towards the same
image position; the released code's per-frame DDIM-inverted latents avoid that, and `benchmarks/
tokenflow_matches.py` measures which choice follows the true motion of generated clips.
Left out on purpose: the released DDIM sampler, classifier-free guidance, DDIM inversion and PnP
feature injection (this is the SDEdit variant on LCM steps, for speed on the studio's backbones).

Memory: the source and propagation passes run in chunks of `chunk` frames and keep only what the next
chunk needs (keyframe tokens and nearest-neighbour indices); the keyframes are chosen over the whole
clip and every frame blends its own two nearest keyframes, wherever chunk borders fall, so chunking
leaves no seam (the same frames up to nearest-neighbour ties that batched float rounding breaks
differently: tested). The joint keyframe pass holds all ceil(N / B)
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
    propagation: str = param("released", "released: own group's keyframe + the previous group's, sigmoid weights "
                                         "from the group centres (the authors' code); paper: the two nearest "
                                         "keyframes, linear weights (the paper's text)", choices=("released", "paper"))
    source_noise: str = param("clean", "latents the correspondences are found on: clean source latents; per-frame: "
                                       "noised with a noise of each frame's own; shared: the stream's noise (the "
                                       "same for every frame, which pins matches to the same position)",
                              choices=("clean", "per-frame", "shared"))


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
class _SourceFeatures:
    """Stock self-attention; keeps each layer's INPUT tokens (B, N, C): the transformer block's norm1 output,
    the features the released code matches on."""

    def __init__(self):
        self.tokens: dict[str, torch.Tensor] = {}

    def self_attention(self, name, attn, hidden_states, mask):
        self.tokens[name] = hidden_states
        return None                                                 # None: the routed processor runs stock


class _Joint:
    """Extended attention across the batch: every keyframe attends to the keys/values of all of them
    (one keyframe at a time, so only one keyframe's score matrix exists at once); keeps the outputs."""

    def __init__(self):
        self.tokens: dict[str, torch.Tensor] = {}

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
    """Self-attention outputs replaced by the blend w * T[a][nn_a] + (1 - w) * T[b][nn_b] of two keyframes'
    tokens (per batch item: keyframe slots a, b and the weight w)."""

    def __init__(self, key_tokens, nn_a, nn_b, slot_a, slot_b, weights):
        self.key_tokens, self.nn_a, self.nn_b = key_tokens, nn_a, nn_b
        self.a, self.b, self.w = slot_a, slot_b, weights

    def self_attention(self, name, attn, hidden_states, mask):
        import torch

        from . import attention

        t = self.key_tokens[name]                                   # (K, N, C)
        out = []
        for i in range(hidden_states.shape[0]):
            ta = t[self.a[i]][self.nn_a[name][i]]
            tb = t[self.b[i]][self.nn_b[name][i]]
            out.append(self.w[i] * ta + (1 - self.w[i]) * tb)
        return attention.finish(attn, torch.stack(out), hidden_states)


# -- the method ----------------------------------------------------------------------------------------------
def keyframes_for_step(n: int, group: int, generator) -> list[int]:
    """One random frame from each consecutive group of `group` frames."""
    import torch

    return [g + int(torch.randint(min(group, n - g), (1,), generator=generator)) for g in range(0, n, group)]


def released_pair(i: int, n_groups: int, group: int) -> tuple[int, int, float]:
    """The released code's blend for frame i: (own group's keyframe slot, previous group's slot, w of the
    own), w = sigmoid(d2 / (d1 + d2)) with d1, d2 the distances from i to the own and previous group
    centres (g * group + group // 2). Group 0 has no previous group: its own keyframe alone."""
    g = min(i // group, n_groups - 1)
    if g == 0:
        return 0, 0, 1.0
    d1 = abs(i - (g * group + group // 2))
    d2 = abs(i - ((g - 1) * group + group // 2))
    return g, g - 1, 1.0 / (1.0 + math.exp(-d2 / (d1 + d2)))


def neighbours(i: int, keys: list[int]) -> tuple[int, int, float]:
    """The paper's blend (propagation="paper"): (slot of the previous keyframe, slot of the next keyframe, w)
    for frame i; w = 1 at the previous keyframe falling linearly to 0 at the next. Before the first / after
    the last keyframe both are it."""
    j = bisect.bisect_right(keys, i)
    p, q = max(j - 1, 0), min(j, len(keys) - 1)
    if i <= keys[0]:
        p = q = 0
    if keys[p] == i or p == q:
        return p, p, 1.0
    return p, q, 1.0 - (i - keys[p]) / (keys[q] - keys[p])


def blend_pairs(n: int, keys: list[int], config: TokenFlowConfig) -> list[tuple[int, int, float]]:
    """Per frame: (keyframe slot a, keyframe slot b, w of a), by the configured propagation rule."""
    if config.propagation == "released":
        return [released_pair(i, len(keys), config.keyframe_group) for i in range(n)]
    return [neighbours(i, keys) for i in range(n)]


def source_latents(z_src, a, b, noise, config: TokenFlowConfig, frame_noise=None):
    """The source branch's UNet input at one step (N, 4, h, w), by config.source_noise."""
    if config.source_noise == "clean":
        return z_src
    if config.source_noise == "per-frame":
        return a * z_src + b * frame_noise
    return a * z_src + b * noise


def match_tokens(unet, x_src, keys: list[int], pairs, chunks, dev):
    """Nearest neighbours (cosine) of every frame's source tokens among its two keyframes' source tokens,
    on every self-attention layer's input. unet(x, idx, ctx) runs the source branch on frames idx.
    Returns (nn_a, nn_b): {layer: (N frames, tokens) long}."""
    import torch
    import torch.nn.functional as F

    n = x_src.shape[0]
    rec = _SourceFeatures()
    key_feats: dict[str, list] = {}
    for s in range(0, len(keys), len(chunks[0])):
        idx = keys[s:s + len(chunks[0])]
        unet(x_src[idx], idx, rec)
        for name, tok in rec.tokens.items():
            key_feats.setdefault(name, []).append(F.normalize(tok.float(), dim=-1))
    key_feats = {name: torch.cat(v) for name, v in key_feats.items()}
    nn_a: dict[str, torch.Tensor] = {}
    nn_b: dict[str, torch.Tensor] = {}
    for c in chunks:
        unet(x_src[c], c, rec)
        for name, tok in rec.tokens.items():
            tok = F.normalize(tok.float(), dim=-1)
            ia = torch.stack([(tok[j] @ key_feats[name][pairs[i][0]].T).argmax(-1) for j, i in enumerate(c)])
            ib = torch.stack([(tok[j] @ key_feats[name][pairs[i][1]].T).argmax(-1) for j, i in enumerate(c)])
            nn_a.setdefault(name, torch.empty(n, tok.shape[1], dtype=torch.long, device=dev))[c] = ia
            nn_b.setdefault(name, torch.empty(n, tok.shape[1], dtype=torch.long, device=dev))[c] = ib
    return nn_a, nn_b


def match_accuracy(backbone, clip, settings=None, config: TokenFlowConfig | None = None, step: int = 0,
                   seed: int = 0) -> dict[str, float]:
    """How well TokenFlow's source correspondences follow a KNOWN constant motion (a synthetic pan or shift
    clip): per self-attention layer, the share of tokens whose nearest neighbour in each of their two
    keyframes lies within one token cell (Chebyshev) of where the content really is there. Tokens whose
    content is outside the keyframe are not counted. Step `step`'s source latents, `config.source_noise`."""
    import torch

    from . import attention
    from .backbones import seeded_noise, to_tensor
    from .engine import Stream, StreamSettings

    settings = settings or StreamSettings()
    config = config or TokenFlowConfig()
    frames = list(clip.frames)
    n, (h, w) = len(frames), frames[0].shape[:2]
    d = clip.flow.reshape(-1, 2).mean(0)                                   # (dx, dy) px a frame, constant
    stream = Stream(backbone, "a photo", settings)
    attention.install(backbone.unet)
    dev, dt = backbone.device, backbone.dtype
    with torch.inference_mode():
        z_src = torch.cat([backbone.encode_images(to_tensor(f, dev, dt)) for f in frames])
        noise = stream.draw_noise(z_src.shape[1:])
        frame_noise = seeded_noise(z_src.shape, settings.seed + 1, dev, dt)
        a, b = stream._sqrt_a[step], stream._sqrt_1ma[step]
        keys = keyframes_for_step(n, config.keyframe_group, torch.Generator().manual_seed(seed))
        pairs = blend_pairs(n, keys, config)
        chunks = [list(range(s, min(s + config.chunk, n))) for s in range(0, n, config.chunk)]

        def unet(x, idx, ctx):
            t = stream._timesteps[step].expand(x.shape[0])
            return backbone.unet(backbone.unet_input(x, z_src[idx]), t,
                                 encoder_hidden_states=stream.text.expand(x.shape[0], -1, -1),
                                 cross_attention_kwargs={"v2v": ctx}).sample

        nn_a, nn_b = match_tokens(unet, source_latents(z_src, a, b, noise[step], config, frame_noise), keys, pairs,
                                  chunks, dev)
    out = {}
    for name in nn_a:
        tokens = nn_a[name].shape[1]
        gh = round(math.sqrt(tokens * h / w))
        gw = tokens // gh
        cell = h / gh
        r, c = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
        py, px = (r.flatten() + 0.5) * cell, (c.flatten() + 0.5) * cell
        hits = total = 0
        for i in range(n):
            for slot, nn in ((pairs[i][0], nn_a[name][i]), (pairs[i][1], nn_b[name][i])):
                dt_frames = keys[slot] - i
                ty, tx = py + dt_frames * float(d[1]), px + dt_frames * float(d[0])
                inside = (ty >= 0) & (ty < h) & (tx >= 0) & (tx < w)
                er, ec = (ty / cell).floor(), (tx / cell).floor()
                gr, gc = (nn // gw).float(), (nn % gw).float()
                ok = torch.maximum((gr - er).abs(), (gc - ec).abs()) <= 1
                hits += int((ok & inside).sum())
                total += int(inside.sum())
        out[name] = hits / max(total, 1)
    return out


def tokenflow(backbone, frames: list[np.ndarray], prompt: str, settings=None, config: TokenFlowConfig | None = None,
              progress: Callable[[dict], None] | None = None, return_latents: bool = False):
    """Translate a whole clip (list of uint8 (H, W, 3) frames); returns the list of output frames
    (and the final latents with return_latents). progress(event) gets dicts with stage, step, steps,
    done, total."""
    import torch

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
    stream = Stream(backbone, prompt, settings)       # the engine's schedule, scalings, noises and text embedding
    attention.install(backbone.unet)
    dev, dt = backbone.device, backbone.dtype
    chunks = [list(range(s, min(s + config.chunk, n))) for s in range(0, n, config.chunk)]
    steps = settings.steps
    report = progress or (lambda e: None)

    with torch.inference_mode():
        z_src = []
        for c in chunks:
            z_src.append(torch.cat([backbone.encode_images(to_tensor(frames[i], dev, dt)) for i in c]))
            report({"stage": "encode", "step": 0, "steps": steps, "done": c[-1] + 1, "total": n})
        z_src = torch.cat(z_src)

        def unet(x, k, idx, ctx):
            """The UNet at step k on latents x of frames idx (their source latents condition an
            image-conditioned backbone)."""
            t = stream._timesteps[k].expand(x.shape[0])
            return backbone.unet(backbone.unet_input(x, z_src[idx]), t,
                                 encoder_hidden_states=stream.text.expand(x.shape[0], -1, -1),
                                 cross_attention_kwargs={"v2v": ctx}).sample

        noise = stream.draw_noise(z_src.shape[1:])                              # (steps, 4, h, w)
        frame_noise = (seeded_noise(z_src.shape, settings.seed + 1, dev, dt) if config.source_noise == "per-frame"
                       else None)
        gen = torch.Generator("cpu").manual_seed(int(settings.seed))
        z = z_src
        for k in range(steps):
            a, b = stream._sqrt_a[k], stream._sqrt_1ma[k]
            keys = keyframes_for_step(n, config.keyframe_group, gen)
            pairs = blend_pairs(n, keys, config)
            # 2. source correspondences on the source branch's self-attention inputs
            x_src = source_latents(z_src, a, b, noise[k], config, frame_noise)
            nn_a, nn_b = match_tokens(lambda x, idx, ctx: unet(x, k, idx, ctx), x_src, keys, pairs, chunks, dev)
            report({"stage": "source", "step": k + 1, "steps": steps, "done": n, "total": n})
            # 3. joint keyframe pass
            joint = _Joint()
            unet(a * z[keys] + b * noise[k], k, keys, joint)
            key_tokens = joint.tokens
            report({"stage": "keyframes", "step": k + 1, "steps": steps, "done": len(keys), "total": len(keys)})
            # 4. propagation pass, chunk by chunk
            z_next = torch.empty_like(z)
            for c in chunks:
                x = a * z[c] + b * noise[k]
                ctx = _Propagate(key_tokens, {nm: t[c] for nm, t in nn_a.items()}, {nm: t[c] for nm, t in nn_b.items()},
                                 [pairs[i][0] for i in c], [pairs[i][1] for i in c], [pairs[i][2] for i in c])
                x0 = backbone.predicted_x0(x, unet(x, k, c, ctx), a, b, z_src[c])
                z_next[c] = stream._c_out[k] * x0 + stream._c_skip[k] * x
                report({"stage": "propagate", "step": k + 1, "steps": steps, "done": c[-1] + 1, "total": n})
            z = z_next
            del key_tokens, nn_a, nn_b
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
