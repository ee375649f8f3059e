"""Train the embedded toy model from scratch, on a CPU, reproducibly.

    python -m v2v_core.toy.train --out v2v_core/toy/model            # all three stages (about 80 min on 2 cores)
    python -m v2v_core.toy.train --stage vae --vae-steps 2500 ...    # one stage
    python -m v2v_core.toy.train --stage decoder ...                 # fine-tunes the decoder in --out
    python -m v2v_core.toy.train --stage unet --unet-steps 8000 ...  # reuses the VAE in --out

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

Weights are written in fp16 safetensors (the loader upcasts), as a diffusers pipeline folder.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .arch import build_random_pipeline
from .data import image_pool
from .styles import STYLES

CROP = 128          # training crop in pixels (16x16 latents)
T_MIN, T_MAX = 120, 620   # covers strength 0.3..0.6 with 1..4 LCM steps (t = 399/199 at 0.4, 499/259 at 0.5)
IN_STYLE_P = 0.25
# Every BIG_EVERY-th UNet step trains on BIG_CROP px crops (batch BIG_BATCH, about the same cost), so the
# self-attention layers also see the token counts of 256 px inference (16x16 and 8x8), not only 8x8 / 4x4.
BIG_CROP, BIG_BATCH, BIG_EVERY = 256, 4, 4
DECODER_SIGMA = 0.3  # decoder fine-tuning: latent noise up to this std (unit-variance latents)
# The structural styles are the hard ones (flat regions, hard edges): they are drawn twice as often.
STYLE_WEIGHTS = {"cartoon": 2.0, "pixel art": 2.0}


def _crop_batch(pool, rng, n, crop=CROP):
    """n random crops (aligned to 8 px, random flip) -> list of (pool index, y, x, flip), from the
    images at least `crop` px on each side."""
    fits = [k for k, im in enumerate(pool) if min(im.shape[:2]) >= crop]
    out = []
    for _ in range(n):
        i = fits[int(rng.integers(len(fits)))]
        h, w = pool[i].shape[:2]
        y = int(rng.integers(0, (h - crop) // 8 + 1)) * 8
        x = int(rng.integers(0, (w - crop) // 8 + 1)) * 8
        out.append((i, y, x, bool(rng.random() < 0.5)))
    return out


def _to_tensor(imgs) -> torch.Tensor:
    a = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return a.contiguous(memory_format=torch.channels_last)


def _styled_crop_batch(pool, rng, batch: int) -> torch.Tensor:
    """A batch of random crops, each under a random style (the autoencoder must draw every style)."""
    imgs = []
    for i, y, x, flip in _crop_batch(pool, rng, batch):
        c = pool[i][y:y + CROP, x:x + CROP]
        c = c[:, ::-1] if flip else c
        style = STYLES[int(rng.integers(len(STYLES)))]
        imgs.append(style.apply(np.ascontiguousarray(c), rng=rng))
    return _to_tensor(imgs)


def _cosine(opt, steps: int):
    """Cosine decay of the learning rate to 5% over `steps`."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))


def _reconstruction_step(opt, sched, bar, step: int, rec: torch.Tensor, target: torch.Tensor) -> None:
    """One L1 + MSE reconstruction step (the VAE and decoder stages)."""
    loss = F.l1_loss(rec, target) + F.mse_loss(rec, target)
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


def train_decoder(pipe, pool, steps: int, seed: int, batch: int = 16, lr: float = 5e-4, sigma_max: float = DECODER_SIGMA):
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
        _reconstruction_step(opt, sched, bar, step, rec, xb)
    vae.requires_grad_(False).eval()


def _encode(vae, imgs) -> torch.Tensor:
    return vae.encode(_to_tensor(imgs)).latents * vae.config.scaling_factor


def train_unet(pipe, pool, steps: int, seed: int, batch: int = 16, lr: float = 1e-3, ema_decay: float = 0.998):
    rng = np.random.default_rng(seed + 1)
    gen = torch.Generator().manual_seed(seed + 1)
    vae, unet, te, tok = pipe.vae.eval(), pipe.unet.train(), pipe.text_encoder.train(), pipe.tokenizer
    vae.requires_grad_(False)
    vae.to(memory_format=torch.channels_last)
    abar = pipe.scheduler.alphas_cumprod.float()

    # Latents of every pool image under every deterministic style, encoded once (whole images; crops
    # are taken in latent space, aligned to the 8 px cells).
    det = [s for s in STYLES if s.deterministic]
    print(f"encoding {len(pool)} images x {len(det)} deterministic styles ...", flush=True)
    with torch.no_grad():
        Z = [{s.name: _encode(vae, [s.apply(img)])[0] for s in det} for img in tqdm(pool, desc="latents")]

    prompts = [(si, p) for si, s in enumerate(STYLES) for p in s.prompts]
    ids = tok([p for _, p in prompts], padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids
    by_style = {si: [k for k, (sj, _) in enumerate(prompts) if sj == si] for si in range(len(STYLES))}

    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    warm = 100
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))))
    ema = [p.detach().clone() for p in params]
    w = np.array([STYLE_WEIGHTS.get(s.name, 1.0) for s in STYLES])
    style_p = w / w.sum()
    bar = tqdm(range(steps), desc="unet", unit="step")
    for step in bar:
        crop, n = (BIG_CROP, BIG_BATCH) if step % BIG_EVERY == BIG_EVERY - 1 else (CROP, batch)
        g = crop // 8
        eps = torch.randn(n, 4, g, g, generator=gen)
        z_src, z_tgt, rand_jobs, pidx = [], [None] * n, [], []
        for b, (i, y, x, flip) in enumerate(_crop_batch(pool, rng, n, crop)):
            si = int(rng.choice(len(STYLES), p=style_p))
            style = STYLES[si]
            pidx.append(by_style[si][int(rng.integers(len(by_style[si])))])
            ly, lx = y // 8, x // 8
            zs = Z[i]["photo"][:, ly:ly + g, lx:lx + g]
            if style.deterministic:
                z_tgt[b] = Z[i][style.name][:, ly:ly + g, lx:lx + g]
            else:
                img = pool[i][y:y + crop, x:x + crop]
                img = np.ascontiguousarray(img[:, ::-1] if flip else img)  # rendered in the flipped frame, like eps
                rand_jobs.append((b, style.apply(img, eps=eps[b].numpy())))
            if flip:
                zs = zs.flip(-1)
                if z_tgt[b] is not None:
                    z_tgt[b] = z_tgt[b].flip(-1)
            z_src.append(zs)
        if rand_jobs:  # random styles: rendered from this sample's noise, then encoded
            with torch.no_grad():
                zr = _encode(vae, [img for _, img in rand_jobs])
            for (b, _), z in zip(rand_jobs, zr):
                z_tgt[b] = z
        z_src, z_tgt = torch.stack(z_src), torch.stack(z_tgt)
        keep = torch.rand(n, generator=gen) < IN_STYLE_P
        z_src = torch.where(keep[:, None, None, None], z_tgt, z_src)
        t = torch.randint(T_MIN, T_MAX + 1, (n,), generator=gen)
        a = abar[t][:, None, None, None]
        x_t = a.sqrt() * z_src + (1 - a).sqrt() * eps
        emb = te(ids[pidx])[0]
        eps_pred = unet(x_t, t, encoder_hidden_states=emb).sample
        x0 = (x_t - (1 - a).sqrt() * eps_pred) / a.sqrt()
        loss = F.mse_loss(x0, z_tgt)
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
            bar.set_postfix(loss=f"{loss.item():.4f}")
    with torch.no_grad():
        for e, p in zip(ema, params):
            p.copy_(e)
    unet.eval()
    te.eval()


def save(pipe, out: Path, meta: dict):
    out.mkdir(parents=True, exist_ok=True)
    pipe.to(torch.float16).save_pretrained(out, safe_serialization=True)
    pipe.to(torch.float32)
    info_path = out / "training.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    info.update(meta)
    info_path.write_text(json.dumps(info, indent=2) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "model")
    ap.add_argument("--stage", choices=["all", "vae", "decoder", "unet"], default="all")
    ap.add_argument("--vae-steps", type=int, default=2500)
    ap.add_argument("--decoder-steps", type=int, default=800)
    ap.add_argument("--unet-steps", type=int, default=8000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    pool = image_pool(args.seed)
    if args.stage in ("all", "vae"):
        pipe = build_random_pipeline(args.seed)
        t0 = time.time()
        std = train_vae(pipe, pool, args.vae_steps, args.seed)
        save(pipe, args.out, {"seed": args.seed, "vae_steps": args.vae_steps, "vae_minutes": round((time.time() - t0) / 60, 1),
                              "latent_std": std, "scaling_factor": pipe.vae.config.scaling_factor})
        print(f"VAE done in {(time.time() - t0) / 60:.1f} min; latent std {std:.3f}", flush=True)
    if args.stage in ("all", "decoder"):
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline.from_pretrained(args.out, torch_dtype=torch.float32)
        t0 = time.time()
        train_decoder(pipe, pool, args.decoder_steps, args.seed)
        save(pipe, args.out, {"decoder_steps": args.decoder_steps, "decoder_minutes": round((time.time() - t0) / 60, 1),
                              "decoder_sigma_max": DECODER_SIGMA})
        print(f"decoder done in {(time.time() - t0) / 60:.1f} min", flush=True)
    if args.stage in ("all", "unet"):
        from diffusers import StableDiffusionPipeline

        torch.manual_seed(args.seed)
        fresh = build_random_pipeline(args.seed)  # fresh UNet + text encoder, trained VAE from --out
        pipe = StableDiffusionPipeline.from_pretrained(args.out, torch_dtype=torch.float32)
        pipe.unet, pipe.text_encoder, pipe.scheduler = fresh.unet, fresh.text_encoder, fresh.scheduler
        t0 = time.time()
        train_unet(pipe, pool, args.unet_steps, args.seed)
        save(pipe, args.out, {"unet_steps": args.unet_steps, "unet_minutes": round((time.time() - t0) / 60, 1),
                              "t_range": [T_MIN, T_MAX], "in_style_p": IN_STYLE_P, "crop": CROP,
                              "big_crop": [BIG_CROP, BIG_BATCH, BIG_EVERY], "style_weights": STYLE_WEIGHTS})
        print(f"UNet done in {(time.time() - t0) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
