"""A live stream's memory over 10,000 frames (#21): StreamV2V (DyMe bank) at 128 px through the Live tab's
own session object (comparisons.service.LiveSession), printing the process's resident memory every
1,000 frames. Flat after warm-up means: the bank is constant-size (DyMe) and the per-frame figures are a
bounded window (the last LIVE_TIMINGS frames' timings, the last 50 model times).

    python benchmarks/live_memory.py [--frames 10000] [--every 1000] [--size 128]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=10_000, help="frames to stream (default: 10000)")
    ap.add_argument("--every", type=int, default=1000, help="print memory every N frames (default: 1000)")
    ap.add_argument("--size", type=int, default=128, help="frame size in px (default: 128)")
    args = ap.parse_args(argv)
    from comparisons.service import LiveSession
    from v2v_core.synthetic import make_clip

    clip = make_clip("pan", 48, args.size).frames          # looped: a camera that never stops
    sess = LiveSession(size=args.size)
    first = None
    print(f"# StreamV2V (dyme), {args.size} px, {args.frames} frames through LiveSession", flush=True)
    for i in range(args.frames):
        sess.process(clip[i % len(clip)], "StreamV2V", "a thermal image")
        if (i + 1) % args.every == 0:
            mem = rss_mib()
            bank = sess.stream.timings[-1].get("bank_bytes", 0)
            first = first if first is not None else mem
            print(f"frame {i + 1:6d}: RSS {mem:8.1f} MiB ({mem - first:+.1f} since frame {args.every}), bank "
                  f"{bank} bytes, timings kept {len(sess.stream.timings)}", flush=True)


if __name__ == "__main__":
    main()
