"""Per-frame speed of two toy model folders, and of CPU variants of the engine, measured in ONE run
(interleaved frame by frame, so the machine's mood hits every variant alike): read the ratios.

    python benchmarks/toy_speed.py --old OLD_MODEL_DIR [--new v2v_core/toy/model] [--frames 40] [--size 256]
    python benchmarks/toy_speed.py --old OLD_DIR --compile      # also torch.compile'd UNet + VAE (slow to build)

Variants: old (the old folder), new (the shipped folder, channels-last as the loader sets it on CPU),
new contiguous (channels-last undone), and with --compile new + torch.compile. A git folder of an earlier
model: `git worktree add /tmp/old <commit>` then --old /tmp/old/v2v_core/toy/model.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from v2v_core.backbones import TOY_DIR, load_backbone  # noqa: E402
from v2v_core.engine import Stream, StreamSettings  # noqa: E402
from v2v_core.synthetic import make_clip  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", required=True, help="the earlier toy model folder")
    ap.add_argument("--new", default=str(TOY_DIR), help="the toy model folder to measure (default: the shipped one)")
    ap.add_argument("--frames", type=int, default=40, help="frames per variant, 4 of them warm-up (default: 40)")
    ap.add_argument("--size", type=int, default=256, help="frame size in px (default: 256)")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile (inductor needs a C++ compiler)")
    args = ap.parse_args(argv)
    frames = [np.ascontiguousarray(f) for f in make_clip("pan", args.frames, args.size).frames]
    variants = {"old": load_backbone(args.old, device="cpu"), "new": load_backbone(args.new, device="cpu")}
    contiguous = load_backbone(args.new, device="cpu")
    contiguous.unet.to(memory_format=torch.contiguous_format)
    contiguous.vae.to(memory_format=torch.contiguous_format)
    variants["new, contiguous"] = contiguous
    if args.compile:
        comp = load_backbone(args.new, device="cpu")
        t0 = time.perf_counter()
        comp.unet = torch.compile(comp.unet)
        comp.vae.decoder = torch.compile(comp.vae.decoder)
        comp.vae.encoder = torch.compile(comp.vae.encoder)
        variants["new, torch.compile"] = comp
        warm = Stream(comp, "a pencil sketch", StreamSettings())
        list(warm.run(frames[:2]))
        print(f"torch.compile build + first frames: {time.perf_counter() - t0:.1f} s", flush=True)
    streams = {k: Stream(bb, "a pencil sketch", StreamSettings(strength=0.4, steps=2, seed=0)) for k, bb in variants.items()}
    for f in frames:                                   # interleaved
        for s in streams.values():
            s.push(f)
    warmup = 4
    per = {k: float(np.median([t["total"] for t in s.timings[warmup:]])) for k, s in streams.items()}
    print(f"# per-frame baseline, {args.size} px, strength 0.4, 2 steps, {torch.get_num_threads()} threads, "
          f"median of {args.frames - warmup} frames after {warmup} warm-up, interleaved")
    print("| variant | s/frame | fps | ratio to old (fps) | UNet ms/frame |")
    print("|---|---|---|---|---|")
    for k, s in streams.items():
        unet = float(np.median([t["unet"] for t in s.timings[warmup:]])) * 1000
        print(f"| {k} | {per[k]:.4f} | {1 / per[k]:.2f} | {per['old'] / per[k]:.2f}x | {unet:.1f} |")


if __name__ == "__main__":
    main()
