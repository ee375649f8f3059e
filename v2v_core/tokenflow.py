"""TokenFlow (Geyer et al. 2023) as the studio's offline reference: SDEdit on the engine's LCM steps,
METHODS.md section 4. Whole clip in, whole clip out.

    frames_out = tokenflow(backbone, frames, "a pencil sketch", StreamSettings(), TokenFlowConfig())

Same schedule, per-step noises and LCM update as the streaming engine, so the only difference from the
per-frame baseline is how self-attention outputs are made. At each step, as the released code
(run_tokenflow_pnp.py / tokenflow_utils.py) computes it:
1. keyframes: frames in consecutive groups of B, one random keyframe per group (seeded, new draw per step);
2. keyframe pass: the keyframes of BOTH branches, the source branch (the source latents, under the source
   prompt: the released scripts' inversion prompt, empty by default) and the edit branch, each keyframe
   attending to the keys/values of all keyframes of its own branch; their self-attention outputs are kept,
   and the source keyframes' self-attention INPUTS (the transformer block's norm1 output);
3. propagation pass, both branches again: at every self-attention layer each frame's SOURCE tokens, as this
   pass has computed them so far, find their nearest neighbour (cosine) among the source inputs of its own
   group's keyframe and of the previous group's keyframe; then BOTH branches' outputs are replaced by
   w * T_own[nn_own] + (1 - w) * T_prev[nn_prev] of their own branch's keyframe outputs, w = sigmoid(d_prev /
   (d_own + d_prev)) from the distances to the two GROUP CENTRES (0.62-0.73; group 0 uses its own keyframe
   only). So a keyframe also takes about 30% from the previous keyframe, and from the second layer on the
   matches are made on a source branch that is itself propagated (tokenflow_utils.py's propagation path).
   `source_branch="stock"` is the studio's earlier reading: a separate stock pass of the source records every
   layer's input first and the matches are made on those (unpropagated) features; it costs one source pass
   instead of a second branch in every pass. `propagation="paper"` is the paper's text instead of the
   released blend: the two nearest keyframes, w falling linearly with the distance to the previous one.
The source branch's latents: by default the CLEAN source latents. Noised with the
stream's noise (the same for every frame: `source_noise="shared"`), matches are pulled towards the same
image position; the released code's per-frame DDIM-inverted latents avoid that, and `benchmarks/
tokenflow_matches.py` measures which choice follows the true motion of generated clips.
Left out on purpose: the released DDIM sampler, classifier-free guidance, DDIM inversion and PnP
feature injection (this is the SDEdit variant on LCM steps, for speed on the studio's backbones). The released
scripts cut a clip to a multiple of the group size; here a shorter last group is kept (its keyframe drawn among
its own frames, its weights from its centre as if it were whole): the studio's extension.

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
    source_branch: str = param("released", "released: the source branch runs beside the edit branch in the keyframe "
                                           "and propagation passes, propagated like it, and each layer's matches are "
                                           "made on it as that pass computes it (the authors' code); stock: a "
                                           "separate stock pass of the source gives every layer's matches first",
                               choices=("released", "stock"))
    source_prompt: str = param("", "the source branch's prompt: the released scripts use the inversion prompt, a "
                                   "description of the source clip (empty by default)")


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
    # the released source branch runs beside the edit branch in every pass: twice the batch
    batch = max(min(config.chunk, n_frames), k) * (2 if config.source_branch == "released" else 1)
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
    """Extended attention across the batch: every keyframe attends to the keys/values of all keyframes of its
    branch (the batch is `branches` equal halves: [source keyframes; edit keyframes] for the released source
    branch), one keyframe at a time, so only one keyframe's score matrix exists at once. Keeps the outputs and,
    with keep_inputs, the first branch's inputs (the source keyframes' norm1 outputs: what frames match on)."""

    def __init__(self, branches: int = 1, keep_inputs: bool = False):
        self.branches, self.keep_inputs = branches, keep_inputs
        self.tokens: dict[str, torch.Tensor] = {}
        self.inputs: dict[str, torch.Tensor] = {}

    def self_attention(self, name, attn, hidden_states, mask):
        import torch
        import torch.nn.functional as F

        from . import attention

        p = attention.project(attn, hidden_states)
        b, n, c = p.k.shape
        m = b // self.branches
        out = []
        for h in range(self.branches):
            k_all, v_all = p.k[h * m:(h + 1) * m].reshape(1, m * n, c), p.v[h * m:(h + 1) * m].reshape(1, m * n, c)
            out += [attention.attend(attn, p.q[i:i + 1], k_all, v_all, mask) for i in range(h * m, (h + 1) * m)]
        self.tokens[name] = torch.cat(out)
        if self.keep_inputs:
            self.inputs[name] = F.normalize(hidden_states[:m].float(), dim=-1)
        return attention.finish(attn, self.tokens[name], hidden_states)


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


class _PropagateReleased:
    """The released propagation pass on [source frames; edit frames]: at every layer the source half's
    self-attention inputs, as this pass has computed them (its earlier layers propagated), are matched (cosine)
    to the source keyframes' inputs of the joint pass (`key_inputs`, normalised); both halves' outputs are
    replaced by the blend of their own branch's keyframe outputs (`key_out`: [source keyframes; edit keyframes])
    at those matches. `matches`, when given, collects each layer's (nn_a, nn_b) per frame."""

    def __init__(self, key_inputs, key_out, slot_a, slot_b, weights, matches: dict | None = None):
        self.key_inputs, self.key_out = key_inputs, key_out
        self.a, self.b, self.w = slot_a, slot_b, weights
        self.matches = matches

    def self_attention(self, name, attn, hidden_states, mask):
        import torch
        import torch.nn.functional as F

        from . import attention

        m = hidden_states.shape[0] // 2
        src = F.normalize(hidden_states[:m].float(), dim=-1)
        ki, t = self.key_inputs[name], self.key_out[name]
        kn = ki.shape[0]
        out = [None] * (2 * m)
        for i in range(m):
            ia = (src[i] @ ki[self.a[i]].T).argmax(-1)
            ib = (src[i] @ ki[self.b[i]].T).argmax(-1)
            for h in (0, 1):
                out[h * m + i] = self.w[i] * t[h * kn + self.a[i]][ia] + (1 - self.w[i]) * t[h * kn + self.b[i]][ib]
            if self.matches is not None:
                self.matches.setdefault(name, []).append((ia, ib))
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


def source_matches(unet, both, x_src, k, keys, pairs, chunks, config: TokenFlowConfig, dev):
    """Every frame's nearest tokens in its two keyframes, per self-attention layer, as a run with `config` finds
    them at step k: on a stock pass of the source (source_branch="stock"), or where the released propagation pass
    computes them, on a source branch propagated layer by layer ("released"). unet/both: branch_unets'.
    Returns (nn_a, nn_b): {layer: (N frames, tokens) long}."""
    import torch

    if config.source_branch == "stock":
        return match_tokens(lambda x, idx, ctx: unet(x, k, idx, ctx, source=True), x_src, keys, pairs, chunks, dev)
    joint = _Joint(branches=2, keep_inputs=True)
    both(x_src[keys], x_src[keys], k, keys, joint)     # the edit branch does not reach the source branch: any will do
    n = x_src.shape[0]
    nn_a: dict[str, torch.Tensor] = {}
    nn_b: dict[str, torch.Tensor] = {}
    for c in chunks:
        found: dict[str, list] = {}
        both(x_src[c], x_src[c], k, c, _PropagateReleased(joint.inputs, joint.tokens, [pairs[i][0] for i in c],
                                                          [pairs[i][1] for i in c], [pairs[i][2] for i in c], found))
        for name, per_frame in found.items():
            tokens = per_frame[0][0].shape[0]
            nn_a.setdefault(name, torch.empty(n, tokens, dtype=torch.long, device=dev))[c] = torch.stack([m[0] for m in per_frame])
            nn_b.setdefault(name, torch.empty(n, tokens, dtype=torch.long, device=dev))[c] = torch.stack([m[1] for m in per_frame])
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
        unet, both = branch_unets(backbone, stream, z_src, config)
        nn_a, nn_b = source_matches(unet, both, source_latents(z_src, a, b, noise[step], config, frame_noise), step,
                                    keys, pairs, chunks, config, dev)
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


def branch_unets(backbone, stream, z_src, config: TokenFlowConfig):
    """The UNet calls of a run: unet(x, k, idx, ctx, source=False) at step k on latents x of frames idx (their source
    latents condition an image-conditioned backbone) under the edit prompt (the source prompt with source=True), and
    both(x_source, x_edit, k, idx, ctx): one call on [source branch; edit branch] of frames idx, returning the edit
    branch's output."""
    import torch

    src_text = backbone.encode_prompt(config.source_prompt)

    def unet(x, k, idx, ctx, source=False, text=None):
        t = stream._timesteps[k].expand(x.shape[0])
        text = text if text is not None else (src_text if source else stream.text).expand(x.shape[0], -1, -1)
        return backbone.unet(backbone.unet_input(x, z_src[idx]), t, encoder_hidden_states=text,
                             cross_attention_kwargs={"v2v": ctx}).sample

    def both(x_source, x_edit, k, idx, ctx):
        m = len(idx)
        text = torch.cat([src_text.expand(m, -1, -1), stream.text.expand(m, -1, -1)])
        return unet(torch.cat([x_source, x_edit]), k, list(idx) + list(idx), ctx, text=text)[m:]

    return unet, both


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

        unet, both = branch_unets(backbone, stream, z_src, config)
        noise = stream.draw_noise(z_src.shape[1:])                              # (steps, 4, h, w)
        frame_noise = (seeded_noise(z_src.shape, settings.seed + 1, dev, dt) if config.source_noise == "per-frame"
                       else None)
        gen = torch.Generator("cpu").manual_seed(int(settings.seed))
        z = z_src
        for k in range(steps):
            a, b = stream._sqrt_a[k], stream._sqrt_1ma[k]
            keys = keyframes_for_step(n, config.keyframe_group, gen)
            pairs = blend_pairs(n, keys, config)
            x_src = source_latents(z_src, a, b, noise[k], config, frame_noise)
            released = config.source_branch == "released"
            if released:        # the joint keyframe pass on both branches, the source keyframes' inputs kept
                joint = _Joint(branches=2, keep_inputs=True)
                both(x_src[keys], a * z[keys] + b * noise[k], k, keys, joint)
            else:               # stock: every frame's matches from a stock pass of the source, then the joint pass
                nn_a, nn_b = match_tokens(lambda x, idx, ctx: unet(x, k, idx, ctx, source=True), x_src, keys, pairs,
                                          chunks, dev)
                report({"stage": "source", "step": k + 1, "steps": steps, "done": n, "total": n})
                joint = _Joint()
                unet(a * z[keys] + b * noise[k], k, keys, joint)
            report({"stage": "keyframes", "step": k + 1, "steps": steps, "done": len(keys), "total": len(keys)})
            # the propagation pass, chunk by chunk
            z_next = torch.empty_like(z)
            for c in chunks:
                x = a * z[c] + b * noise[k]
                slots = ([pairs[i][0] for i in c], [pairs[i][1] for i in c], [pairs[i][2] for i in c])
                if released:
                    out = both(x_src[c], x, k, c, _PropagateReleased(joint.inputs, joint.tokens, *slots))
                else:
                    out = unet(x, k, c, _Propagate(joint.tokens, {nm: t[c] for nm, t in nn_a.items()},
                                                   {nm: t[c] for nm, t in nn_b.items()}, *slots))
                x0 = backbone.predicted_x0(x, out, a, b, z_src[c])
                z_next[c] = stream._c_out[k] * x0 + stream._c_skip[k] * x
                report({"stage": "propagate", "step": k + 1, "steps": steps, "done": c[-1] + 1, "total": n})
            z = z_next
            del joint
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
