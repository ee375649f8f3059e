"""Which source latents let TokenFlow's nearest neighbours follow the true motion?

    python benchmarks/tokenflow_matches.py [--backbone toy] [--size 256] [--speed 6] [--frames 8]

On a clip the examples generator renders with a known constant pan, for each `source_branch` choice (released:
matches made where the released propagation pass makes them, on a source branch propagated layer by layer; stock: on
a separate stock pass of the source) and each `source_noise` choice (clean source latents; a noise of each frame's
own, like the released code's DDIM-inverted latents; the stream's one noise for every frame), prints per
self-attention layer the share of tokens whose nearest neighbour in each of their two keyframes is within one token
cell of where the content really is.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # run as a script from anywhere

from v2v_core.backbones import load_backbone  # noqa: E402
from v2v_core.engine import StreamSettings  # noqa: E402
from v2v_core.synthetic import make_clip  # noqa: E402
from v2v_core.tokenflow import TokenFlowConfig, match_accuracy  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="toy", help="toy | sd15 | sd15-random | PATH (default: toy)")
    ap.add_argument("--size", type=int, default=256, help="frame size in px (default: 256)")
    ap.add_argument("--speed", type=float, default=6.0, help="pan speed in px a frame, diagonal (default: 6)")
    ap.add_argument("--frames", type=int, default=8, help="clip length (default: 8)")
    ap.add_argument("--group", type=int, default=4, help="keyframe group B (default: 4)")
    ap.add_argument("--device", default=None, help="cpu | cuda (default: the best available)")
    args = ap.parse_args(argv)
    bb = load_backbone(args.backbone, device=args.device)
    clip = make_clip("pan", args.frames, args.size, speed=args.speed)
    settings = StreamSettings(strength=0.4, steps=2, seed=0)
    rows = {}
    for branch in ("released", "stock"):
        for sn in ("clean", "per-frame", "shared"):
            rows[f"{branch}, {sn}"] = match_accuracy(bb, clip, settings, TokenFlowConfig(
                keyframe_group=args.group, source_noise=sn, source_branch=branch))
    layers = list(rows["released, clean"])
    print(f"# TokenFlow source matches within one token cell of the true motion ({args.backbone}, {args.size} px, "
          f"pan {args.speed} px/frame, {args.frames} frames, B={args.group}, step 1 of strength 0.4 / 2 steps)")
    print("| layer | " + " | ".join(rows) + " |")
    print("|---|" + "---|" * len(rows))
    for layer in layers:
        print(f"| {layer.replace('.transformer_blocks.0.attn1', '')} | " +
              " | ".join(f"{rows[sn][layer]:.3f}" for sn in rows) + " |")
    print("| mean | " + " | ".join(f"{sum(r.values()) / len(r):.3f}" for r in rows.values()) + " |")


if __name__ == "__main__":
    main()
