"""Which self-attention layers of a backbone carry correspondence? Prints, per layer, the median error
(px) of the point recovered by q.k on clips made by shifting an image a known 8 px a frame.

    python benchmarks/correspondence.py                                   # toy, CPU
    python benchmarks/correspondence.py --backbone sd15 --device cuda --size 512

Images: astronaut and coffee (scikit-image photos) and a procedural scene from a seed the toy's
training pool never draws. A layer "follows" the motion when its error is within one token cell.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from v2v_core.backbones import load_backbone  # noqa: E402
from v2v_core.correspondence import shift_errors  # noqa: E402
from v2v_core.toy.data import heldout_scene  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="toy")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--prompt", default="a photo")
    args = ap.parse_args(argv)
    bb = load_backbone(args.backbone, device=args.device, dtype=args.dtype)
    images = {"astronaut": {"photo": "astronaut"}, "coffee": {"photo": "coffee"}, "held-out scene": {"image": heldout_scene()}}
    table, cells = {}, {}
    for name, source in images.items():
        errors, cells, _, _ = shift_errors(bb, prompt=args.prompt, size=args.size, **source)
        for layer, e in errors.items():
            table.setdefault(layer, {})[name] = e
    print(f"{bb.name}, {args.size} px, prompt {args.prompt!r}: median error (px) of the recovered point, 8 px/frame shift")
    print(f"{'layer':58s} {'cell':>5s} " + " ".join(f"{n:>15s}" for n in images))
    for layer, row in table.items():
        mark = "  follows (every image)" if max(row.values()) <= cells[layer] else ""
        print(f"{layer:58s} {cells[layer]:5.0f} " + " ".join(f"{row[n]:15.0f}" for n in images) + mark)


if __name__ == "__main__":
    main()
