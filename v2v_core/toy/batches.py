"""The training data of the toy's stages: random crops of the image pool under the styles, and the batches of the
SDEdit-shaped objective (stage 3 and every UNet stage after it): latents of the pool encoded once per deterministic
style, a style and prompt per sample, noise, a timestep and the noised source, single crops or displaced pairs.
Split from train.py, which holds the stages and their optimisation."""
from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from . import styles as _styles
from .styles import STYLES, cell_colours

CROP = 128          # training crop in pixels (16x16 latents)
T_MIN, T_MAX = 120, 620   # covers strength 0.3..0.6 with 1..4 LCM steps (t = 399/199 at 0.4, 499/259 at 0.5)
IN_STYLE_P = 0.25
# IN_STYLE_FRESH_NOISE (session 22, stage 10's --keep-fresh-noise; off: every stage before it): the in-style samples
# are noised with another noise than the one their target was drawn from, as a stream's second step gets them (the
# details its first step drew, noised again with the step's own noise), so the model learns to keep the invented
# details its input already carries instead of re-inventing them from a noise that disagrees.
IN_STYLE_FRESH_NOISE = False
# Every BIG_EVERY-th UNet step trains on BIG_CROP px crops (batch BIG_BATCH, about the same cost), so the
# self-attention layers also see the token counts of 256 px inference (16x16 and 8x8), not only 8x8 / 4x4.
BIG_CROP, BIG_BATCH, BIG_EVERY = 256, 4, 4


def _crop_batch(pool, rng, n, crop=CROP, allowed=None):
    """n random crops (aligned to 8 px, random flip) -> list of (pool index, y, x, flip), from the
    images at least `crop` px on each side (and among `allowed` indices when given)."""
    fits = [k for k, im in enumerate(pool) if min(im.shape[:2]) >= crop and (allowed is None or k in allowed)]
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


def _encode(vae, imgs) -> torch.Tensor:
    return vae.encode(_to_tensor(imgs)).latents * vae.config.scaling_factor


class _SdeditBatches:
    """Batches of the SDEdit-shaped objective (stage 3 and the tuning stage): crops of the pool's latents
    (every deterministic style encoded once; crops taken in latent space, aligned to the 8 px cells), a
    style and prompt per sample, noise, a timestep, and the noised source."""

    def __init__(self, pipe, pool, seed: int, style_weights: dict, styles: tuple = STYLES, alternatives: tuple = ()):
        pipe.vae.eval().requires_grad_(False)
        pipe.vae.to(memory_format=torch.channels_last)
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.pool, self.vae = pool, pipe.vae
        self.abar = pipe.scheduler.alphas_cumprod.float()
        self.styles = styles
        self.alternatives = alternatives   # random styles whose opposite shared choice is as good a target (commit loss)
        det = [s for s in styles if s.deterministic]
        print(f"encoding {len(pool)} images x {len(det)} deterministic styles ...", flush=True)
        with torch.no_grad():
            self.Z = [{s.name: _encode(self.vae, [s.apply(img)])[0] for s in det} for img in tqdm(pool, desc="latents")]
        self.prompts = [(si, p) for si, s in enumerate(styles) for p in s.prompts]
        tok = pipe.tokenizer
        self.ids = tok([p for _, p in self.prompts], padding="max_length", max_length=tok.model_max_length,
                       truncation=True, return_tensors="pt").input_ids
        self.by_style = {si: [k for k, (sj, _) in enumerate(self.prompts) if sj == si] for si in range(len(styles))}
        w = np.array([style_weights.get(s.name, 1.0) for s in styles])
        self.style_p = w / w.sum()

    def draw_style(self) -> tuple[int, int]:
        si = int(self.rng.choice(len(self.styles), p=self.style_p))
        return si, self.by_style[si][int(self.rng.integers(len(self.by_style[si])))]

    def latents(self, items, eps: torch.Tensor, crop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """items: (pool index, y, x, flip, style index) per sample -> (source latents, style target latents, the
        alternative targets: for a style of self.alternatives its rendering under the opposite shared choice (_render's
        opposite); else the target). Random styles are rendered from the sample's own noise, then encoded."""
        g = crop // 8
        z_src, z_tgt, rand_jobs, alt_jobs = [], [None] * len(items), [], []
        for b, (i, y, x, flip, si) in enumerate(items):
            style = self.styles[si]
            ly, lx = y // 8, x // 8
            zs = self.Z[i]["photo"][:, ly:ly + g, lx:lx + g]
            zs = zs.flip(-1) if flip else zs
            if style.deterministic:
                z_tgt[b] = self.Z[i][style.name][:, ly:ly + g, lx:lx + g]
                z_tgt[b] = z_tgt[b].flip(-1) if flip else z_tgt[b]
            else:                 # rendered in the crop's own (possibly flipped) frame, like eps and zs
                img = self.crop_image(items[b], crop)
                rand_jobs.append((b, _render(style, img, eps[b].numpy(), zs)))
                if style.name in self.alternatives:
                    alt_jobs.append((b, _render(style, img, eps[b].numpy(), zs, opposite=True)))
            z_src.append(zs)
        if rand_jobs:
            with torch.no_grad():
                zr = _encode(self.vae, [img for _, img in rand_jobs])
            for (b, _), z in zip(rand_jobs, zr):
                z_tgt[b] = z
        z_alt = list(z_tgt)
        if alt_jobs:
            with torch.no_grad():
                za = _encode(self.vae, [img for _, img in alt_jobs])
            for (b, _), z in zip(alt_jobs, za):
                z_alt[b] = z
        return torch.stack(z_src), torch.stack(z_tgt), torch.stack(z_alt)

    def cells(self, items, crop: int) -> torch.Tensor:
        """(B, N, 3): each sample's source crop's latent-cell colours (styles.cell_colours), in the crop's own
        (possibly flipped) frame, for the shared-attention loss."""
        g = crop // 8
        return torch.from_numpy(np.stack([cell_colours(self.crop_image(item, crop), g, g) for item in items]))

    def noised(self, z_src, z_tgt, eps, keep, t, fresh=None):
        """The in-style quarter, then x_t = sqrt(abar) z_src + sqrt(1-abar) eps; with `fresh` (IN_STYLE_FRESH_NOISE),
        the in-style samples take that noise instead of eps."""
        k = keep[:, None, None, None]
        z_src = torch.where(k, z_tgt, z_src)
        a = self.abar[t][:, None, None, None]
        return a.sqrt() * z_src + (1 - a).sqrt() * (eps if fresh is None else torch.where(k, fresh, eps)), a

    def sample(self, n: int, crop: int) -> dict:
        g = crop // 8
        eps = torch.randn(n, 4, g, g, generator=self.gen)
        items, pidx = [], []
        for i, y, x, flip in _crop_batch(self.pool, self.rng, n, crop):
            si, pi = self.draw_style()
            items.append((i, y, x, flip, si))
            pidx.append(pi)
        z_src, z_tgt, z_alt = self.latents(items, eps, crop)
        keep = torch.rand(n, generator=self.gen) < IN_STYLE_P
        t = torch.randint(T_MIN, T_MAX + 1, (n,), generator=self.gen)
        fresh = torch.randn(eps.shape, generator=self.gen) if IN_STYLE_FRESH_NOISE else None
        x_t, a = self.noised(z_src, z_tgt, eps, keep, t, fresh)
        return {"x_t": x_t, "a": a, "t": t, "z_tgt": z_tgt, "z_alt": z_alt, "pidx": pidx, "z_cond": z_src}

    def sample_pairs(self, n_pairs: int, crop: int, allowed: set[int] | list[int], max_shift: int) -> dict:
        """n_pairs anchors and, after them, n_pairs partners: the same image, style, prompt, timestep and
        in-style draw, cropped `(dy, dx)` latent cells away (|d| <= max_shift), like two frames of a
        moving camera. Half of the partners reuse the anchor's noise (the streaming engine keeps one
        noise for every frame), half draw their own. Returns the batch plus, per pair, the shift in
        latent cells in the crops' own (possibly flipped) coordinates: partner[i, j] = anchor[i + dy, j + dx], and "same",
        which pairs share their noise."""
        g = crop // 8
        anchors = _crop_batch(self.pool, self.rng, n_pairs, crop, allowed)
        items, pidx, shifts = [], [], []
        partners = []
        for i, y, x, flip in anchors:
            si, pi = self.draw_style()
            h, w = self.pool[i].shape[:2]
            dy, dx = (int(v) for v in self.rng.integers(-max_shift, max_shift + 1, 2))
            y2 = min(max(y + 8 * dy, 0), (h - crop) // 8 * 8)
            x2 = min(max(x + 8 * dx, 0), (w - crop) // 8 * 8)
            items.append((i, y, x, flip, si))
            partners.append((i, y2, x2, flip, si))
            pidx.append(pi)
            shifts.append(((y2 - y) // 8, (x - x2) // 8 if flip else (x2 - x) // 8))
        eps_a = torch.randn(n_pairs, 4, g, g, generator=self.gen)
        own = torch.randn(n_pairs, 4, g, g, generator=self.gen)
        same = torch.rand(n_pairs, generator=self.gen) < 0.5
        eps = paired(eps_a, own, same)
        z_src, z_tgt, z_alt = self.latents(items + partners, eps, crop)
        keep = (torch.rand(n_pairs, generator=self.gen) < IN_STYLE_P).repeat(2)
        t = torch.randint(T_MIN, T_MAX + 1, (n_pairs,), generator=self.gen).repeat(2)
        fresh = None
        if IN_STYLE_FRESH_NOISE:     # shared by a pair exactly where its rendering noise is
            fresh = paired(*(torch.randn(n_pairs, 4, g, g, generator=self.gen) for _ in range(2)), same)
        x_t, a = self.noised(z_src, z_tgt, eps, keep, t, fresh)
        return {"x_t": x_t, "a": a, "t": t, "z_tgt": z_tgt, "z_alt": z_alt, "pidx": pidx + pidx, "shifts": shifts, "z_cond": z_src, "eps": eps,
                "same": same, "cells": self.cells(items + partners, crop), "items": items + partners, "keep": keep, "crop": crop}

    def crop_image(self, item, crop: int) -> np.ndarray:
        """The source crop of an item (pool index, y, x, flip, style index), in its own (possibly flipped) frame."""
        i, y, x, flip, _ = item
        img = self.pool[i][y:y + crop, x:x + crop]
        return np.ascontiguousarray(img[:, ::-1] if flip else img)


def paired(anchor: torch.Tensor, own: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
    """The noise of a batch of pairs, anchors first: a partner takes its anchor's noise where `same` (the streaming engine
    keeps one noise for every frame) and its own elsewhere."""
    return torch.cat([anchor, torch.where(same[:, None, None, None], anchor, own)])


def latent_keyed(name: str) -> bool:
    """Whether a style's target is drawn from the shared choice keyed on the source latent: under the latent kernel
    (styles.SHARED_KERNEL "latent") the psychedelic style, and with styles.SNOW_COVER the snowy scene."""
    return _styles.SHARED_KERNEL == "latent" and (name == _styles.PSYCHEDELIC.name or name == "snowy scene" and _styles.SNOW_COVER)


def commit_alternatives() -> tuple[str, ...]:
    """The styles that have an opposite shared choice for the commit loss: the psychedelic style (under any kernel its
    choice is linear in the noise) and the snowy scene where its snow is latent-keyed."""
    return tuple(n for n in _styles.SHARED_CHOICE_STYLES if n == _styles.PSYCHEDELIC.name or latent_keyed(n))


def _render(style, img: np.ndarray, eps: np.ndarray, z_src: torch.Tensor, opposite: bool = False) -> np.ndarray:
    """A random style's target for a crop: the style itself, except for a latent_keyed style, whose shared choice is
    keyed on the crop's source latent as the UNet is given it. With `opposite`, the rendering under the opposite choice
    -m, everything else alike (the snowy scene keeps its flakes); the colour-kernel psychedelic style from -eps, which
    reverses its choice (linear in the noise)."""
    if latent_keyed(style.name):
        m = _styles.latent_shared_noise(z_src.numpy(), eps)
        return _styles.shared_rendering(style.name, img, eps, -m if opposite else m)
    return style.apply(img, eps=-eps if opposite else eps)


def _crop_plan(step: int, batch: int) -> tuple[int, int]:
    """(crop px, batch size) of a UNet step: every BIG_EVERY-th step on BIG_CROP px crops."""
    return (BIG_CROP, BIG_BATCH) if step % BIG_EVERY == BIG_EVERY - 1 else (CROP, batch)
