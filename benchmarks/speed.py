"""Speed of the per-frame baseline (StreamDiffusion) on the available backbones. Prints figures; it
is a benchmark, not a test (timings on shared machines are noisy: read ratios within one run).

    python benchmarks/speed.py                                   # toy fps + sd15-random s/frame at 256 px
    python benchmarks/speed.py --backbones toy --frames 48 --size 256
    python benchmarks/speed.py --backbones sd15-random --device cuda --size 512 --dtype float16
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from v2v_core.backbones import load_backbone  # noqa: E402
from v2v_core.engine import Stream, StreamSettings, fps_after_warmup, mean_timings  # noqa: E402
from v2v_core.synthetic import make_clip  # noqa: E402


def bench(name, frames, device, dtype, steps, stream_batch, warmup=2):
    t0 = time.perf_counter()
    bb = load_backbone(name, device=device, dtype=dtype)
    load = time.perf_counter() - t0
    s = Stream(bb, "a pencil sketch", StreamSettings(steps=steps, stream_batch=stream_batch))
    out = list(s.run(frames))
    assert len(out) == len(frames)
    m = mean_timings(s.timings[warmup:])
    peak = torch.cuda.max_memory_allocated() if bb.device.type == "cuda" else None
    return {"backbone": name, "device": str(bb.device), "dtype": str(bb.dtype).replace("torch.", ""),
            "size": frames[0].shape[0], "frames": len(frames), "steps": steps, "stream_batch": stream_batch,
            "fps": fps_after_warmup(s.timings, warmup), "seconds_per_frame": m["total"],
            "stages_ms": {k: round(v * 1000, 1) for k, v in m.items()}, "load_seconds": round(load, 1),
            "peak_cuda_bytes": peak, "threads": torch.get_num_threads()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbones", default="toy,sd15-random")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=None, help="default: 24 for toy, 5 for sd15-random on CPU")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--stream-batch", action="store_true")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    for name in args.backbones.split(","):
        n = args.frames or (5 if name != "toy" and (args.device or "cpu") == "cpu" else 24)
        frames = [np.ascontiguousarray(f) for f in make_clip("pan", n, args.size).frames]
        r = bench(name, frames, args.device, args.dtype, args.steps, args.stream_batch)
        rows.append(r)
        print(f"{name:12s} {r['device']:5s} {r['size']}px {r['steps']} steps: {r['fps']:.2f} fps = "
              f"{r['seconds_per_frame']:.3f} s/frame  stages(ms) {r['stages_ms']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
