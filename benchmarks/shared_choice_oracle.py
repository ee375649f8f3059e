"""What a model that had learned the psychedelic style's rule (v2v_core.toy.styles: a hue turn chosen from the noise
shared by tokens of similar colour) would show under the temporal methods, before any training (issue #30).

    python benchmarks/shared_choice_oracle.py [--clips woman-running,wolf,kite-walk] [--frames 24] [--size 256]
                                              [--kernel cosine:32:0.25] [--kernel gauss:0.05] [--kernel latent:32]
                                              ... [--texture G] [--snow-cover AMOUNT [--snow-shade AMOUNT] | --dots]

The target is rendered frame by frame with one fixed noise, as the stream keeps it: "frame" is its DIS warp error
over "a photo"'s (the source's own; how much the rule flickers). "EA" recomputes each frame's choice over the frame's
cells plus a bank of one past frame's (the last whose index is a multiple of 4, as StreamV2V refreshes its bank),
"window" over the previous 3 frames' cells too: the warp error of each, over the per-frame target's. With --texture G
the rule is stage 10's --shared-texture (styles.SHARED_TEXTURE: each key cell's logit raised by G x its texture, the
turn 45 tanh(m)). Only numpy and the clip; no model, except for the kernel "latent:KAPPA" (not a style yet): the
similarity of the cells' SOURCE LATENTS (KAPPA cos of the shipped toy encoder's 4-channel latents), the kernel the
UNet's own input gives exactly (benchmarks/shared_choice_learnability.py --rule latent). With --snow-cover AMOUNT the
rendering is the snowy scene's (styles.snow_covered: flakes from one fixed noise, snow where the choice is positive,
and with --snow-shade the snow's mirror image, a cold shade, where it is negative) instead of the psychedelic turn;
with --dots, pointillism's dots painted from the turned frame (--dots lattice), or one of the renderings tried in session
30 for a pointillism whose dots move with the content: "painted" (the lattice's dots over the image's own blurred
colour instead of cream paper), "blobs" (no lattice: paint where a contrast-normalised band-pass of the grey level
exceeds a threshold that the choice lowers or raises, dense or sparse blobs per region) and "peaks" (dots of 2 px at
that band-pass's local peaks over the threshold).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from v2v_core.flow import source_flow  # noqa: E402
from v2v_core.metrics import warp_error  # noqa: E402
from v2v_core.toy import styles  # noqa: E402
from v2v_core.video import read_video  # noqa: E402

VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"


def set_kernel(spec: str) -> None:
    """'cosine:KAPPA:BETA', 'gauss:SIGMA' or 'latent:KAPPA' -> the style module's kernel."""
    kind, *p = spec.split(":")
    if kind == "latent":
        styles.SHARED_KERNEL, styles.SHARED_KAPPA = "latent", float(p[0])
    elif kind == "gauss":
        styles.SHARED_KERNEL, styles.SHARED_SIGMA = "gauss", float(p[0])
    else:
        styles.SHARED_KERNEL, styles.SHARED_KAPPA, styles.SHARED_BETA = "cosine", float(p[0]), float(p[1])


def source_latents(frames) -> list:
    """(4, h, w) per frame: the shipped toy encoder's latents."""
    import torch
    from diffusers import AutoencoderTiny

    from v2v_core.backbones import TOY_DIR
    from v2v_core.toy.batches import _encode

    vae = AutoencoderTiny.from_pretrained(TOY_DIR / "vae", torch_dtype=torch.float32).eval()
    with torch.no_grad():
        z = torch.cat([_encode(vae, frames[k:k + 8]) for k in range(0, len(frames), 8)])
    return list(z.numpy())


DOTS = None            # None, or one of DOT_RENDERINGS
DOT_RENDERINGS = ("lattice", "painted", "blobs", "peaks")
PAPER = np.array(styles.POINTILLISM_PAPER, np.float32)


def _content_dots(frame, m, peaks: bool):
    """Session 30's content-anchored pointillism: a band-pass (Gaussians of 1 and 2.5 px) of the grey level over its
    local contrast; where it exceeds a threshold lowered (dense) or raised (sparse) per region by the shared choice m,
    the saturated colour on cream paper ("blobs"), or with `peaks` dots of 2 px at its local peaks over the threshold."""
    g = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    d = cv2.GaussianBlur(g, (0, 0), 1.0) - cv2.GaussianBlur(g, (0, 0), 2.5)
    d = d / (np.sqrt(cv2.GaussianBlur(d * d, (0, 0), 6)) + 0.04)
    h, w = frame.shape[:2]
    c = cv2.GaussianBlur(cv2.resize(np.tanh(10 * m).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC), (0, 0), 3)
    if peaks:
        d = np.abs(d)
        top = (d >= cv2.dilate(d, np.ones((5, 5), np.uint8))) & (d > 0.5 - 0.6 * c)
        disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
        a = cv2.GaussianBlur(cv2.dilate(top.astype(np.uint8), disk).astype(np.float32), (0, 0), 0.7)
    else:
        a = np.clip((d + 0.6 * c) * 4 + 0.5, 0, 1)
    a = a[..., None]
    return np.clip(PAPER * (1 - a) + styles.saturated(frame).astype(np.float32) * a, 0, 255).astype(np.uint8)


def _painted_dots(frame, m, eps):
    """The lattice's dots (styles.pointillism: where each cell's noise says, colours turned by m) over the image's own
    colour, blurred and a third of the way to the paper, instead of the bare paper."""
    base = cv2.GaussianBlur(frame.astype(np.float32), (0, 0), 1.5) * 0.7 + PAPER * 0.3
    dots = styles.pointillism(styles.turned(frame, m), eps)
    paper = np.all(dots == PAPER.astype(np.uint8), -1, keepdims=True)
    return np.where(paper, base.astype(np.uint8), dots)


def render(frame, m, eps):
    """The rule's rendering of a frame under the shared choice m: the snowy scene's snow with styles.SNOW_COVER, with
    DOTS a pointillism (DOT_RENDERINGS), else the psychedelic turn."""
    if DOTS == "lattice":
        return styles.pointillism(styles.turned(frame, m), eps)
    if DOTS == "painted":
        return _painted_dots(frame, m, eps)
    if DOTS in ("blobs", "peaks"):
        return _content_dots(frame, m, DOTS == "peaks")
    return styles.shared_rendering("snowy scene" if styles.SNOW_COVER else styles.PSYCHEDELIC.name, frame, eps, m)


def oracle(frames) -> dict:
    """Warp errors: the source, the per-frame target, and the target recomputed with EA's and window's banks."""
    flow = source_flow(frames)
    gh, gw = frames[0].shape[0] // 8, frames[0].shape[1] // 8
    eps = np.random.default_rng(0).standard_normal((4, gh, gw)).astype(np.float32)
    eps0 = eps[0].reshape(-1)
    cols = [styles.cell_colours(f, gh, gw) for f in frames]
    tex = [styles.cell_texture(f, gh, gw) for f in frames]
    lat = source_latents(frames) if styles.SHARED_KERNEL == "latent" else None

    def shared(i, bank):
        if lat is not None:           # the bank frames stacked below the frame: keys in the order of the values
            logits = styles.latent_logits(lat[i], np.concatenate([lat[i]] + [lat[b] for b in bank], -2))
        else:
            keys = np.concatenate([cols[i]] + [cols[b] for b in bank])
            logits = styles.shared_logits(cols[i], keys) + styles.SHARED_TEXTURE * np.concatenate([tex[i]] + [tex[b] for b in bank])[None]
        return styles.softmax_mean(logits, np.tile(eps0, 1 + len(bank))).reshape(gh, gw)

    banks = {"frame": lambda i: [], "EA": lambda i: [4 * ((i - 1) // 4)] if i else [],
             "window": lambda i: list(range(max(0, i - 3), i))}
    out = {"photo": warp_error(frames, flow)[0]}
    for name, bank in banks.items():
        out[name] = warp_error([render(f, shared(i, bank(i)), eps) for i, f in enumerate(frames)], flow)[0]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", default="woman-running,wolf,kite-walk")
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--kernel", action="append", default=[], help="cosine:KAPPA:BETA or gauss:SIGMA (repeatable; "
                    "default: the style's own)")
    ap.add_argument("--texture", type=float, default=0.0, metavar="G", help="the texture-selected rule (stage 10's "
                    "--shared-texture G) instead of the mean")
    ap.add_argument("--snow-cover", type=float, default=0.0, metavar="AMOUNT", help="render the snowy scene with "
                    "this much snow where the choice is positive (stage 10's --snow-cover) instead of the psychedelic turn")
    ap.add_argument("--snow-shade", type=float, default=0.0, metavar="AMOUNT", help="with --snow-cover: the snow's "
                    "mirror image, pushed away from white by this much, where the choice is negative (stage 10's "
                    "--snow-shade)")
    ap.add_argument("--dots", nargs="?", const="lattice", choices=DOT_RENDERINGS, help="render a pointillism: "
                    "'lattice' (alone: --dots), its dots on the latent cells from the one fixed noise, painted from "
                    "the turned frame, the bound of any shared choice drawn on that lattice; 'painted', 'blobs', "
                    "'peaks': session 30's tries at dots that move with the content (above)")
    args = ap.parse_args(argv)
    global DOTS
    styles.SNOW_COVER, styles.SNOW_SHADE, DOTS = args.snow_cover, args.snow_shade, args.dots
    if args.texture:
        styles.SHARED_TEXTURE, styles.SHARED_GAIN = args.texture, 1.0
    kernels = args.kernel or [f"cosine:{styles.SHARED_KAPPA:g}:{styles.SHARED_BETA:g}" if styles.SHARED_KERNEL == "cosine"
                              else f"gauss:{styles.SHARED_SIGMA:g}"]
    rendering = (f"snow cover {args.snow_cover:g}, shade {args.snow_shade:g}" if args.snow_cover
                 else f"dots ({DOTS})" if DOTS else "the psychedelic turn")
    print(f"rule: {'texture-selected, G ' + format(args.texture, 'g') if args.texture else 'the mean'}; rendering: {rendering}")
    print("| clip | kernel | photo | frame by frame (x photo) | EA (x frame) | window (x frame) |\n|---|---|---|---|---|---|")
    for clip in args.clips.split(","):
        frames, _ = read_video(str(VIDEOS / f"{clip}.mp4"), args.frames, args.size)
        for spec in kernels:
            set_kernel(spec)
            o = oracle(frames)
            print(f"| {clip} | {spec} | {o['photo']:.2f} | {o['frame']:.2f} ({o['frame'] / o['photo']:.1f}x) | "
                  f"{o['EA'] / o['frame']:.2f}x | {o['window'] / o['frame']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
