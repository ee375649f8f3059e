"""Render the studio's example clips (known motion, true optical flow) from scikit-image's photos.

    python examples/make_examples.py            # writes examples/*.mp4 and prompts.json
    python examples/make_examples.py --flows    # also each clip's true flow, examples/CLIP-flow.npz (not committed)

Deterministic: every run renders the same frames (v2v_core.synthetic). The mp4s are committed (small)
so the app and a Hugging Face Space have examples without a build step; the true flows (.npz) are
regenerated on demand by tests through v2v_core.synthetic.make_clip, so they are not committed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from v2v_core.synthetic import make_clip  # noqa: E402
from v2v_core.video import write_video  # noqa: E402

HERE = Path(__file__).parent
CLIPS = [  # (motion, photo, frames)
    ("pan", "astronaut", 24),
    ("zoom", "coffee", 24),
    ("rotate", "chelsea", 24),
    ("object", "rocket", 24),
]
PROMPTS = ["a pencil sketch", "a cartoon", "pixel art", "a sepia photo", "a black and white photo",
           "a thermal image", "pointillism", "a snowy scene", "a photo"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--flows", action="store_true", help="also write the true flows as .npz")
    args = ap.parse_args(argv)
    import numpy as np

    for motion, photo, n in CLIPS:
        clip = make_clip(motion, n, 256, photo)
        path = write_video(args.out / f"{clip.name}.mp4", clip.frames, clip.fps)
        if args.flows:
            np.savez_compressed(args.out / f"{clip.name}-flow.npz", flow=clip.flow, occluded=clip.occluded)
        print("wrote", path)
    (args.out / "prompts.json").write_text(json.dumps(PROMPTS, indent=2) + "\n")


if __name__ == "__main__":
    main()
