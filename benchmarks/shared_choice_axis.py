"""Does a toy model draw the shared choice, or the mean of its two sides? The choice axis (issue #30).

    python benchmarks/shared_choice_axis.py FOLDER [FOLDER ...] [--style psychedelic|snowy] [--kernel KAPPA]
                                            [--crops 12] [--crop 128] [--t 399]

On 128 px Kodak crops (--crop; ../shared/data/images/kodak, the last `--crops` photographs, 2 crops each; the training
distribution, not a clip) with their own noise, each style's target is rendered with the shared choice m keyed on the
crop's source latent (styles.latent_shared_noise, the kernel stage 10's --latent-kernel trains; KAPPA from the
folder's training.json unless given) and with the opposite choice, -m, everything else alike (the snowy scene keeps
its flakes, only its snow moves). One UNet step at t from the source latent noised with that noise (the studio's
SDEdit start) gives x0; per latent cell where the two renderings differ most (the upper half of |half-distance|^2),
x0 is projected on the line from the opposite's latent (-1) to the target's (+1), 0 being their mean. Printed: the
share of those cells on the target's side (chance 0.5) and the mean projection (a model that draws the mean of the
two: 0). With --second T2 the x0 goes through the stream's next step (noised again with another noise at T2) before
it is projected: whether a 2-step run keeps the choice its first step drew. The model card's "choice axis" figures come from this (sessions 20-21 from a throw-away form of it).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from v2v_core.backbones import prediction_of, x0_from_output  # noqa: E402
from v2v_core.toy import styles  # noqa: E402
from v2v_core.toy.batches import _encode  # noqa: E402
from v2v_core.toy.data import kodak_images  # noqa: E402

CROP = 128
SNOW = 0.6          # the snow cover rendered for --style snowy when the folder's training.json does not say
STYLE_NAMES = {"psychedelic": styles.PSYCHEDELIC.name, "snowy": "snowy scene"}


def crops(n: int, size: int = CROP, seed: int = 0) -> list[np.ndarray]:
    """Two `size` px crops of each of the last n Kodak photographs at fixed places."""
    rng = np.random.default_rng(seed)
    out = []
    for img in kodak_images()[-n:]:
        for _ in range(2):
            y, x = (int(rng.integers(0, s - size + 1)) for s in img.shape[:2])
            out.append(np.ascontiguousarray(img[y:y + size, x:x + size]))
    return out


@torch.no_grad()
def choice_axis(folder: str, style: str, images: list[np.ndarray], t: int, second: int = 0, seed: int = 0) -> dict:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32, safety_checker=None)
    name = STYLE_NAMES[style]
    prompt = {**styles.STYLE_BY_NAME, styles.PSYCHEDELIC.name: styles.PSYCHEDELIC}[name].prompts[0]
    ids = pipe.tokenizer([prompt], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    emb = pipe.text_encoder(ids)[0]
    kind, relative = prediction_of(pipe.scheduler.config)
    gen = torch.Generator().manual_seed(seed)
    proj = []
    for k in range(0, len(images), 8):
        batch = images[k:k + 8]
        z = _encode(pipe.vae, batch)
        eps = torch.randn(z.shape, generator=gen)
        tgt, opp = [], []
        for img, zi, ei in zip(batch, z.numpy(), eps.numpy()):
            m = styles.latent_shared_noise(zi, ei)   # the snowy scene keeps its flakes (eps) under -m: only its snow moves
            tgt.append(styles.shared_rendering(name, img, ei, m)), opp.append(styles.shared_rendering(name, img, ei, -m))
        zt, zo = _encode(pipe.vae, tgt), _encode(pipe.vae, opp)
        def step(x0_in, tt, noise):
            ab = pipe.scheduler.alphas_cumprod.float()[tt]
            x_t = ab.sqrt() * x0_in + (1 - ab).sqrt() * noise
            out = pipe.unet(torch.cat([x_t, z], 1), torch.full((len(batch),), tt),
                            encoder_hidden_states=emb.expand(len(batch), -1, -1)).sample
            return x0_from_output(kind, relative, x_t, out, ab.sqrt(), (1 - ab).sqrt(), z)

        x0 = step(z, t, eps)
        if second:            # the stream's next step: that x0 noised again with the step's own noise
            x0 = step(x0, second, torch.randn(z.shape, generator=gen))
        mid, half = (zt + zo) / 2, (zt - zo) / 2
        n2 = (half ** 2).sum(1)
        keep = n2 > n2.flatten().quantile(0.5)
        s = ((x0 - mid) * half).sum(1) / n2.clamp(min=1e-8)
        proj.append(s[keep].numpy())
    proj = np.concatenate(proj)
    return {"share_right": float(np.mean(proj > 0)), "mean_projection": float(proj.mean())}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--style", choices=tuple(STYLE_NAMES), default="psychedelic")
    ap.add_argument("--kernel", type=float, default=None, metavar="KAPPA", help="the latent kernel's KAPPA (default: "
                    "the folder's training.json attend_kernel, else 64)")
    ap.add_argument("--crops", type=int, default=12, help="Kodak photographs (2 crops each)")
    ap.add_argument("--crop", type=int, default=CROP, help="crop size in px (training: 128, and 256 every 4th step)")
    ap.add_argument("--t", type=int, default=399)
    ap.add_argument("--second", type=int, default=0, metavar="T2", help="then a second step at T2 from that x0 with "
                    "another noise, as the stream's 2-step schedule does (strength 0.4: 399 then 199)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    images = crops(args.crops, args.crop)
    print(f"steps at t = {args.t}{f' then {args.second}' if args.second else ''}")
    print(f"| model | style | KAPPA | crop px | cells on the target's side | mean projection |\n|---|---|---|---|---|---|")
    for folder in args.folders:
        with styles.trained_rule(folder):     # the rule the folder was trained on; a folder without it: latent, 64, SNOW
            if args.kernel or styles.SHARED_KERNEL != "latent":
                styles.SHARED_KERNEL, styles.SHARED_KAPPA = "latent", args.kernel or 64.0
            styles.SNOW_COVER = styles.SNOW_COVER or SNOW
            r = choice_axis(folder, args.style, images, args.t, args.second)
            kappa = styles.SHARED_KAPPA
        print(f"| {folder} | {args.style} | {kappa:g} | {args.crop} | {r['share_right']:.3f} | {r['mean_projection']:.3f} |",
              flush=True)


if __name__ == "__main__":
    main()
