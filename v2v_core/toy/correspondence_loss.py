"""The toy's correspondence objective (training stages 4, 7 and 8): the self-attention queries of one crop must
find the other crop's keys where its content moved, so the UNet's q.k carries the correspondence StreamV2V's
extended attention and the studio's correspondence view rely on (see train.py)."""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

# The cross-entropy's logits are q.k / sqrt(C) times CORR_SHARPEN: a sharp match then needs no large q/k
# norms, which would make the UNet's own attention (same q.k per head) peaked and cost the styles.
CORR_SHARPEN = 8.0
# Only the contracting path and the middle learn correspondence: they read the (noised) source, while the
# expanding path draws the style (trained on every layer, the pixel-art style was lost).
CORR_LAYERS = ("down_blocks", "mid_block")


class QKCapture:
    """Forward hooks on every self-attention layer's to_q / to_k: their outputs (B, N, C), with grad
    (the correspondence loss shapes the features below them too: the projections of the features the
    diffusion objective alone learns were measured not to be enough)."""

    def __init__(self, unet, exclude: tuple[str, ...] = ()):
        self.q, self.k, self.handles = {}, {}, []
        for name, m in unet.named_modules():
            if name.endswith("attn1") and name.startswith(CORR_LAYERS) and not (exclude and name.startswith(exclude)):
                for lin, store in ((m.to_q, self.q), (m.to_k, self.k)):
                    self.handles.append(lin.register_forward_hook(lambda _m, _i, out, n=name, d=store: d.__setitem__(n, out)))

    def remove(self):
        for h in self.handles:
            h.remove()


@functools.lru_cache(maxsize=None)
def shift_targets(gt: int, dy: float, dx: float) -> tuple[torch.Tensor, torch.Tensor]:
    """For a (gt x gt) token grid B with B[i, j] = A[i + dy, j + dx] (token units, fractional allowed):
    (targets (N, N), valid (N,)): row p is the bilinear distribution over A's tokens that p's content
    came from; valid where that position lies inside A. Cached (few distinct arguments; callers only read)."""
    i, j = torch.meshgrid(torch.arange(gt, dtype=torch.float32), torch.arange(gt, dtype=torch.float32), indexing="ij")
    y, x = (i + dy).reshape(-1), (j + dx).reshape(-1)
    valid = (y >= 0) & (y <= gt - 1) & (x >= 0) & (x <= gt - 1)
    tgt = torch.zeros(gt * gt, gt * gt)
    y0, x0 = y.floor().clamp(0, gt - 1), x.floor().clamp(0, gt - 1)
    fy, fx = (y - y0).clamp(0, 1), (x - x0).clamp(0, 1)
    rows = torch.arange(gt * gt)
    for oy, wy in ((0, 1 - fy), (1, fy)):
        for ox, wx in ((0, 1 - fx), (1, fx)):
            yy, xx = (y0 + oy).clamp(max=gt - 1), (x0 + ox).clamp(max=gt - 1)
            tgt.index_put_((rows, (yy * gt + xx).long()), wy * wx, accumulate=True)
    return tgt, valid


def correspondence_loss(cap: QKCapture, shifts: list[tuple[int, int]], g: int) -> torch.Tensor:
    """Cross-entropy of softmax(CORR_SHARPEN q_B k_A^T / sqrt(C)) (and A -> B) against where each token's content
    is in the other crop, averaged over pairs, directions and self-attention layers. The first
    len(shifts) samples of the batch are the anchors A, the next len(shifts) their partners B."""
    n, losses = len(shifts), []
    for name, q in cap.q.items():
        k = cap.k[name]
        gt = int(round(q.shape[1] ** 0.5))
        r = g / gt                                            # latent cells per token
        for a, (dy, dx) in enumerate(shifts):
            for qi, ki, sy, sx in ((n + a, a, dy / r, dx / r), (a, n + a, -dy / r, -dx / r)):
                tgt, valid = shift_targets(gt, sy, sx)
                if not valid.any():
                    continue
                logp = torch.log_softmax(CORR_SHARPEN * (q[qi] @ k[ki].T) / math.sqrt(q.shape[-1]), dim=-1)
                losses.append(-(tgt[valid] * logp[valid]).sum(-1).mean())
    return torch.stack(losses).mean()


# Stage 10 (attend): the self-attention layers at the latent's full resolution learn to attend to tokens of similar
# colour, the attention the psychedelic style's shared choice is written as (styles.shared_logits): every head's
# softmax(q.k / sqrt(d)) against the softmax of the colour kernel (cross-entropy, weight SHARED_ATTN_WEIGHT). Without
# it the network met the style's choice with its mean (a bystander attention, TOY_MODEL_NOTES.md); with it, the
# attention that extended attention and feature fusion act on is one that carries appearance between similar tokens.
SHARED_ATTN_LAYERS = ("down_blocks.0.", "up_blocks.2.")
SHARED_ATTN_WEIGHT = 0.05


def self_attention_under(unet, prefixes):
    """(name, module) of every self-attention (attn1) module whose name starts with one of `prefixes`."""
    return [(name, m) for name, m in unet.named_modules() if name.endswith("attn1") and name.startswith(prefixes)]


class HeadQKCapture:
    """Forward hooks on the to_q / to_k of the self-attention layers under `prefixes`: their outputs (B, N, C), with
    grad, and each layer's number of heads."""

    def __init__(self, unet, prefixes=SHARED_ATTN_LAYERS):
        self.q, self.k, self.heads, self.handles = {}, {}, {}, []
        for name, m in self_attention_under(unet, prefixes):
            self.heads[name] = m.heads
            for lin, store in ((m.to_q, self.q), (m.to_k, self.k)):
                self.handles.append(lin.register_forward_hook(lambda _m, _i, out, n=name, d=store: d.__setitem__(n, out)))

    def remove(self):
        for h in self.handles:
            h.remove()


def shared_attention_loss(cap: HeadQKCapture, target_logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every head's attention (B, H, N, N) against softmax(target_logits) (B, N, N), averaged over
    samples, heads, tokens and layers. The layers must have N tokens (the latent's full resolution)."""
    target = torch.softmax(target_logits, dim=-1)
    losses = []
    for name, q in cap.q.items():
        b, n, c = q.shape
        h = cap.heads[name]
        if n != target.shape[1]:
            continue
        qh = q.view(b, n, h, c // h).transpose(1, 2)                                  # (B, H, N, d)
        kh = cap.k[name].view(b, n, h, c // h).transpose(1, 2)
        logp = torch.log_softmax(qh @ kh.transpose(-1, -2) / math.sqrt(c // h), dim=-1)  # (B, H, N, N)
        losses.append(-(target[:, None] * logp).sum(-1).mean())
    return torch.stack(losses).mean()


# Stage 10, second form: a loss on what the full-resolution self-attention OUTPUTS rather than on its map. A linear
# probe per layer (training only, never saved) reads the psychedelic style's shared choice, tanh(SHARED_GAIN * m) with m
# the colour-similarity-weighted mean of noise channel 0 (styles.shared_noise), from each token of the attention's
# output. Its gradient reaches the attention's values as well as its queries and keys: under the x0 MSE alone the
# network met a choice it could not yet compute with its mean, and a supervised map alone did not change that.
SHARED_OUT_WEIGHT = 0.5
# The layers whose outputs the probes read (stage 10's `--shared-out-layers`; default the full-resolution ones). A layer
# of fewer tokens reads the choice average-pooled to its grid (session 31: the low-resolution decoder, where StreamV2V's
# feature fusion acts, carried none of it).
SHARED_OUT_LAYERS = SHARED_ATTN_LAYERS


class AttnOutCapture:
    """Forward hooks on the self-attention modules under `prefixes`: their outputs (B, N, C), with grad, and one
    linear probe per layer (`probes`, to train beside the UNet)."""

    def __init__(self, unet, prefixes=None):
        prefixes = SHARED_OUT_LAYERS if prefixes is None else prefixes
        self.out, self.handles = {}, []
        self.probes = torch.nn.ModuleDict()
        for name, m in self_attention_under(unet, prefixes):
            self.probes[name.replace(".", "_")] = torch.nn.Linear(m.to_out[0].out_features, 1)
            self.handles.append(m.register_forward_hook(lambda _m, _i, out, n=name: self.out.__setitem__(n, out)))

    def remove(self):
        for h in self.handles:
            h.remove()


def shared_mean(target_logits: torch.Tensor, eps0: torch.Tensor) -> torch.Tensor:
    """(B, N): softmax(target_logits) @ eps0, the batched styles.shared_noise (eps0: (B, N), noise channel 0)."""
    return (torch.softmax(target_logits, dim=-1) @ eps0[..., None])[..., 0]


def pooled_choice(choice: torch.Tensor, n: int) -> torch.Tensor | None:
    """The shared choice (B, N) on a square grid of N tokens, average-pooled to n tokens (B, n); None when n tokens are
    no square grid that divides N's."""
    g, h = math.isqrt(choice.shape[1]), math.isqrt(n)
    if h * h != n or g * g != choice.shape[1] or g % h:
        return None
    return F.avg_pool2d(choice.view(-1, 1, g, g), g // h).flatten(1)


def shared_output_loss(cap: AttnOutCapture, choice: torch.Tensor) -> torch.Tensor:
    """MSE of each layer's probe of its attention output against the shared choice (B, N) in -1..1 (average-pooled to
    the layer's grid where it has fewer tokens), averaged over the layers."""
    losses = []
    for name, out in cap.out.items():
        target = pooled_choice(choice, out.shape[1])
        if target is not None:
            losses.append(F.mse_loss(cap.probes[name.replace(".", "_")](out)[..., 0], target))
    return torch.stack(losses).mean()
