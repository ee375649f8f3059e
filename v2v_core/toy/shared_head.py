"""Stage 10's built-in head (issue #30): the psychedelic style's shared choice written into one self-attention head.

Sessions 15-16 asked the network to LEARN an attention that averages the noise under tokens of similar colour (a
supervised attention map, a probe on the attention's output) and it never did: the attention's input carried the
token's colour and noise (least squares, held-out R^2 0.88 and 0.75) but its output carried neither. This module
builds that attention instead, in the transformer block that `arch.attention_everywhere` adds at the latent's full
resolution in the first down block, so that training has to learn only the other half: to USE a computed choice.

The block, as built (every weight a plain diffusers weight; the layout and the loader are unchanged):
- ``proj_in`` reads, from the block's GroupNorm'd input, linear estimates of the token's colour (3) and of noise
  channel 0 (fitted by least squares on real crops: ``fit_readout``) and writes each feature twice, as +x and -x, so
  every token's channel mean is exactly 0; the colour features carry the kernel's constant SHARED_BETA beside them.
- LayerNorm (``norm1``, weight 1, bias 0) then divides each token by its own norm: the colour part becomes the unit
  vector of styles.colour_features, and the noise part (scaled by NOISE_SCALE, small beside the colour) rides along.
- Head 0 of ``attn1``: queries and keys read the unit colour features, scaled so that q.k / sqrt(d) is
  SHARED_KAPPA * cos, the style's kernel; its value reads the noise. ``to_out`` writes that head's output into
  channel OUT_CHANNEL of the block's residual stream (zero in the features), the other heads' columns zero.
- ``attn2``'s and the feed-forward's output layers and ``proj_out`` start at zero: the block returns its input, so
  the UNet computes exactly what it did until it is trained (a warm start), and the gradient reaches ``proj_out``
  through the head's output at once.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from . import styles
from .batches import _encode
from .correspondence_loss import shared_mean

BUILT_BLOCK = "down_blocks.0.attentions.0"
NOISE_SCALE = 0.02         # the noise feature's size beside the colour features (|f| >= SHARED_BETA): its share of each token's norm
# proj_in's output channels: +x in each feature's even channel, -x in the odd one after it
COLOUR_CHANNELS, BETA_CHANNEL, NOISE_CHANNEL = (0, 2, 4), 6, 8
OUT_CHANNEL = 10           # the residual channel the head writes (channels 0-9 hold the features)


def _block(unet):
    return dict(unet.named_modules())[BUILT_BLOCK]


def blank_text(unet, n: int) -> torch.Tensor:
    """(n, 1, cross-attention width) zeros: a text for UNet calls that read only the built head, which sits before
    any cross-attention (the first down block's input never sees the prompt)."""
    return torch.zeros(n, 1, unet.config.cross_attention_dim)


@torch.no_grad()
def fit_readout(unet, vae, abar: torch.Tensor, images, t_range: tuple[int, int], crops: int = 64, crop: int = 128,
                seed: int = 0) -> torch.Tensor:
    """(5, C + 1): least-squares maps from the built block's GroupNorm'd input (C channels, and 1) to each token's
    cell colour (RGB in 0..1) and noise channel 0, over `crops` random crops of `images` noised at t in `t_range`
    (the image-conditioned UNet's input: noisy latent and clean source latent). Prints the held-out R^2 of each."""
    blk = _block(unet)
    cap = {}
    hook = blk.register_forward_pre_hook(lambda _m, args: cap.__setitem__("g", blk.norm(args[0])))
    rng = np.random.default_rng(seed)
    g = crop // 8
    X, Y = [], []
    try:
        for k in range(crops):
            im = images[k % len(images)]
            y, x = (int(rng.integers(0, (s - crop) // 8 + 1)) * 8 for s in im.shape[:2])
            c = np.ascontiguousarray(im[y:y + crop, x:x + crop])
            z = _encode(vae, [c])
            eps = torch.from_numpy(rng.standard_normal((1, 4, g, g)).astype(np.float32))
            t = int(rng.integers(t_range[0], t_range[1] + 1))
            a = abar[t]
            unet(torch.cat([a.sqrt() * z + (1 - a).sqrt() * eps, z], 1), torch.tensor([t]),
                 encoder_hidden_states=blank_text(unet, 1))
            X.append(cap["g"][0].flatten(1).T.numpy())
            Y.append(np.concatenate([styles.cell_colours(c, g, g), eps[0, 0].reshape(-1, 1).numpy()], 1))
    finally:
        hook.remove()
    X = np.concatenate(X)
    X = np.concatenate([X, np.ones((len(X), 1), np.float32)], 1)
    Y = np.concatenate(Y)
    half = len(X) // 2
    w, *_ = np.linalg.lstsq(X[:half], Y[:half], rcond=None)
    r2 = 1 - ((X[half:] @ w - Y[half:]) ** 2).mean(0) / Y[half:].var(0)
    print("built head readout, held-out R^2 (R, G, B, noise 0):", np.round(r2, 3), flush=True)
    w, *_ = np.linalg.lstsq(X, Y, rcond=None)
    return torch.from_numpy(w.T.astype(np.float32))


@torch.no_grad()
def build_shared_head(unet, readout: torch.Tensor) -> None:
    """Write the shared-choice head into the block BUILT_BLOCK of a UNet from arch.attention_everywhere (in place;
    see the module's docstring). `readout`: fit_readout's (5, C + 1) maps."""
    blk = _block(unet)
    tb = blk.transformer_blocks[0]
    attn = tb.attn1
    c = blk.proj_in.out_channels
    d = attn.inner_dim // attn.heads
    if d < 4 or OUT_CHANNEL >= c:
        raise ValueError(f"build_shared_head: needs heads of at least 4 channels and {OUT_CHANNEL + 1} channels")
    w, b = readout[:, :-1], readout[:, -1]
    rows_w = torch.cat([w[:3], torch.zeros(1, w.shape[1]), NOISE_SCALE * w[3:4]])           # colour (3), beta, noise
    rows_b = torch.cat([b[:3] - 0.5, torch.tensor([styles.SHARED_BETA]), NOISE_SCALE * b[3:4]])
    pw = torch.zeros(c, w.shape[1])
    pb = torch.zeros(c)
    for k in range(5):                                     # +x in channel 2k, -x in 2k + 1: every token's mean is 0
        # (2k: COLOUR_CHANNELS, BETA_CHANNEL, NOISE_CHANNEL in that order)
        pw[2 * k], pw[2 * k + 1] = rows_w[k], -rows_w[k]
        pb[2 * k], pb[2 * k + 1] = rows_b[k], -rows_b[k]
    blk.proj_in.weight.copy_(pw.view(c, -1, 1, 1).to(blk.proj_in.weight))
    blk.proj_in.bias.copy_(pb.to(blk.proj_in.bias))
    blk.norm.weight.fill_(1.0)
    blk.norm.bias.zero_()
    tb.norm1.weight.fill_(1.0)
    tb.norm1.bias.zero_()
    # LayerNorm leaves each feature channel x_k * sqrt(c / |x|^2) with |x|^2 = 2 |f|^2 (+ the small noise part):
    # channel 2k reads sqrt(c / 2) f_k / |f|. q.k over the four colour channels of head 0, divided by sqrt(d), is then
    # a^2 (c / 2) cos / sqrt(d): a^2 = SHARED_KAPPA sqrt(d) * 2 / c gives the style's logits.
    a = math.sqrt(styles.SHARED_KAPPA * math.sqrt(d) * 2 / c)
    for lin in (attn.to_q, attn.to_k):
        lin.weight[:d].zero_()
        for j, ch in enumerate((*COLOUR_CHANNELS, BETA_CHANNEL)):
            lin.weight[j, ch] = a
    attn.to_v.weight[:d].zero_()
    # the noise channel reads sqrt(c / 2) NOISE_SCALE n / |f|: the value is n / |f| (the colour norm differs
    # little between the similar tokens a query weighs)
    attn.to_v.weight[0, NOISE_CHANNEL] = 1.0 / (math.sqrt(c / 2) * NOISE_SCALE)
    out = attn.to_out[0]
    out.weight.zero_()
    out.bias.zero_()
    out.weight[OUT_CHANNEL, 0] = 1.0
    for lin in (tb.attn2.to_out[0], tb.ff.net[-1]):
        lin.weight.zero_()
        if lin.bias is not None:
            lin.bias.zero_()
    blk.proj_out.weight.zero_()
    blk.proj_out.bias.zero_()


class HeadCapture:
    """Forward hooks on the built block's ``proj_in`` (the features, (B, C, H, W)) and on its ``attn1`` (the output,
    (B, N, C)), with grad: what head_losses supervises. ``remove()`` takes them off. A diagnostic: with ``force`` set
    to a (B, N) tensor, the head's output channel is replaced by it (teacher forcing: what the rest of the network
    makes of an exact shared choice)."""

    def __init__(self, unet):
        blk = _block(unet)
        self.store, self.parts, self.force = {}, (0.0, 0.0, 0.0), None
        self.handles = [blk.proj_in.register_forward_hook(lambda _m, _i, o: self.store.__setitem__("feat", o)),
                        blk.transformer_blocks[0].attn1.register_forward_hook(self._out)]

    def _out(self, _m, _i, out):
        self.store["out"] = out
        if self.force is not None and self.force.shape == out.shape[:2]:
            out = out.clone()
            out[..., OUT_CHANNEL] = self.force.to(out)
            return out
        return None

    def remove(self):
        for h in self.handles:
            h.remove()


def perfect_head(cells: torch.Tensor, eps0: torch.Tensor) -> torch.Tensor:
    """(B, N): what the built head computes with exact features: softmax(styles.shared_logits(cells)) @ (eps0 / |f|),
    f = the colour features before normalisation (cells (B, N, 3), eps0 (B, N))."""
    return shared_mean(styles.shared_logits(cells), eps0 / styles.colour_vectors(cells).norm(dim=-1))


def head_losses(cap: HeadCapture, cells: torch.Tensor, eps0: torch.Tensor) -> torch.Tensor:
    """The built head's supervision, for the layers under it to learn exact inputs for it: MSE of the colour features
    (COLOUR_CHANNELS) against each token's colour - grey, of the noise feature (NOISE_CHANNEL, over NOISE_SCALE) against
    noise channel 0, and of the head's output against perfect_head. Samples whose token count is not the cells' are
    skipped (returns 0 then). The three terms, each about 1 - R^2, are kept in ``cap.parts`` for the log."""
    feat, out = cap.store["feat"], cap.store["out"]
    if feat.shape[2] * feat.shape[3] != cells.shape[1]:
        return feat.sum() * 0
    feat = feat.flatten(2).transpose(1, 2)                                     # (B, N, C)
    colour = F.mse_loss(feat[..., list(COLOUR_CHANNELS)], cells - 0.5) / 0.04         # / the colours' variance, about 0.2^2
    noise = F.mse_loss(feat[..., NOISE_CHANNEL] / NOISE_SCALE, eps0)
    target = perfect_head(cells, eps0)
    head = F.mse_loss(out[..., OUT_CHANNEL], target) / target.var().clamp(min=1e-4)
    cap.parts = (colour.item(), noise.item(), head.item())       # the figures logged (no graph kept)
    return colour + noise + head


def own_head_targets(pipe, data, b: dict, head: HeadCapture) -> None:
    """Stage 10's self-target try (model card): the psychedelic samples' targets re-rendered from the model's OWN
    built head (styles.turned on its value times |f|, from a no-gradient pass on the noised source), re-encoded, and
    the in-style samples' inputs re-noised from them. The head stays supervised toward the exact value."""
    psy = data.styles.index(styles.PSYCHEDELIC)
    sel = [k for k, p in enumerate(b["pidx"]) if data.prompts[p][0] == psy]
    if not sel:
        return
    a, eps = b["a"][sel], b["eps"][sel]
    with torch.no_grad():
        x_src = a.sqrt() * b["z_cond"][sel] + (1 - a).sqrt() * eps
        pipe.unet(torch.cat([x_src, b["z_cond"][sel]], 1), b["t"][sel], encoder_hidden_states=blank_text(pipe.unet, len(sel)))
        m = head.store["out"][..., OUT_CHANNEL] * styles.colour_vectors(b["cells"][sel]).norm(dim=-1)
        g = b["crop"] // 8
        imgs = [styles.turned(data.crop_image(b["items"][k], b["crop"]), m[j].view(g, g).numpy()) for j, k in enumerate(sel)]
        z = _encode(data.vae, imgs)
        b["z_tgt"][sel] = z
        keep = b["keep"][sel][:, None, None, None]
        b["x_t"][sel] = torch.where(keep, a.sqrt() * z + (1 - a).sqrt() * eps, b["x_t"][sel])
