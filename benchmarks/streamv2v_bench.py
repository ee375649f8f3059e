"""StreamV2V's overhead over the per-frame baseline, and DyMe's constant bank. Prints figures.

    python benchmarks/streamv2v_bench.py                       # sd15-random, CPU, 256 px
    python benchmarks/streamv2v_bench.py --device cuda --size 512 --dtype float16 --frames 60

1. seconds/frame of StreamDiffusion and StreamV2V (EA + FF + DyMe) on ONE loaded backbone, run
   interleaved frame by frame (so machine noise hits both alike), after warm-up; and their ratio.
2. bank bytes of a DyMe stream on the toy backbone at frame 10 and frame 500 (--bank-frames).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from v2v_core.backbones import load_backbone  # noqa: E402
from v2v_core.engine import Stream, StreamSettings  # noqa: E402
from v2v_core.streamv2v import StreamV2V  # noqa: E402
from v2v_core.synthetic import make_clip  # noqa: E402


def overhead(args):
    bb = load_backbone(args.backbone, device=args.device, dtype=args.dtype)
    frames = [np.ascontiguousarray(f) for f in make_clip("pan", args.frames, args.size).frames]
    streams = {"StreamDiffusion": Stream(bb, "a cartoon", StreamSettings(steps=args.steps)),
               "StreamV2V": Stream(bb, "a cartoon", StreamSettings(steps=args.steps), StreamV2V())}
    for f in frames:
        for s in streams.values():
            s.push(f)
    res = {k: float(np.mean([t["total"] for t in s.timings[args.warmup:]])) for k, s in streams.items()}
    stages = {k: {st: round(1000 * float(np.mean([t[st] for t in s.timings[args.warmup:]])), 1)
                  for st in ("encode", "unet", "temporal", "decode")} for k, s in streams.items()}
    dev = f"{bb.device} {str(bb.dtype).replace('torch.', '')}"
    print(f"{args.backbone} on {dev}, {args.size} px, {args.steps} steps, {args.frames} frames "
          f"({args.warmup} warm-up), threads {torch.get_num_threads()}")
    for k in streams:
        print(f"  {k:16s} {res[k]:.4f} s/frame  ({1 / res[k]:.2f} fps)  stages ms {stages[k]}")
    print(f"  ratio StreamV2V / StreamDiffusion = {res['StreamV2V'] / res['StreamDiffusion']:.3f} (target <= 1.25)")
    if bb.device.type == "cuda":
        print(f"  peak CUDA memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")


def constant_bank(args):
    bb = load_backbone("toy", device=args.device)
    clip = make_clip("pan", 40, 256).frames
    s = Stream(bb, "a cartoon", StreamSettings(), StreamV2V())
    t0 = time.perf_counter()
    marks = {}
    for i in range(args.bank_frames):
        s.push(np.ascontiguousarray(clip[i % len(clip)]))
        if i + 1 in (1, 10, 100, args.bank_frames):
            marks[i + 1] = (s.timings[-1]["bank_bytes"], s.timings[-1]["bank_tokens"])
    print(f"toy DyMe bank over {args.bank_frames} frames ({time.perf_counter() - t0:.0f} s):")
    for f, (b, t) in marks.items():
        print(f"  frame {f:4d}: {b} bytes, {t} tokens")
    print(f"  frame 10 == frame {args.bank_frames}: {marks[10] == marks[args.bank_frames]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="sd15-random")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--bank-frames", type=int, default=500)
    ap.add_argument("--skip-bank", action="store_true")
    args = ap.parse_args()
    overhead(args)
    if not args.skip_bank:
        constant_bank(args)


if __name__ == "__main__":
    main()
