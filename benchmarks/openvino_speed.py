"""OpenVINO against PyTorch on a CPU, every method the OpenVINO path serves, in ONE run: per-frame times interleaved
frame by frame (the machine's mood hits both runtimes alike), then the outputs' agreement on real clips.

    python benchmarks/openvino_speed.py [--frames 24] [--size 256] [--prompt "a pencil sketch"] [--clips DIR]
                                        [--runtime openvino|openvino-bf16-unet|openvino-bf16] [--methods "SVDiff,..."]
                                        [--backbone toy|FOLDER]

Speed: the embedded model at the studio's thread policy (v2v_core.threads: cores - 1), a known-motion clip, the
first 4 frames of each stream not counted (conversion and warm-up are done before); median ms per frame of each
method on each runtime, the ratio PyTorch / OpenVINO, and each method's time over StreamDiffusion's on the same
runtime. TokenFlow, offline, translates the whole clip (--frames frames) at once: its ms per frame is the median of 3
whole runs a runtime, the runtimes alternating, over the frame count. Agreement: on every clip of --clips (default
../shared/data/videos, the first --frames frames), the lowest per-frame PSNR of OpenVINO's output against PyTorch's, and
both warp errors (DIS flow on the source).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from v2v_core.threads import apply  # noqa: E402

THREADS = apply()       # before torch loads

import numpy as np  # noqa: E402

from v2v_core.backbones import load_backbone  # noqa: E402
from v2v_core.engine import Stream, StreamSettings  # noqa: E402
from v2v_core.openvino_runtime import PRECISIONS, openvino_backbone  # noqa: E402
from v2v_core.synthetic import make_clip  # noqa: E402

METHODS = ("StreamDiffusion", "StreamV2V", "StreamV2V (queue bank)", "Window attention", "Temporal shift", "SVDiff",
           "TokenFlow")


def psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255 ** 2 / max(mse, 1e-12)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--prompt", default="a pencil sketch")
    ap.add_argument("--clips", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"))
    ap.add_argument("--skip-quality", action="store_true", help="speed only")
    ap.add_argument("--skip-speed", action="store_true", help="agreement only (needs no idle machine)")
    ap.add_argument("--runtime", choices=tuple(PRECISIONS), default="openvino",
                    help="openvino (f32, default), openvino-bf16-unet or openvino-bf16 (a CPU with bfloat16 units)")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated registry names (default: all above)")
    ap.add_argument("--backbone", default="toy", help="the model (default the embedded one; a retrained toy's folder "
                                                      "converts through the same code)")
    ap.add_argument("--precision", action="append", default=[], metavar="PART=f32|bf16|f16",
                    help="one part's precision on this run's runtime (encode, decode, text, unet, or a UNet graph's name); "
                         "repeatable; to find which part's rounding costs what")
    args = ap.parse_args(argv)

    for item in args.precision:
        part, _, prec = item.partition("=")
        PRECISIONS[args.runtime] = {**PRECISIONS[args.runtime], part: prec}
    args.parts = ", ".join(f"{k} {v}" for k, v in PRECISIONS[args.runtime].items())
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not args.skip_speed and "StreamDiffusion" not in args.methods:
        args.methods.insert(0, "StreamDiffusion")          # the speed table's reference
    bb = load_backbone(args.backbone, device="cpu")
    ov = openvino_backbone(bb, args.runtime)
    settings = StreamSettings()
    frames = [np.ascontiguousarray(f) for f in make_clip("pan", args.frames + 4, args.size).frames]
    if not args.skip_speed:
        speed(bb, ov, settings, frames, args)
    if not args.skip_quality:
        agreement(bb, ov, settings, args)


def translate(bb, name, frames, prompt, settings) -> list:
    """A registered method's output frames: an online one through a Stream, an offline one (TokenFlow) whole."""
    from comparisons.registry import REGISTRY

    preset = REGISTRY[name]
    if preset.online:
        return list(Stream(bb, prompt, settings, preset.build()).run(frames))
    return preset.build().run(bb, frames, prompt, settings)


def speed(bb, ov, settings, frames, args):
    from comparisons.registry import REGISTRY

    t0 = time.perf_counter()
    offline = [n for n in args.methods if not REGISTRY[n].online]
    online = [n for n in args.methods if REGISTRY[n].online]
    for name in args.methods:        # conversion (or the disk cache) first: not timed below
        translate(ov, name, frames[:6] if name in online else frames[4:], args.prompt, settings)
    print(f"# OpenVINO ({args.runtime}: {args.parts}) vs PyTorch, {args.backbone}, {args.size} px, {THREADS or 'torch default'} thread(s), "
          f"median of {args.frames} frames after 4 (conversion and first compile {ov.ov.convert_seconds:.1f} s, "
          f"setup in all {time.perf_counter() - t0:.1f} s)")
    times = {(n, r): [] for n in args.methods for r in ("torch", "openvino")}
    streams = {(n, r): Stream(bb if r == "torch" else ov, args.prompt, settings, REGISTRY[n].build())
               for n in online for r in ("torch", "openvino")}
    for i, f in enumerate(frames):
        for key, s in streams.items():
            t = time.perf_counter()
            s.push(f)
            if i >= 4:
                times[key].append(time.perf_counter() - t)
    for _ in range(3):               # offline: whole clips, the runtimes alternating
        for key in [(n, r) for n in offline for r in ("torch", "openvino")]:
            t = time.perf_counter()
            translate(bb if key[1] == "torch" else ov, key[0], frames[4:], args.prompt, settings)
            times[key].append((time.perf_counter() - t) / len(frames[4:]))
    med = {k: 1000 * statistics.median(v) for k, v in times.items()}
    print("| method | PyTorch ms/frame | OpenVINO ms/frame | PyTorch / OpenVINO | / StreamDiffusion (PyTorch) | "
          "/ StreamDiffusion (OpenVINO) |")
    print("|---|---|---|---|---|---|")
    for n in args.methods:
        pt, o = med[(n, "torch")], med[(n, "openvino")]
        print(f"| {n} | {pt:.1f} | {o:.1f} | {pt / o:.2f}x | {pt / med[('StreamDiffusion', 'torch')]:.2f}x | "
              f"{o / med[('StreamDiffusion', 'openvino')]:.2f}x |")


def agreement(bb, ov, settings, args):
    from v2v_core.metrics import evaluate_clip
    from v2v_core.video import read_video

    clips = sorted(p for p in Path(args.clips).glob("*.mp4") if "style" not in p.stem)
    print(f"\n# Agreement ({args.runtime}: {args.parts}), {args.frames} frames of each clip at {args.size} px, \"{args.prompt}\"")
    print("| clip | method | lowest PSNR OpenVINO vs PyTorch | warp error PyTorch | warp error OpenVINO | difference |")
    print("|---|---|---|---|---|---|")
    for clip in clips:
        src, _ = read_video(str(clip), args.frames, args.size)
        for n in args.methods:
            outs = {r: translate(b, n, src, args.prompt, settings) for r, b in (("torch", bb), ("openvino", ov))}
            we = {r: evaluate_clip(src, o, clip_model=None)["warp_error"] for r, o in outs.items()}
            low = min(psnr(a, b) for a, b in zip(outs["torch"], outs["openvino"]))
            print(f"| {clip.stem} | {n} | {low:.1f} dB | {we['torch']:.3f} | {we['openvino']:.3f} | "
                  f"{100 * (we['openvino'] / we['torch'] - 1):+.2f}% |")


if __name__ == "__main__":
    main()
