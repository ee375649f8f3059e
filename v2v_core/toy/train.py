"""Train the embedded toy model from scratch, on a CPU, reproducibly.

    python -m v2v_core.toy.train --out v2v_core/toy/model            # all ten stages (about 8 h on 2 cores)
    python -m v2v_core.toy.train --stage vae --vae-steps 2500 ...    # one stage
    python -m v2v_core.toy.train --stage decoder ...                 # fine-tunes the decoder in --out
    python -m v2v_core.toy.train --stage unet --unet-steps 8000 ...  # reuses the VAE in --out
    python -m v2v_core.toy.train --stage tune --tune-steps 1500 ...  # continues the UNet in --out
    python -m v2v_core.toy.train --stage cond --cond-steps 3500 ...  # makes the UNet image-conditioned
    python -m v2v_core.toy.train --stage sharpen ...                 # fine-tunes the decoder for detail
    python -m v2v_core.toy.train --stage recorr --recorr-steps 1000  # stage 4 again, on the conditioned UNet
    python -m v2v_core.toy.train --stage refine --refine-steps 2000  # stage 7's objective on stage 5's data
    python -m v2v_core.toy.train --stage offset --offset-steps 2000  # x0 as an offset from the source, then stage 8
    python -m v2v_core.toy.train --stage attend-recipe --out COPY    # stage 10: its recipe's runs (attend.RECIPES), resumable
    python -m v2v_core.toy.train --stage attend --attend-steps 600   # one run of stage 10, for trying new switches

Stage 1, VAE: L1 + MSE reconstruction of random 128 px crops of the image pool and of every style's
filtered version (the decoder must be able to draw sketches and pixel art, not only photos). Then the
latent scaling factor is set to 1/std of the latents (the role 0.18215 plays for SD), so the UNet
sees unit-variance latents.

Stage 2, decoder: the encoder frozen, the decoder fine-tuned to decode noisy latents (std up to
DECODER_SIGMA) to the clean image, so the UNet's small errors do not come out as coloured blotches.

Stage 3, UNet + text encoder (VAE frozen): SDEdit-shaped noise prediction. A sample is a crop, a
style and a timestep t in [T_MIN, T_MAX]; the input is the noised SOURCE latent
``x_t = sqrt(abar) z_src + sqrt(1-abar) eps`` and the UNet's epsilon is trained so that its x0
estimate lands on the STYLE target latent: loss = MSE(x0(eps_pred), z_style). A quarter of samples
are already in the style (z_src = z_style), which teaches the second LCM step to keep a styled input.
Random-content styles (pointillism, snow) place their dots/flakes from eps itself, so the model
invents them from noise. Inference is the streaming engine's standard LCM img2img path, unchanged.

Stage 4, tuning: stage 3's objective on pairs of crops of one image displaced by a few latent cells,
plus a cross-entropy that makes the self-attention queries of one crop find the other's keys where the
content moved (contracting path and middle only). The UNet's self-attention then carries the
correspondence that StreamV2V's extended attention and the studio's correspondence view rely on
(SD-1.5 learns it from scale; the toy, trained on 2 cores, did not).

Stage 5, image conditioning (InstructPix2Pix's layout): the UNet gets the clean encoded source frame as
4 extra input channels (arch.image_conditioned, warm-started from stage 4 with zero weights on the new
channels, so step 0 computes the stage-4 model), then stage 3's objective with that source given, on the
pool plus the 24 Kodak photographs (../shared/data/images/kodak, allowed as training data; never a clip
of ../shared/data/videos). Fine structure then comes from the source instead of being rebuilt from a
half-noised latent; the noise still places the invented styles' dots and flakes. Each stage reads and
writes --out, so a stopped run resumes at the stage it stopped in.

Stage 6, sharpen: stage 2 again (decoder only, one block deeper at 1/4 and 1/2 resolution: arch.deeper_decoder,
an exact warm start) on the pool plus Kodak with latent noise up to 0.05 instead of 0.3 (the image-conditioned UNet
errs less, so less smoothing is needed) and 1 - SSIM beside L1 + MSE. Stages 5 and 6 touch disjoint
weights (UNet + text encoder; decoder) and their data draws do not depend on each other.

Stage 7, re-correspondence: stage 4 again, on the image-conditioned UNet (its pairs carry each crop's
source latent). Stage 5's objective does not ask for correspondence, and it lost most of it (the
16 px layer's q.k matches moved from 8 to 104 px off a known pan): this restores it while stage 3's
objective keeps the styles.

Stage 8, refine: stage 7's objective (pairs + correspondence) on stage 5's data (pool + Kodak), with the hard
styles drawn more often: the styles keep improving (stage 5 stopped while they still were) and the
correspondence stage 7 restored is kept, not traded away again.

Stage 9, offset: the UNet re-parametrised to predict the clean latent as an offset from the encoded source frame
(x0 = z_src + output; diffusers' prediction_type "sample" plus backbones.RELATIVE_KEY in the scheduler config, which
every engine path reads through Backbone.predicted_x0), its output convolution zeroed so that step 0 returns the
source; then stage 8's objective. With epsilon prediction even "a photo" is rebuilt from the noisy latent and every
error of the predicted noise reaches x0 multiplied by sqrt(1 - abar) / sqrt(abar); an offset is exactly zero where
the style keeps the source, and small where it keeps its structure.

Stage 10, attend (in "all" as its recipe, attend.RECIPES["heads"], S1-S12, H1-H2; shipped as v4.3): a transformer block in every
UNet block, the latent's full resolution included (arch.attention_everywhere, an exact warm start), then stage 9's
objective with a tenth, training-only style whose invented detail is SHARED by tokens of similar colour
(styles.psychedelic: each region's hue turn chosen from the colour-similarity-weighted mean of the noise), and
optionally a cross-entropy that teaches the full-resolution self-attention that colour-similarity attention
(correspondence_loss.shared_attention_loss). Its purpose: a model whose self-attention carries appearance, so that
StreamV2V's extended attention and feature fusion, window attention and TokenFlow change what it draws (issue #30).
With --built-head the colour-similarity head is built into the first full-resolution block (shared_head) and its
inputs and output are supervised (v2v_core/toy/attend.py). What got there (model card, "Stage 10"): a fresh UNet of the
layout, its stem trained alone on the choice between runs, then its full-resolution attention regrouped into one head.

Weights are written in fp16 safetensors (the loader upcasts), as a diffusers pipeline folder.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..backbones import prediction_of, x0_from_output
from ..engine import BASE_STEPS, t_index_list
from .arch import DEEP_DECODER_BLOCKS, build_random_pipeline, deeper_decoder, source_relative
from .batches import (BIG_BATCH, BIG_CROP, BIG_EVERY, CROP, IN_STYLE_P, T_MAX, T_MIN, _crop_batch, _crop_plan,  # noqa: F401
                      _encode, _SdeditBatches, _styled_crop_batch, _to_tensor, commit_alternatives, paired)
from . import correspondence_loss as _corr
from .correspondence_loss import (SHARED_ATTN_LAYERS, AttnOutCapture, HeadQKCapture, shared_mean, shared_output_loss,
                                  QKCapture, correspondence_loss, shared_attention_loss)
from .data import KODAK_DIR, KODAK_SHORT_SIDES, image_pool, kodak_images, photo_indices
from . import shared_head as _shared_head
from . import styles as _styles
from .shared_head import BUILT_BLOCK, HeadCapture, head_losses, perfect_head
from .styles import STYLES

DECODER_SIGMA = 0.3  # decoder fine-tuning: latent noise up to this std (unit-variance latents)
# The structural styles are the hard ones (flat regions, hard edges): they are drawn twice as often.
STYLE_WEIGHTS = {"cartoon": 2.0, "pixel art": 2.0}
# Stage 4 (tuning): pairs of crops displaced by up to CORR_MAX_SHIFT latent cells; the self-attention
# queries of one must find the other's keys at the displaced position (cross-entropy, weight CORR_WEIGHT).
# The correspondence test's photos are never used for pairs (they stay in the diffusion data, as before).
CORR_HOLDOUT = ("astronaut", "coffee", "chelsea")
CORR_WEIGHT, CORR_MAX_SHIFT, TUNE_LR = 0.1, 6, 2e-4
# Stage 5 (image conditioning): the pool plus the Kodak photographs (../shared/data/images/kodak, allowed
# as training data) at two scales; the structural styles, which carry the most detail, drawn more often.
COND_LR, COND_STEPS = 5e-4, 3500
RECORR_STEPS = 1000        # stage 7: stage 4's objective on the conditioned UNet
# Stage 8 (refine): stage 7's pairs and correspondence loss, on stage 5's data (pool + Kodak), with the hard
# styles drawn more often: the conditioned UNet keeps learning the styles without losing correspondence.
REFINE_STEPS, REFINE_LR = 2000, 4e-4
REFINE_STYLE_WEIGHTS = {"pencil sketch": 1.5, "cartoon": 2.0, "pixel art": 2.0, "thermal": 1.5, "snowy scene": 2.0}
# Stage 9 (offset): the UNet re-parametrised to predict x0 as an offset from the source latent (arch.source_relative),
# then stage 8's objective again. Epsilon prediction rebuilds even "a photo" from the noisy latent, and its error is
# multiplied by sqrt(1 - abar) / sqrt(abar) in x0; an offset is zero where the style keeps the source.
OFFSET_STEPS, OFFSET_LR = 2000, REFINE_LR   # stage 8's learning rate (and style weights, below)
UNET_LR = 1e-3                 # stage 3's, for a UNet trained from its initialisation
COND_STYLE_WEIGHTS = {"pencil sketch": 1.5, "cartoon": 2.0, "pixel art": 2.0}
# Stage 6 (sharpen): stage 2's decoder one block deeper at 1/4 and 1/2 resolution (arch.deeper_decoder, an exact warm
# start), trained again (encoder frozen: latents, UNet and SVDiff memories are unaffected) on the pool plus Kodak with
# less latent noise than stage 2, since the image-conditioned UNet's x0 errors are smaller than the unconditioned one's,
# and a structural term beside L1 + MSE, 1 - SSIM (the evaluation's 7x7 windows): L1 + MSE alone favour a soft average
# where detail is uncertain.
SHARPEN_STEPS, SHARPEN_LR, SHARPEN_SIGMA, SHARPEN_SSIM = 600, 3e-4, 0.05, 1.0


def _cosine(opt, steps: int):
    """Cosine decay of the learning rate to 5% over `steps`."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))


def ssim_loss(a: torch.Tensor, b: torch.Tensor, win: int = 7) -> torch.Tensor:
    """1 - SSIM of images in [-1, 1] (B, 3, H, W), per channel over uniform win x win windows (valid region),
    as scikit-image's structural_similarity computes it (the evaluation's SSIM), averaged."""
    a, b = (a + 1) / 2, (b + 1) / 2
    pool = functools.partial(F.avg_pool2d, kernel_size=win, stride=1)
    n = win * win
    mu_a, mu_b = pool(a), pool(b)
    cov = n / (n - 1)          # scikit-image's sample (unbiased) variances
    va = cov * (pool(a * a) - mu_a ** 2)
    vb = cov * (pool(b * b) - mu_b ** 2)
    vab = cov * (pool(a * b) - mu_a * mu_b)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * vab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (va + vb + c2))
    return 1 - s.mean()


def _reconstruction_step(opt, sched, bar, step: int, rec: torch.Tensor, target: torch.Tensor, ssim_weight: float = 0.0) -> None:
    """One L1 + MSE (+ ssim_weight x (1 - SSIM)) reconstruction step (the VAE and decoder stages)."""
    loss = F.l1_loss(rec, target) + F.mse_loss(rec, target)
    if ssim_weight:
        loss = loss + ssim_weight * ssim_loss(rec, target)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    if step % 20 == 0:
        bar.set_postfix(loss=f"{loss.item():.4f}")


def train_vae(pipe, pool, steps: int, seed: int, batch: int = 16, lr: float = 2e-3):
    rng = np.random.default_rng(seed)
    vae = pipe.vae.to(memory_format=torch.channels_last).train()
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    sched = _cosine(opt, steps)
    bar = tqdm(range(steps), desc="vae", unit="step")
    for step in bar:
        xb = _styled_crop_batch(pool, rng, batch)
        rec = vae.decode(vae.encode(xb).latents).sample
        _reconstruction_step(opt, sched, bar, step, rec, xb)
    vae.eval()
    # latent scale: 1/std over crops of the pool, so the UNet works on unit-variance latents
    with torch.no_grad():
        lat = torch.cat([vae.encode(_to_tensor([pool[i][y:y + CROP, x:x + CROP] for i, y, x, _ in _crop_batch(pool, rng, 16)])).latents
                         for _ in range(8)])
    vae.register_to_config(scaling_factor=float(1.0 / lat.std()))
    return float(lat.std())


def train_decoder(pipe, pool, steps: int, seed: int, batch: int = 16, lr: float = 5e-4, sigma_max: float = DECODER_SIGMA,
                  ssim_weight: float = 0.0):
    """Stage 2: fine-tune the DECODER only (encoder frozen, so latents and the UNet are unaffected) to
    decode latents with added Gaussian noise of std U(0, sigma_max) (in unit-variance latent units)
    back to the clean image. A plain autoencoder's decoder is not smooth: the UNet's small x0 errors
    (about 0.2 std) came out as coloured blotches; SD's VAE gets this smoothness from its KL term."""
    rng = np.random.default_rng(seed + 2)
    gen = torch.Generator().manual_seed(seed + 2)
    vae = pipe.vae.to(memory_format=torch.channels_last)
    vae.encoder.requires_grad_(False).eval()
    vae.decoder.requires_grad_(True).train()
    sf = float(vae.config.scaling_factor)
    opt = torch.optim.Adam(vae.decoder.parameters(), lr=lr)
    sched = _cosine(opt, steps)
    bar = tqdm(range(steps), desc="decoder", unit="step")
    for step in bar:
        xb = _styled_crop_batch(pool, rng, batch)
        with torch.no_grad():
            z = vae.encode(xb).latents
        sigma = torch.rand(batch, generator=gen)[:, None, None, None] * sigma_max / sf
        rec = vae.decode(z + sigma * torch.randn(z.shape, generator=gen)).sample
        _reconstruction_step(opt, sched, bar, step, rec, xb, ssim_weight)
    vae.requires_grad_(False).eval()


def unet_input(unet, x_t: torch.Tensor, z_cond: torch.Tensor) -> torch.Tensor:
    """The UNet's input: the noisy latent, and the source latent beside it when the UNet is image-conditioned."""
    return torch.cat([x_t, z_cond], 1) if unet.config.in_channels == 2 * x_t.shape[1] else x_t


def _fit(pipe, data: _SdeditBatches, steps: int, lr: float, ema_decay: float, desc: str, make_batch, extra_loss=None,
         extra_params=(), extra_lr: float | None = None, commit: float = 0.0):
    """The UNet + text encoder optimisation loop shared by stage 3 and the tuning stage: x0-MSE against
    the style target (+ extra_loss(batch) when given), AdamW with warm-up and cosine decay, gradient
    clipping, EMA weights copied in at the end. With `commit`, that share of the loss is winner-takes-all
    (commit_loss): where the batch has an alternative target, each latent cell is scored against the nearer one."""
    unet, te = pipe.unet.train(), pipe.text_encoder.train()
    params = list(unet.parameters()) + list(te.parameters())
    groups = [{"params": params}]
    if extra_params:              # training-only probes, at their own learning rate (extra_lr, default lr)
        groups.append({"params": list(extra_params), "lr": extra_lr or lr})
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=1e-4)
    warm = 100
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))))
    ema = [p.detach().clone() for p in params]
    ids = data.ids
    prediction = prediction_of(pipe.scheduler.config)
    bar = tqdm(range(steps), desc=desc, unit="step")
    for step in bar:
        batch = make_batch(step)
        x_t, a = batch["x_t"], batch["a"]
        emb = te(ids[batch["pidx"]])[0]
        out = unet(unet_input(unet, x_t, batch["z_cond"]), batch["t"], encoder_hidden_states=emb).sample
        x0 = x0_from_output(*prediction, x_t, out, a.sqrt(), (1 - a).sqrt(), batch["z_cond"])
        loss = mse = F.mse_loss(x0, batch["z_tgt"])
        if commit:
            loss = (1 - commit) * mse + commit * commit_loss(x0, batch["z_tgt"], batch["z_alt"])
        aux = extra_loss(batch) if extra_loss is not None else None
        if aux is not None:
            loss = loss + aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            d = min(ema_decay, (1 + step) / (10 + step))
            for e, p in zip(ema, params):
                e.mul_(d).add_(p.detach(), alpha=1 - d)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{mse.item():.4f}", **({"corr": f"{aux.item():.3f}"} if aux is not None else {}))
    with torch.no_grad():
        for e, p in zip(ema, params):
            p.copy_(e)
    unet.eval()
    te.eval()


def commit_loss(x0: torch.Tensor, z_tgt: torch.Tensor, z_alt: torch.Tensor) -> torch.Tensor:
    """Mean over latent cells of the smaller of the squared errors (channel means) against the target and against the
    alternative: a model that draws either choice outright scores 0, one that draws their mean does not (x0 MSE alone
    rewards the mean of a choice it cannot compute). Equal to the MSE where z_alt is z_tgt."""
    return torch.minimum((x0 - z_tgt).pow(2).mean(1), (x0 - z_alt).pow(2).mean(1)).mean()


def train_unet(pipe, pool, steps: int, seed: int, batch: int = 16, lr: float = UNET_LR, ema_decay: float = 0.998):
    data = _SdeditBatches(pipe, pool, seed + 1, STYLE_WEIGHTS)

    def draw(step):
        crop, n = _crop_plan(step, batch)
        return data.sample(n, crop)

    _fit(pipe, data, steps, lr, ema_decay, "unet", draw)


def tune_unet(pipe, pool, steps: int, seed: int, batch: int = 16, lr: float = TUNE_LR, ema_decay: float = 0.998,
              corr_weight: float = CORR_WEIGHT, style_weights: dict = STYLE_WEIGHTS, desc: str = "tune", styles: tuple = STYLES,
              shared_weight: float = 0.0, shared_out_weight: float = 0.0, probe_lr: float | None = None,
              head_weight: float = 0.0, head_forced: bool = False, self_target: bool = False, commit: float = 0.0,
              unroll: float = 0.0):
    """Stage 4: continue stage 3's objective on pairs of displaced crops, plus the correspondence
    cross-entropy on the self-attention queries and keys (see correspondence_loss). With shared_weight, the
    full-resolution self-attention layers also learn the colour-similarity attention (shared_attention_loss) and are
    left out of the correspondence loss (stage 10). With shared_out_weight, probes of those layers' outputs learn the
    psychedelic style's shared choice (shared_output_loss). With head_weight, the head built by
    shared_head.build_shared_head and the layers under it are supervised (shared_head.head_losses) and its block is left
    out of the correspondence loss; head_forced (a diagnostic) replaces its output by the exact shared choice. With
    commit, the shared-choice styles' opposite choice (batches.commit_alternatives) is an alternative target and that
    share of the loss is _fit's winner-takes-all. With unroll, that share of the pairs is a stream's second step (unroll_second_step)."""
    data = _SdeditBatches(pipe, pool, seed + 3, style_weights, styles, commit_alternatives() if commit else ())
    held_out = set(photo_indices(CORR_HOLDOUT))
    allowed = set(range(len(pool))) - held_out
    cap = QKCapture(pipe.unet, exclude=SHARED_ATTN_LAYERS if shared_weight else (BUILT_BLOCK,) if head_weight else ())
    head = HeadCapture(pipe.unet) if head_weight else None
    head_log: list = []
    shared = HeadQKCapture(pipe.unet) if shared_weight else None
    outs = AttnOutCapture(pipe.unet) if shared_out_weight else None
    probe_log: list = []

    def draw(step):
        crop, n = _crop_plan(step, batch)
        out = data.sample_pairs(n // 2, crop, allowed, CORR_MAX_SHIFT)
        out["g"] = crop // 8
        if head is not None and head_forced:
            head.force = perfect_head(out["cells"], out["eps"][:, 0].flatten(1))
        if head is not None and self_target:
            _shared_head.own_head_targets(pipe, data, out, head)
        if unroll:
            unroll_second_step(pipe, data, out, unroll)
        return out

    def extra(b):
        loss = corr_weight * correspondence_loss(cap, b["shifts"], b["g"])
        if head is not None:
            aux = head_losses(head, b["cells"], b["eps"][:, 0].flatten(1))
            loss = loss + head_weight * aux
            _log_every(head_log, head.parts,            # about 1 - R^2 each: 0 is exact, 1 knows nothing
                       "built head, relative errors: colour {:.3f}, noise {:.3f}, output {:.3f}")
        if shared is not None or outs is not None:
            target, choice = shared_choice(b)
        if shared is not None:
            loss = loss + shared_weight * shared_attention_loss(shared, target)
        if outs is not None:
            probe = shared_output_loss(outs, choice)
            loss = loss + shared_out_weight * probe
            _log_every(probe_log, (probe.item(), choice.var().item()),   # what a silent probe would score beside it
                       "probe MSE {:.4f}, choice variance {:.4f}")
        return loss

    try:
        _fit(pipe, data, steps, lr, ema_decay, desc, draw, extra, list(outs.probes.parameters()) if outs is not None else (),
             probe_lr, commit)
    finally:
        cap.remove()
        if head is not None:
            head.remove()
        if outs is not None:
            outs.remove()
        if shared is not None:
            shared.remove()


def second_timestep(t: torch.Tensor) -> torch.Tensor:
    """The timestep of a 2-step stream's second step after a first step at t (engine.t_index_list at the strength
    whose first step is t: 399 -> 199 at 0.4, 499 -> 259 at 0.5)."""
    stride = 1000 // BASE_STEPS      # the engine's base schedule: timesteps 999 - stride * i (LCM, 1000 training steps)
    return torch.tensor([999 - stride * t_index_list((int(v) + 1) / 1000, 2)[1] for v in t])


@torch.no_grad()
def unroll_second_step(pipe, data: _SdeditBatches, b: dict, share: float) -> None:
    """Make `share` of a sample_pairs batch's pairs (not the in-style ones) what a stream's second step gets: the
    model's own first-step x0 (no gradient, today's weights) at the pair's t, noised again at second_timestep(t) with
    a noise of its own (shared by a pair where its first noise is, as the engine keeps one noise per step). Their
    target stays the rendering from the first noise: the second step is trained to keep and sharpen the choice its
    first step drew from a soft input, which a stream's second step loses otherwise (benchmarks/shared_choice_axis.py
    --second). Changes b's x_t, a and t in place."""
    n = len(b["t"]) // 2
    pick = (torch.rand(n, generator=data.gen) < share) & ~b["keep"][:n]
    if not bool(pick.any()):
        return
    pick = pick.repeat(2)
    eps2 = paired(*(torch.randn(b["eps"][:n].shape, generator=data.gen) for _ in range(2)), b["same"])
    unet = pipe.unet
    emb = pipe.text_encoder(data.ids[b["pidx"]])[0]
    x_t, a = b["x_t"], b["a"]
    out = unet(unet_input(unet, x_t, b["z_cond"]), b["t"], encoder_hidden_states=emb).sample
    x0 = x0_from_output(*prediction_of(pipe.scheduler.config), x_t, out, a.sqrt(), (1 - a).sqrt(), b["z_cond"])
    t2 = second_timestep(b["t"])
    a2 = data.abar[t2][:, None, None, None]
    k = pick[:, None, None, None]
    b["x_t"] = torch.where(k, a2.sqrt() * x0 + (1 - a2).sqrt() * eps2, x_t)
    b["a"], b["t"] = torch.where(k, a2, a), torch.where(pick, t2, b["t"])


def shared_choice(b: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The psychedelic rule on a batch of _SdeditBatches.sample_pairs: its kernel's logits (B, N, N), keyed on the
    source latents under the latent kernel (styles.SHARED_KERNEL "latent") and on the cells' colours otherwise, and
    the choice tanh(SHARED_GAIN * m) (B, N) that the probe losses target."""
    logits = _styles.latent_logits(b["z_cond"]) if _styles.SHARED_KERNEL == "latent" else _styles.shared_logits(b["cells"])
    return logits, torch.tanh(_styles.SHARED_GAIN * shared_mean(logits, b["eps"][:, 0].flatten(1)))


def _log_every(log: list, item, fmt: str, n: int = 50) -> None:
    """Collect `item` (a tuple of figures); every `n` items, print their means through `fmt` and start again."""
    log.append(item)
    if len(log) == n:
        print("\n" + fmt.format(*np.mean(log, 0)), flush=True)
        log.clear()


def train_cond(pipe, pool, steps: int, seed: int, batch: int = 16, lr: float = COND_LR, ema_decay: float = 0.998):
    """Stage 5: the UNet made image-conditioned (arch.image_conditioned: the encoded source frame as extra
    input channels, warm-started so step 0 computes the stage-4 model), then trained on stage 3's
    objective with the clean source latent given: fine structure comes from the source, the diffusion
    path draws the style and invents the random styles' dots and flakes from the noise."""
    from .arch import image_conditioned

    if pipe.unet.config.in_channels == pipe.unet.config.out_channels:
        pipe.unet = image_conditioned(pipe.unet)
    data = _SdeditBatches(pipe, pool, seed + 5, COND_STYLE_WEIGHTS)

    def draw(step):
        crop, n = _crop_plan(step, batch)
        return data.sample(n, crop)

    _fit(pipe, data, steps, lr, ema_decay, "cond", draw)


def training_info(out: Path) -> dict:
    """What the stages that wrote `out` recorded (training.json; empty for a fresh folder)."""
    path = out / "training.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save(pipe, out: Path, meta: dict):
    out.mkdir(parents=True, exist_ok=True)
    pipe.to(torch.float16).save_pretrained(out, safe_serialization=True)
    pipe.to(torch.float32)
    for cfg in [out / "model_index.json", *out.glob("*/config.json")]:  # no machine-local paths in the folder
        d = json.loads(cfg.read_text())
        # AutoencoderTiny registers a legacy block_out_channels that its own __init__ then refuses with a
        # warning on every load: the folder keeps only what the class takes
        legacy = d.get("_class_name") == "AutoencoderTiny" and d.pop("block_out_channels", None) is not None
        if d.pop("_name_or_path", None) is not None or legacy:
            cfg.write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")
    record_training(out, meta)


def record_training(out: Path, meta: dict):
    """Add `meta` to what training.json of `out` records (its other entries kept)."""
    info = training_info(out)
    info.update(meta)
    (out / "training.json").write_text(json.dumps(info, indent=2) + "\n")


def _load(out: Path):
    """The pipeline folder an earlier stage wrote, in fp32 for training."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(out, torch_dtype=torch.float32)


def main(argv=None):
    from . import attend as _attend     # stage 10 builds on this module's stages

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "model")
    ap.add_argument("--stage", choices=["all", "vae", "decoder", "unet", "tune", "cond", "sharpen", "recorr", "refine", "offset", "attend", "attend-recipe"],
                    default="all")
    ap.add_argument("--vae-steps", type=int, default=2500)
    ap.add_argument("--decoder-steps", type=int, default=800)
    ap.add_argument("--unet-steps", type=int, default=8000)
    ap.add_argument("--tune-steps", type=int, default=1500)
    ap.add_argument("--cond-steps", type=int, default=COND_STEPS)
    ap.add_argument("--sharpen-steps", type=int, default=SHARPEN_STEPS)
    ap.add_argument("--recorr-steps", type=int, default=RECORR_STEPS)
    ap.add_argument("--refine-steps", type=int, default=REFINE_STEPS)
    ap.add_argument("--offset-steps", type=int, default=OFFSET_STEPS)
    _attend.add_arguments(ap)
    ap.add_argument("--corr-weight", type=float, default=CORR_WEIGHT)
    ap.add_argument("--corr-layers", default=None,
                    help="stages with the correspondence loss (tune to attend): comma-separated name prefixes of the self-attention layers it "
                         "trains (default correspondence_loss.CORR_LAYERS: down_blocks,mid_block)")
    ap.add_argument("--corr-sharpen", type=float, default=None,
                    help="stages with the correspondence loss (tune to attend): its logit factor (default correspondence_loss.CORR_SHARPEN, "
                         "8: the loss ranks the matches while the model's own attention stays broad; 1: the model's own "
                         "softmax is the one trained to pick the match, so its attention becomes selective)")
    ap.add_argument("--tune-lr", type=float, default=TUNE_LR)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.corr_sharpen is not None:
        _corr.CORR_SHARPEN = args.corr_sharpen
    if args.corr_layers:
        _corr.CORR_LAYERS = tuple(args.corr_layers.split(","))
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    pool = image_pool(args.seed)

    @functools.cache
    def kodak_once() -> list:
        """The Kodak photographs, read once for the stages that train on them (5, 6 and 8); without them
        those stages would silently train on other data, so they stop instead."""
        kodak = kodak_images()
        if not kodak:
            raise SystemExit(f"Stages cond, sharpen and refine train on the Kodak photographs too; none found in {KODAK_DIR}.")
        return kodak

    if args.stage in ("all", "vae"):
        pipe = build_random_pipeline(args.seed)
        t0 = time.time()
        std = train_vae(pipe, pool, args.vae_steps, args.seed)
        save(pipe, args.out, {"seed": args.seed, "vae_steps": args.vae_steps, "vae_minutes": round((time.time() - t0) / 60, 1),
                              "latent_std": std, "scaling_factor": pipe.vae.config.scaling_factor})
        print(f"VAE done in {(time.time() - t0) / 60:.1f} min; latent std {std:.3f}", flush=True)
    if args.stage in ("all", "decoder"):
        pipe = _load(args.out)
        t0 = time.time()
        train_decoder(pipe, pool, args.decoder_steps, args.seed)
        save(pipe, args.out, {"decoder_steps": args.decoder_steps, "decoder_minutes": round((time.time() - t0) / 60, 1),
                              "decoder_sigma_max": DECODER_SIGMA})
        print(f"decoder done in {(time.time() - t0) / 60:.1f} min", flush=True)
    if args.stage in ("all", "unet"):
        torch.manual_seed(args.seed)
        fresh = build_random_pipeline(args.seed)  # fresh UNet + text encoder, trained VAE from --out
        pipe = _load(args.out)
        pipe.unet, pipe.text_encoder, pipe.scheduler = fresh.unet, fresh.text_encoder, fresh.scheduler
        t0 = time.time()
        train_unet(pipe, pool, args.unet_steps, args.seed)
        save(pipe, args.out, {"unet_steps": args.unet_steps, "unet_minutes": round((time.time() - t0) / 60, 1),
                              "t_range": [T_MIN, T_MAX], "in_style_p": IN_STYLE_P, "crop": CROP,
                              "big_crop": [BIG_CROP, BIG_BATCH, BIG_EVERY], "style_weights": STYLE_WEIGHTS})
        print(f"UNet done in {(time.time() - t0) / 60:.1f} min", flush=True)
    if args.stage in ("all", "tune"):
        torch.manual_seed(args.seed)
        pipe = _load(args.out)
        t0 = time.time()
        tune_unet(pipe, pool, args.tune_steps, args.seed, lr=args.tune_lr, corr_weight=args.corr_weight)
        save(pipe, args.out, {"tune_steps": args.tune_steps, "tune_minutes": round((time.time() - t0) / 60, 1),
                              "tune_lr": args.tune_lr, "corr_weight": args.corr_weight, "corr_sharpen": _corr.CORR_SHARPEN, "corr_layers": list(_corr.CORR_LAYERS), "corr_max_shift": CORR_MAX_SHIFT,
                              "corr_holdout": list(CORR_HOLDOUT), "tune_style_weights": STYLE_WEIGHTS})
        print(f"tuning done in {(time.time() - t0) / 60:.1f} min", flush=True)
    if args.stage in ("all", "cond"):
        torch.manual_seed(args.seed)
        pipe = _load(args.out)
        kodak = kodak_once()
        t0 = time.time()
        train_cond(pipe, pool + kodak, args.cond_steps, args.seed)
        save(pipe, args.out, {"cond_steps": args.cond_steps, "cond_minutes": round((time.time() - t0) / 60, 1),
                              "cond_lr": COND_LR, "cond_style_weights": COND_STYLE_WEIGHTS,
                              "cond_extra_images": f"kodak x{len(kodak)} (short sides {list(KODAK_SHORT_SIDES)})"})
        print(f"image conditioning done in {(time.time() - t0) / 60:.1f} min", flush=True)
    if args.stage in ("all", "sharpen"):
        pipe = _load(args.out)
        if tuple(pipe.vae.config.num_decoder_blocks) == DEEP_DECODER_BLOCKS:
            raise SystemExit(f"Stage sharpen deepens stage 2's decoder; the one in {args.out} is already deepened: "
                             "run it on the folder stage 2 (--stage decoder) wrote.")
        torch.manual_seed(args.seed + 10)
        pipe.vae = deeper_decoder(pipe.vae)
        t0 = time.time()
        train_decoder(pipe, pool + kodak_once(), args.sharpen_steps, args.seed + 10, lr=SHARPEN_LR,
                      sigma_max=SHARPEN_SIGMA, ssim_weight=SHARPEN_SSIM)
        save(pipe, args.out, {"sharpen_steps": args.sharpen_steps, "sharpen_minutes": round((time.time() - t0) / 60, 1),
                              "sharpen_sigma_max": SHARPEN_SIGMA, "sharpen_lr": SHARPEN_LR,
                              "sharpen_ssim_weight": SHARPEN_SSIM, "sharpen_decoder_blocks": list(DEEP_DECODER_BLOCKS)})
        print(f"decoder sharpening done in {(time.time() - t0) / 60:.1f} min", flush=True)
    if args.stage in ("all", "recorr"):
        torch.manual_seed(args.seed)
        pipe = _load(args.out)
        t0 = time.time()
        tune_unet(pipe, pool, args.recorr_steps, args.seed + 7, lr=args.tune_lr, corr_weight=args.corr_weight)
        save(pipe, args.out, {"recorr_steps": args.recorr_steps, "recorr_minutes": round((time.time() - t0) / 60, 1),
                              "recorr_lr": args.tune_lr, "recorr_corr_weight": args.corr_weight})
        print(f"re-correspondence done in {(time.time() - t0) / 60:.1f} min", flush=True)
    if args.stage in ("all", "refine"):
        torch.manual_seed(args.seed)
        pipe = _load(args.out)
        t0 = time.time()
        tune_unet(pipe, pool + kodak_once(), args.refine_steps, args.seed + 8, lr=REFINE_LR,
                  corr_weight=args.corr_weight, style_weights=REFINE_STYLE_WEIGHTS, desc="refine")
        save(pipe, args.out, {"refine_steps": args.refine_steps, "refine_minutes": round((time.time() - t0) / 60, 1),
                              "refine_lr": REFINE_LR, "refine_style_weights": REFINE_STYLE_WEIGHTS})
        print(f"refinement done in {(time.time() - t0) / 60:.1f} min", flush=True)
    if args.stage in ("all", "offset"):
        torch.manual_seed(args.seed)
        pipe = _load(args.out)
        if prediction_of(pipe.scheduler.config)[1]:
            raise SystemExit(f"Stage offset re-parametrises stage 8's UNet; the one in {args.out} already predicts offsets: "
                             "run it on the folder stage 8 (--stage refine) wrote.")
        pipe.unet, pipe.scheduler = source_relative(pipe.unet, pipe.scheduler)
        t0 = time.time()
        tune_unet(pipe, pool + kodak_once(), args.offset_steps, args.seed + 9, lr=OFFSET_LR,
                  corr_weight=args.corr_weight, style_weights=REFINE_STYLE_WEIGHTS, desc="offset")
        save(pipe, args.out, {"offset_steps": args.offset_steps, "offset_minutes": round((time.time() - t0) / 60, 1),
                              "offset_lr": OFFSET_LR, "offset_style_weights": REFINE_STYLE_WEIGHTS, "prediction": "x0 = source latent + output"})
        print(f"offset re-parametrisation done in {(time.time() - t0) / 60:.1f} min", flush=True)

    if args.stage == "attend":            # one run of stage 10 with the switches given (the recipe's runs are these)
        _attend.run(args, pool, kodak_once, sys.modules[__name__])
    if args.stage in ("all", "attend-recipe"):   # stage 10's runs in order, resumed where the folder stands (attend.RECIPE)
        if args.resume_point:
            _attend.start_from_resume_point(args.out, _attend.resume_point(args.recipe, me := sys.modules[__name__]), me)
        ran = _attend.run_recipe(args.out, args.threads, sys.modules[__name__], _attend.RECIPES[args.recipe])
        print(f"attend recipe: ran {', '.join(ran) or 'nothing (every run done)'}", flush=True)

if __name__ == "__main__":
    main()
