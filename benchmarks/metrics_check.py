"""Sanity and speed of the metrics on real clips. Prints figures (a benchmark, not a test).

    python benchmarks/metrics_check.py        # needs ../shared/data/videos

1. Ordering on SVDiff's published kite-walk edit: warp error of the source against itself <
   the published edit < the same edit with its frames shuffled (both variants).
2. Time for the metrics (flows + both warp-error variants) over 120 frames of woman-running at 256 px.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from v2v_core.metrics import evaluate_clip  # noqa: E402
from v2v_core.video import read_video  # noqa: E402

VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"


def main():
    size = int(sys.argv[1]) if len(sys.argv) > 1 else None
    src, _ = read_video(VIDEOS / "kite-walk.mp4", size=size)
    edit, _ = read_video(VIDEOS / "kite-walk-style.mp4")
    shuffled = [edit[i] for i in np.random.default_rng(0).permutation(len(edit))]
    rows = {"source vs itself": src, "published edit (SVDiff)": edit, "edit, frames shuffled": shuffled}
    print(f"kite-walk, {len(src)} frames at {src[0].shape[1]}x{src[0].shape[0]} (edit resized to it), flow: DIS")
    print(f"{'clip':28s} {'warp_error':>11s} {'paper_compatible':>17s}")
    res = {}
    for name, frames in rows.items():
        r = evaluate_clip(src, frames, clip_model=None)
        res[name] = r
        print(f"{name:28s} {r['warp_error']:11.2f} {r['warp_error_paper_compatible']:17.2f}")
    for key in ("warp_error", "warp_error_paper_compatible"):
        s, e, o = (res[k][key] for k in rows)
        print(f"{key}: source < edit < shuffled: {s < e < o}; shuffled / edit = {o / e:.2f}x")

    wr, _ = read_video(VIDEOS / "woman-running.mp4", 120, 256)
    edited = [wr[i] for i in np.random.default_rng(1).permutation(len(wr))]
    t = time.perf_counter()
    r = evaluate_clip(wr, edited, clip_model=None)
    print(f"metrics over {r['frames']} frames at 256 px (flows + both variants): {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()
