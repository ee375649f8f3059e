"""Can one self-attention layer LEARN the psychedelic style's shared choice, and from what inputs? (issue #30)

    python benchmarks/shared_choice_learnability.py --inputs exact [--rule texture] [--steps 4000]
    python benchmarks/shared_choice_learnability.py --inputs latents [--extra colour,texture,noise] [--steps 3000]
    python benchmarks/shared_choice_learnability.py --inputs latents --rule latent --t 120:620 --unet FOLDER [--train block]

Sessions 15-20 trained the toy UNet on the style (v2v_core.toy.styles.psychedelic) and it never computed the choice.
This isolates the question from the UNet: a small net (per-token inputs -> LayerNorm -> ONE softmax attention layer ->
an MLP on [token, attention output]) is trained by MSE to output the rule's shared value m per latent cell, on 128 px
Kodak crops (../shared/data/images/kodak; the first 18 for training, the last 6 held out) with their own noise, and
the held-out R^2 is printed as it trains. Inputs:
- exact: each token's exact features (colour - grey, texture x 4, noise channel 0) through a per-token MLP;
- latents: what the UNet gets, the noisy latent at t (sqrt(abar) z + sqrt(1 - abar) eps) and the clean source latent
  (the shipped toy's encoder), through a 3x3 convolution stem; --extra adds exact features as further channels.
Fresh crops and noise every step (no memorising), or with --pool N a fixed pool of N drawn once (encoding fresh crops
every step makes --inputs latents about 5x slower; a pool of 1536 was memorised in early tries, 8192 was not).
--t LO:HI draws the timestep per sample as the UNet's training does (the net is not told it). --unet FOLDER asks the
same of a toy UNet's own layers (InUNet): the UNet run up to its first full-resolution self-attention, a linear probe on
that layer's output, everything below it trained (--train stem) or only that transformer block (--train block).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from v2v_core.toy import styles  # noqa: E402
from v2v_core.toy.data import kodak_images  # noqa: E402

CROP, CELLS = 128, 16
FEATURES = {"colour": 3, "texture": 1, "noise": 1}


class Batches:
    """Crops of the Kodak photographs with fresh noise: the rule's target m (B, N) and the chosen inputs."""

    def __init__(self, inputs: str, extra: list[str], t: tuple[int, int], seed: int, rule: str = "texture"):
        self.inputs, self.extra, self.rng, self.rule = inputs, extra, np.random.default_rng(seed), rule
        if rule == "latent" and inputs != "latents":
            raise SystemExit("--rule latent is defined on the source latents: use it with --inputs latents.")
        self.kodak = kodak_images()
        if not self.kodak:
            raise SystemExit("No Kodak photographs found (../shared/data/images/kodak): this benchmark trains on them.")
        if inputs == "latents":
            from diffusers import AutoencoderTiny, DDPMScheduler

            from v2v_core.backbones import TOY_DIR

            self.vae = AutoencoderTiny.from_pretrained(TOY_DIR / "vae", torch_dtype=torch.float32).eval()
            self.abar, self.t = DDPMScheduler.from_pretrained(TOY_DIR / "scheduler").alphas_cumprod.float(), t

    def features(self, crop: np.ndarray, eps: np.ndarray, names) -> np.ndarray:
        f = {"colour": styles.cell_colours(crop, CELLS, CELLS) - 0.5, "texture": styles.cell_texture(crop, CELLS, CELLS)[:, None] * 4,
             "noise": eps[0].reshape(-1, 1)}
        return np.concatenate([f[k] for k in names], 1) if names else np.zeros((CELLS * CELLS, 0), np.float32)

    def __call__(self, n: int, held_out: bool = False):
        imgs = self.kodak[18:] if held_out else self.kodak[:18]
        crops, eps, ys = [], [], []
        for _ in range(n):
            im = imgs[int(self.rng.integers(len(imgs)))]
            y, x = (int(self.rng.integers(0, (s - CROP) // 8 + 1)) * 8 for s in im.shape[:2])
            crops.append(np.ascontiguousarray(im[y:y + CROP, x:x + CROP]))
            eps.append(self.rng.standard_normal((4, CELLS, CELLS)).astype(np.float32))
            if self.rule != "latent":   # the latent rule needs the encoded crops: below
                ys.append(styles.shared_noise(crops[-1], eps[-1]).reshape(-1))
        if self.inputs == "exact":
            target = torch.from_numpy(np.stack(ys).astype(np.float32))
            return torch.from_numpy(np.stack([self.features(c, e, list(FEATURES)) for c, e in zip(crops, eps)])), target
        from v2v_core.toy.batches import _encode

        with torch.no_grad():
            z = _encode(self.vae, crops)
        e = torch.from_numpy(np.stack(eps))
        if self.rule == "latent":
            ys = [styles.latent_shared_noise(zk.numpy(), ek).reshape(-1) for zk, ek in zip(z, eps)]
        target = torch.from_numpy(np.stack(ys).astype(np.float32))
        ex = torch.from_numpy(np.stack([self.features(c, k, self.extra).T.reshape(-1, CELLS, CELLS) for c, k in zip(crops, eps)]))
        self.last_t = torch.from_numpy(self.rng.integers(self.t[0], self.t[1] + 1, n))
        a = self.abar[self.last_t][:, None, None, None]
        return torch.cat([a.sqrt() * z + (1 - a).sqrt() * e, z, ex.float()], 1), target


class OneAttention(nn.Module):
    """inputs -> h (per token) -> LayerNorm -> one softmax attention -> MLP([h, attention output]) -> m (B, N)."""

    def __init__(self, inputs: str, channels: int, width: int = 64, head: int = 32):
        super().__init__()
        if inputs == "exact":
            self.embed = nn.Sequential(nn.Linear(channels, width), nn.SiLU(), nn.Linear(width, width))
        else:
            self.embed = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.SiLU(),
                                       nn.Conv2d(width, width, 3, padding=1), nn.SiLU(), nn.Conv2d(width, width, 1))
        self.norm = nn.LayerNorm(width)
        self.q, self.k, self.v = (nn.Linear(width, head) for _ in range(3))
        self.out = nn.Sequential(nn.Linear(width + head, width), nn.SiLU(), nn.Linear(width, 1))
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        if h.dim() == 4:
            h = h.flatten(2).transpose(1, 2)
        n = self.norm(h)
        w = torch.softmax(self.q(n) @ self.k(n).transpose(1, 2) / self.head ** 0.5, -1)
        return self.out(torch.cat([h, w @ self.v(n)], -1)).squeeze(-1)


class InUNet(nn.Module):
    """The toy UNet of a model folder run up to its first full-resolution self-attention, read by a linear probe
    (v2v_core.toy.attend.StemProbe, what stage 10's --stem-first trains): the same question asked of the UNet's own
    layers. `train`: "stem" trains everything below and including the layer (attend.stem_modules), "block" only the
    layer's transformer block, on the features the UNet already computes. The prompt is fixed (a self-attention before
    any cross-attention does not see it)."""

    def __init__(self, folder: str, train: str):
        super().__init__()
        from diffusers import StableDiffusionPipeline

        from v2v_core.toy.attend import StemProbe, stem_modules

        pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32)
        self.unet = pipe.unet
        with torch.no_grad():
            self.emb = pipe.text_encoder(pipe.tokenizer(["a photo"], padding="max_length", return_tensors="pt").input_ids)[0]
        self.unet.requires_grad_(False)
        for m in stem_modules(self.unet, block_only=train == "block"):
            m.requires_grad_(True)
        self.head = StemProbe(self.unet)
        self.probe = self.head.probe
        self.t = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x, self.t, self.emb.expand(len(x), -1, -1))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", choices=["exact", "latents"], default="exact")
    ap.add_argument("--extra", default="", help="with --inputs latents: exact features added as channels, comma-separated "
                    "from colour,texture,noise")
    ap.add_argument("--rule", choices=["mean", "texture", "latent"], default="texture",
                    help="the style's rule: the mean of the noise under similar colours, stage 10's --shared-texture 50, "
                         "or (not a style yet) the mean of the noise under similar SOURCE LATENTS (kappa cos of the "
                         "4-channel latents), a kernel the UNet's own input gives exactly")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--t", default="399", help="the timestep of the noisy latent (--inputs latents), or a range LO:HI drawn "
                    "per sample as the UNet's training draws it (120:620); the net is not told t")
    ap.add_argument("--pool", type=int, default=0, help="a fixed pool of this many crops drawn once (0: fresh every step)")
    ap.add_argument("--unet", metavar="FOLDER", help="with --inputs latents: instead of the small net, the toy UNet of "
                    "this model folder up to its first full-resolution self-attention, and a probe on its output (InUNet)")
    ap.add_argument("--train", choices=["stem", "block"], default="stem", help="with --unet: what trains (InUNet)")
    ap.add_argument("--every", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.rule == "texture":
        styles.SHARED_TEXTURE, styles.SHARED_GAIN = 50.0, 1.0
    extra = [k for k in args.extra.split(",") if k]
    lo, _, hi = args.t.partition(":")
    batches = Batches(args.inputs, extra, (int(lo), int(hi or lo)), seed=0, rule=args.rule)
    channels = sum(FEATURES.values()) if args.inputs == "exact" else 8 + sum(FEATURES[k] for k in extra)
    if args.unet and (args.inputs != "latents" or extra or args.pool):
        raise SystemExit("--unet takes the UNet's own inputs: use it with --inputs latents, no --extra and no --pool.")
    net = InUNet(args.unet, args.train) if args.unet else OneAttention(args.inputs, channels)
    probe = list(net.probe.parameters()) if args.unet else []           # a fresh probe learns at a rate of its own
    body = [p for p in net.parameters() if p.requires_grad and all(p is not q for q in probe)]
    opt = torch.optim.AdamW([{"params": body}] + ([{"params": probe, "lr": 1e-2}] if probe else []), args.lr)
    x_test, y_test = batches(256, held_out=True)
    t_test = getattr(batches, "last_t", None)
    if args.pool:
        parts = [batches(min(256, args.pool - k)) for k in range(0, args.pool, 256)]
        x_pool, y_pool = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    t0 = time.time()
    print(f"rule {args.rule}, inputs {args.inputs}{' + ' + ','.join(extra) if extra else ''}; held-out target variance {y_test.var():.3f}")
    for step in range(args.steps + 1):
        if args.pool:
            idx = torch.randint(0, args.pool, (args.batch,))
            x, y = x_pool[idx], y_pool[idx]
        else:
            x, y = batches(args.batch)
        if args.unet:
            net.t = batches.last_t
        loss = ((net(x) - y) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % args.every == 0:
            with torch.no_grad():
                if args.unet:
                    net.t = t_test
                p = net(x_test)
            r2 = 1 - float(((p - y_test) ** 2).mean() / y_test.var())
            corr = float(np.corrcoef(p.flatten(), y_test.flatten())[0, 1])
            print(f"step {step}: held-out R^2 {r2:.3f}, correlation {corr:.3f} ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
