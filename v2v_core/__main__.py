"""Command-line face of the core.

    python -m v2v_core translate INPUT --prompt "a pencil sketch" --out out.mp4 [--backbone toy]
        [--strength 0.4] [--steps 2] [--size 256] [--frames N] [--seed 0] [--report report.json]
    python -m v2v_core toy-eval VIDEO [VIDEO ...] [--frames 48] [--markdown TABLES.md]
    python -m v2v_core metrics --source SRC --edited EDIT [--flow dis|raft] [--json out.json]
    python -m v2v_core train-svdiff (--videos DIR_OR_FILES | --synthetic N) --memory-size 8 --steps N --out ckpt.safetensors

Every flag of the engine comes from its config declaration (v2v_core.engine.StreamSettings).
User mistakes print one line (V2VError) and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .config import add_cli_arguments, from_cli
from .errors import V2VError, argument, check_prompt, run_cli
from .video import check_size


def _translate_parser(sub):
    from .backbones import BACKBONES
    from .engine import StreamSettings
    from .methods import METHODS
    from .streamv2v import StreamV2VConfig
    from .svdiff import SVDiffConfig
    from .temporal_shift import TemporalShiftConfig
    from .tokenflow import TokenFlowConfig

    p = sub.add_parser("translate", help="translate a clip with a streaming method")
    p.add_argument("input", help="input video (mp4, webm, mov, avi, gif)")
    p.add_argument("--prompt", required=True, type=argument(check_prompt),
                   help='what the output should look like, e.g. "a pencil sketch"')
    p.add_argument("--out", required=True, help="output .mp4 (H.264)")
    p.add_argument("--backbone", default="toy", help=f"{' | '.join(BACKBONES)} | PATH to a diffusers folder (default: toy)")
    p.add_argument("--method", default="streamdiffusion", choices=list(METHODS),
                   help="temporal method: streamdiffusion (per-frame baseline), streamv2v (feature bank), "
                        "window (attention over the previous 3 frames), temporal-shift, svdiff (learned temporal "
                        "memory), tokenflow (offline reference: whole clip, keyframes + propagation) "
                        "(default: streamdiffusion)")
    p.add_argument("--size", type=argument(check_size), default=256,
                   help="frames are resized and centre-cropped to SIZE (a multiple of 64 up to V2V_MAX_SIZE)")
    p.add_argument("--keep-aspect", action="store_true", help="keep the aspect ratio (long side cropped to a multiple of 64)")
    p.add_argument("--frames", type=int, default=None, help="translate only the first N frames")
    p.add_argument("--device", default=None, help="cpu | cuda | mps (default: best available)")
    p.add_argument("--dtype", default=None, help="float32 | float16 (default: float16 on CUDA, else float32)")
    p.add_argument("--report", default=None, help="write a JSON report (settings, fps, per-stage timings) here")
    add_cli_arguments(p, StreamSettings)
    add_cli_arguments(p.add_argument_group("StreamV2V (--method streamv2v)"), StreamV2VConfig)
    add_cli_arguments(p.add_argument_group("temporal shift (--method temporal-shift)"), TemporalShiftConfig)
    add_cli_arguments(p.add_argument_group("SVDiff (--method svdiff)"), SVDiffConfig)
    add_cli_arguments(p.add_argument_group("TokenFlow (--method tokenflow)"), TokenFlowConfig)
    return p


def cmd_translate(args) -> int:
    from tqdm import tqdm

    from .backbones import load_backbone
    from .engine import StreamSettings
    from .methods import config_class, make_method
    from .translate import translate_video
    from .video import probe

    settings = from_cli(StreamSettings, args)
    cfg_cls = config_class(args.method)
    method = make_method(args.method, from_cli(cfg_cls, args) if cfg_cls else None)
    probe(args.input)  # a bad input fails before the model loads
    t0 = time.perf_counter()
    backbone = load_backbone(args.backbone, device=args.device, dtype=args.dtype, seed=settings.seed)
    load_s = time.perf_counter() - t0
    if not backbone.makes_edits:
        print(f"note: backbone '{backbone.name}' has random weights: its output is noise, not an edit "
              "(use it for speed and memory figures only).", file=sys.stderr)
    warning = backbone.prompt_warning(args.prompt)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    bar = tqdm(unit="frame", desc="translate")

    def progress(done, total):
        bar.total = total
        bar.update(1)

    try:
        report = translate_video(backbone, args.input, args.prompt, args.out, settings, args.size, args.frames,
                                 args.keep_aspect, method=method, method_name=args.method, progress=progress)
    finally:
        bar.close()
    report["timings"]["load_seconds"] = load_s
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out} ({report['frames']} frames, {report['fps']:.2f} fps after warm-up)")
    return 0


def cmd_toy_eval(args) -> int:
    from .backbones import TOY_DIR, load_backbone
    from .toy.evaluate import evaluate
    from .toy.styles import EVALUATION_FILE

    folder = Path(args.model or TOY_DIR)
    if args.summary and Path(args.summary).resolve() != (folder / EVALUATION_FILE).resolve():
        raise V2VError(f"--summary describes the evaluated model's weights, so it belongs in its folder: give "
                       f"{folder / EVALUATION_FILE}.")
    backbone = load_backbone(args.model or "toy")
    reports = [evaluate(v, frames=args.frames, size=args.size, backbone=backbone, folder=folder) for v in args.video]
    out = json.dumps(reports[0] if len(reports) == 1 else reports, indent=2)
    print(out)
    if args.json:
        Path(args.json).write_text(out + "\n")
    if args.markdown:
        from .toy.evaluate import markdown_report

        Path(args.markdown).write_text(markdown_report(reports))
        print("wrote", args.markdown)
    if args.summary:
        from .toy.evaluate import summary

        Path(args.summary).write_text(json.dumps(summary(reports, folder), indent=2) + "\n")
        print("wrote", args.summary)
    if args.grid:
        from .toy.evaluate import style_grid

        print("wrote", style_grid(args.video, args.grid, size=args.size, backbone=backbone, folder=folder))
    return 0


def cmd_metrics(args) -> int:
    from .metrics import evaluate_clip
    from .video import read_video

    size, frames, run_note = args.size, args.frames, None
    if args.like_run:                 # measure as the run did: its size and its number of frames
        run = Path(args.like_run)
        run = run / "report.json" if run.is_dir() else run
        if not run.exists():
            raise V2VError(f"{args.like_run}: no report.json there; give a run's folder or its report.json.")
        settings = json.loads(run.read_text()).get("settings") or {}
        size, frames = size or settings.get("size"), frames or settings.get("frames")
        run_note = (f"measured like the run in {run.parent.name}/ ({size} px, {frames} frames); the run's own figure was "
                    "taken on its frames before mp4 encoding, so the written mp4 reads slightly differently")
    source, _ = read_video(args.source, frames, size)
    edited, _ = read_video(args.edited, frames, size if args.like_run else None)
    report = evaluate_clip(source, edited, flow=args.flow, prompt=args.prompt,
                           clip_model=None if args.no_clip else args.clip_model)
    h, w = source[0].shape[:2]
    n = min(len(source), len(edited))
    report["measured_at"] = {"width": w, "height": h, "frames": n,
                             "source": f"resized and cropped to {size} px" if size else "native size"}
    print(f"warp error measured at {w}x{h} px over {n} frames ({report['measured_at']['source']}); the same clip at "
          "another size or length gives another figure" + (f"; {run_note}" if run_note else ""), file=sys.stderr)
    if not args.series:
        report = {k: v for k, v in report.items() if not k.endswith("_series")}
    text = json.dumps(report, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    if report.get("note"):
        print(f"note: {report['note']}", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m v2v_core", description="V2V Studio core: streaming video-to-video")
    sub = ap.add_subparsers(dest="cmd", required=True)
    _translate_parser(sub).set_defaults(fn=cmd_translate)
    p = sub.add_parser("toy-eval", help="evaluate the embedded toy model on clips (JSON)")
    p.add_argument("video", nargs="+", help="clips to evaluate on (never one the toy trained on); with several, the "
                                            "JSON is a list of reports, one per clip")
    p.add_argument("--frames", type=int, default=48, help="frames to evaluate (default: 48)")
    p.add_argument("--size", type=int, default=256, help="frame size in px (default: 256)")
    p.add_argument("--json", default=None, help="also write the JSON here")
    p.add_argument("--markdown", default=None, help="also write the model card's tables (every clip side by side) here")
    p.add_argument("--grid", default=None, help="also draw every style on frame 0 of each clip into this PNG")
    p.add_argument("--summary", default=None, help="also write what the studio tells users about each style (which it "
                                                   "draws faintly) to MODEL_FOLDER/evaluation.json; only clips the "
                                                   "model never saw")
    p.add_argument("--model", default=None, help="a toy model folder written by `python -m v2v_core.toy.train --out "
                                                 "DIR` (default: the shipped one), e.g. to compare a re-run")
    p.set_defaults(fn=cmd_toy_eval)
    p = sub.add_parser("metrics", help="warp error (both variants) and CLIP metrics of an edited clip")
    p.add_argument("--source", required=True, help="the source clip (flows are computed on it)")
    p.add_argument("--edited", required=True, help="the edited clip (frame i matches source frame i)")
    p.add_argument("--flow", default="dis", choices=["dis", "raft"], help="optical flow estimator (default: dis)")
    p.add_argument("--size", type=int, default=None, help="resize+crop the source to SIZE first (default: native)")
    p.add_argument("--frames", type=int, default=None, help="use only the first N frames (default: all)")
    p.add_argument("--like-run", default=None, metavar="RUN",
                   help="measure at a comparison run's size and frame count (its folder or report.json; default: none)")
    p.add_argument("--prompt", default=None, help="prompt for CLIP text alignment")
    p.add_argument("--clip-model", default="openai/clip-vit-base-patch32", help="CLIP hub id or local folder")
    p.add_argument("--no-clip", action="store_true", help="skip CLIP metrics")
    p.add_argument("--series", action="store_true", help="include per-frame series")
    p.add_argument("--json", default=None, help="also write the JSON here")
    p.set_defaults(fn=cmd_metrics)
    from .svdiff_train import add_parser as add_svdiff_train

    add_svdiff_train(sub)
    return run_cli(ap, argv)


if __name__ == "__main__":
    from .threads import apply

    apply()      # the process's thread policy (v2v_core.threads), before torch loads
    sys.exit(main())
