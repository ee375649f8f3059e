"""Command-line face of comparisons.

    python -m comparisons list
    python -m comparisons ablate INPUT --prompt P --grid streamv2v --out-dir DIR [--frames N]
    python -m comparisons evaluate DATASET.jsonl --methods M1,M2 --out-dir DIR    (torchrun-shardable)
    python -m comparisons study create --results BUNDLE ... --out study.db | report study.db | export study.db --csv F
    python -m comparisons import --source SRC.mp4 --prompt P --result NAME=EDIT.mp4 ... --out-dir DIR
    python -m comparisons evaluate-results LIST.json --root DIR --out-dir OUT
    python -m comparisons method-effect CLIP [CLIP ...] --out-dir DIR [--styles invented|all|NAMES] [--methods all]
    python -m comparisons run INPUT --prompt P --methods "StreamDiffusion,StreamV2V" --out-dir DIR
        [--backbone toy] [--frames N] [--size 256] [--seed 0] [--strength 0.4] [--steps 2]
    (--methods all-online / all select every registered online method / every method)
"""
from __future__ import annotations

import argparse
import sys

import shutil
from contextlib import contextmanager
from pathlib import Path

from v2v_core.config import RUNTIME_HELP, RUNTIMES
from v2v_core.errors import argument, check_frames, check_prompt, run_cli
from v2v_core.video import check_size


def cmd_list(args) -> int:
    from .registry import PRESETS

    width = max(len(p.name) for p in PRESETS)
    for p in PRESETS:
        kind = "online " if p.online else "offline"
        print(f"{p.name:{width}s}  {kind}  {p.description}")
        print(f"{'':{width}s}           paper: {p.paper}")
    return 0


class ProgressBars:
    """`comparisons run`'s progress on stderr: one bar per method and stage kind (generating; TokenFlow's encoding,
    denoising over all its steps, decoding), each with its total from the start and ended at 100% when its stage is
    over; the sub-stage (e.g. "step 1/2: propagate") beside it. Called as the runner's progress(method, done, total,
    stage); reports without a count (waiting, measuring) draw nothing. A first OpenVINO start's "converting / compiling
    OpenVINO graph ..." is said beside the bar it interrupts (or on a line of its own before the method's first bar),
    not as a stage: it would end the bar at 100% mid-way."""

    SETUP = ("converting OpenVINO graph", "compiling OpenVINO graph")

    def __init__(self, file=None):
        self.file, self.bar, self.key = file, None, None

    @staticmethod
    def kind(stage: str) -> tuple[str, str]:
        """("denoising", "step 1/2: propagate") from "denoising step 1/2: propagate"; ("generating", "") etc."""
        if stage.startswith("denoising step"):
            return "denoising", stage[len("denoising "):]
        return stage, ""

    def __call__(self, method, done, total, stage):
        from tqdm import tqdm

        if total is None or stage == "waiting":
            return
        if stage.startswith(self.SETUP):
            if self.key and self.key[0] == method:
                self.bar.set_postfix_str(stage)
            else:
                print(f"{method}: {stage}", file=self.file or sys.stderr)
            return
        if stage.startswith("done"):
            if self.key and self.key[0] == method:
                self.close(complete=True)
            print(f"{method}: {stage}", file=self.file or sys.stderr)
            return
        kind, detail = self.kind(stage)
        if self.key != (method, kind, total):
            self.close(complete=True)          # stages run one after another: the one before is over
            self.key = (method, kind, total)
            self.bar = tqdm(total=total, desc=f"{method}: {kind}", unit="frame", file=self.file, leave=True)
        self.bar.set_postfix_str(detail, refresh=False)        # (an OpenVINO setup note, if any, is over)
        self.bar.update(min(done, total) - self.bar.n)

    def close(self, complete: bool = False):
        if self.bar is not None:
            if complete:
                self.bar.update(self.bar.total - self.bar.n)
            self.bar.close()
        self.bar = self.key = None


@contextmanager
def out_dir_kept_on_success(path):
    """A run's --out-dir: when this run made the folder and then fails (or is interrupted), the folder goes too, so a
    failed run leaves no empty or half-written bundle behind; a folder that was there before is left as it was."""
    path = Path(path)
    made = not path.exists()
    try:
        yield path
    except BaseException:
        if made and path.exists():
            shutil.rmtree(path, ignore_errors=True)
        raise


def cmd_run(args) -> int:
    from .runner import run_comparison

    if args.backbone == "toy":   # what the studio's UI says of this prompt, before the run
        from v2v_core.toy.styles import shipped_model_prompt_warning

        warning = shipped_model_prompt_warning(args.prompt)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
    bars = ProgressBars()
    try:
        with out_dir_kept_on_success(args.out_dir):
            report = run_comparison(args.input, args.prompt, args.methods, args.out_dir, backbone=args.backbone,
                                    frames=args.frames, size=args.size, seed=args.seed, strength=args.strength,
                                    steps=args.steps, clip_model=args.clip_model, progress=bars, runtime=args.runtime)
    finally:
        bars.close()
    from .runner import markdown_table

    print(markdown_table(report))
    print(f"\nwrote {args.out_dir}/report.json, report.md, mosaic.mp4 and one mp4 per method")
    return 0


def cmd_method_effect(args) -> int:
    from .method_effect import markdown, method_effect, pick_styles

    styles = pick_styles(args.styles)
    bars = ProgressBars()
    try:
        result = method_effect(args.inputs, styles, args.out_dir, methods=args.methods, frames=args.frames,
                               size=args.size, backbone=args.backbone, progress=bars, seed=args.seed,
                               strength=args.strength, steps=args.steps)
    finally:
        bars.close()
    print(markdown(result))
    print(f"wrote {args.out_dir}/method_effect.json, method_effect.md and a results bundle per clip and style")
    return 0


def cmd_ablate(args) -> int:
    from .ablation import run_ablation

    with out_dir_kept_on_success(args.out_dir):
        report = run_ablation(args.input, args.prompt, args.grid, args.out_dir, backbone=args.backbone,
                              frames=args.frames, size=args.size, seed=args.seed, strength=args.strength, steps=args.steps)
    print(report["ablation_table"])
    print(f"\nwrote {args.out_dir}/ablation.md, ablation.png, ablation.plotly.json")
    return 0


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate

    res = evaluate(args.dataset, args.methods, args.out_dir, backbone=args.backbone, size=args.size,
                   frames=args.frames, seed=args.seed, strength=args.strength, steps=args.steps,
                   clip_model=args.clip_model)
    if res is not None:
        print(res["table"])
        print(f"wrote {args.out_dir}/table.md and table.csv")
    return 0


def cmd_import(args) -> int:
    from .bundle import import_results

    results = {}
    for spec in args.result:
        name, sep, path = spec.partition("=")
        if not sep or not name.strip() or not path.strip():
            from v2v_core.errors import V2VError

            raise V2VError(f"--result takes NAME=EDITED.mp4; got '{spec}'.")
        results[name.strip()] = path.strip()
    rep = import_results(results, args.out_dir, source=args.source, prompt=args.prompt, size=args.size,
                         frames=args.frames, source_group=args.source_group, flow=args.flow, clip_model=args.clip_model)
    from .bundle import imported_table

    print(imported_table(rep))
    print(f"\nwrote the bundle {args.out_dir}/ (report.json, one mp4 per result{', input.mp4' if rep['input'] else ''})")
    return 0


def cmd_evaluate_results(args) -> int:
    from .results_list import evaluate_results

    res = evaluate_results(args.list, args.root, args.out_dir, size=args.size, frames=args.frames, flow=args.flow,
                           clip_model=args.clip_model)
    print(res["table"])
    print(f"\nwrote {args.out_dir}/results.csv, results.md, results.json")
    return 0


def cmd_study(args) -> int:
    from . import study

    if args.study_cmd == "create":
        study.create(args.results, args.out, attention_checks=args.attention_checks)
        conn = study.connect(args.out)
        try:
            print(f"wrote {args.out}: {study.describe(conn)}")
        finally:
            conn.close()
    elif args.study_cmd == "report":
        print(study.report(args.db, args.reference, args.png))
    else:
        n = study.export(args.db, args.csv)
        print(f"wrote {args.csv}: {n} votes")
        if args.design:
            study.export_design(args.db, args.design)
            print(f"wrote {args.design}")
    return 0


def _common(p, out_default=None):
    p.add_argument("--backbone", default="toy",
                   help="toy | sd15 | sd-turbo | sd15-random | a local diffusers folder (default: toy)")
    p.add_argument("--frames", type=argument(check_frames), default=None,
                   help="use only the first N frames, at least 2 (default: the whole clip)")
    p.add_argument("--size", type=argument(check_size), default=256,
                   help="frame size in px, a multiple of 64 up to V2V_MAX_SIZE (default: 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of every stream's noise and random choices (default: 0)")
    p.add_argument("--strength", type=float, default=0.4, help="how far outputs move from the input, 0.05-0.95 "
                                                               "(default: 0.4)")
    p.add_argument("--steps", type=int, default=2, help="LCM denoising steps per frame (default: 2)")


def main(argv=None) -> int:
    from .registry import ABLATION_GRIDS as GRIDS

    ap = argparse.ArgumentParser(prog="python -m comparisons", description="V2V Studio comparisons")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list the registered methods").set_defaults(fn=cmd_list)
    p = sub.add_parser("run", help="run methods side by side on one clip")
    p.add_argument("input", help="the input clip (any container ffmpeg reads)")
    p.add_argument("--prompt", required=True, type=argument(check_prompt), help="what the output should be, e.g. \"a pencil sketch\"")
    p.add_argument("--methods", default="StreamDiffusion,StreamV2V",
                   help='comma-separated names (see `list`), "all-online" or "all" (default: StreamDiffusion,StreamV2V)')
    p.add_argument("--out-dir", required=True, help="the results bundle folder to write")
    p.add_argument("--runtime", choices=RUNTIMES, default="torch",
                   help=RUNTIME_HELP.replace("%", "%%") + " (default: torch)")   # argparse %-formats help
    _common(p)
    p.add_argument("--clip-model", default=None, help="CLIP hub id or local folder for CLIP metrics (default: none)")
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("method-effect", help="every method beside the per-frame baseline, per clip and style")
    p.add_argument("inputs", nargs="+", help="the input clips")
    p.add_argument("--styles", default="invented",
                   help="invented (the styles that invent content from noise), all, or style names (default: invented)")
    p.add_argument("--methods", default="all", help='comma-separated names (see `list`), "all-online" or "all" '
                                                    "(default: all; the per-frame baseline must be among them)")
    p.add_argument("--out-dir", required=True, help="where the table and one results bundle per clip and style go")
    _common(p)
    p.set_defaults(fn=cmd_method_effect)
    p = sub.add_parser("ablate", help="ablation grid on one clip (table + bar chart)")
    p.add_argument("input", help="the input clip")
    p.add_argument("--prompt", required=True, type=argument(check_prompt), help="what the output should be")
    p.add_argument("--grid", default="streamv2v", choices=list(GRIDS),
                   help="streamv2v: EA x FF x bank with the code's FF defaults; streamv2v-paper: with the paper's; "
                        "svdiff: memory sizes (default: streamv2v)")
    p.add_argument("--out-dir", required=True, help="where the grid's bundle, table and charts go")
    _common(p)
    p.set_defaults(fn=cmd_ablate)
    p = sub.add_parser("evaluate", help="batch evaluation over a JSONL dataset (resumable, torchrun-shardable)")
    p.add_argument("dataset", help='JSON lines {"video": ..., "prompt": ..., "strength"?, "steps"?, "frames"?}')
    p.add_argument("--methods", default="StreamDiffusion,StreamV2V",
                   help="comma-separated registered names (default: StreamDiffusion,StreamV2V)")
    p.add_argument("--out-dir", required=True, help="where per-job results and the tables go (a re-run resumes)")
    p.add_argument("--clip-model", default=None, help="CLIP hub id or local folder for CLIP metrics (default: none)")
    _common(p)
    p.set_defaults(fn=cmd_evaluate)
    p = sub.add_parser("import", help="make a results bundle from outside videos (nothing regenerated)")
    p.add_argument("--source", default=None, help="the source clip the results were made from (optional: without "
                                                  "it, source-flow metrics are null and say why)")
    p.add_argument("--prompt", default=None, help="the prompt the results were made with (default: none)")
    p.add_argument("--result", action="append", required=True, metavar="NAME=EDITED.mp4",
                   help="one edited video and the name to show it under (repeat for each)")
    p.add_argument("--out-dir", required=True, help="the bundle folder to write")
    p.add_argument("--source-group", default=None, help="groups results for studies when there is no source "
                                                        "(default: the source's name, else the folder's)")
    p.add_argument("--size", type=int, default=None, help="fit the source to SIZE px first (default: native size)")
    p.add_argument("--frames", type=int, default=None, help="use only the first N frames (default: all)")
    p.add_argument("--flow", default="dis", choices=["dis", "raft"], help="optical flow estimator (default: dis)")
    p.add_argument("--clip-model", default=None, help="CLIP hub id or local folder for CLIP metrics (default: none)")
    p.set_defaults(fn=cmd_import)
    p = sub.add_parser("evaluate-results", help="metrics of a published file list (StreamV2V eval.json or "
                                                "StreamDiffusionV2 evaluation.json), resumable")
    p.add_argument("list", help="the JSON list of (source, output, prompt) entries")
    p.add_argument("--root", required=True, help="the folder the list's file names are relative to")
    p.add_argument("--out-dir", required=True, help="where results.csv / .md / .json go (a re-run resumes)")
    p.add_argument("--size", type=int, default=None, help="fit sources to SIZE px (default: the entry's height/width, "
                                                          "else native)")
    p.add_argument("--frames", type=int, default=None, help="use only the first N frames (default: all)")
    p.add_argument("--flow", default="dis", choices=["dis", "raft"], help="optical flow estimator (default: dis)")
    p.add_argument("--clip-model", default=None, help="CLIP hub id or local folder for CLIP metrics (default: none)")
    p.set_defaults(fn=cmd_evaluate_results)
    p = sub.add_parser("study", help="user-study store: create / report / export")
    ssub = p.add_subparsers(dest="study_cmd", required=True)
    q = ssub.add_parser("create", help="blind pairs from results bundles (folders or zips)")
    q.add_argument("--results", nargs="+", required=True, help="bundles written by run, import or the Compare tab")
    q.add_argument("--out", required=True, help="the study database (SQLite) to write")
    q.add_argument("--attention-checks", type=int, default=0, help="extra pairs showing one video on both sides; "
                                                                   "the report flags who picked a side (default: 0)")
    q = ssub.add_parser("report", help="win rates vs a reference + Bradley-Terry ranking")
    q.add_argument("db", help="the study database")
    q.add_argument("--reference", default="StreamDiffusion", help="the method others are compared with "
                                                                  "(default: StreamDiffusion)")
    q.add_argument("--png", default=None, help="also draw the win-rate chart here (default: none)")
    q = ssub.add_parser("export", help="all votes as CSV, and the study design as JSON")
    q.add_argument("db", help="the study database")
    q.add_argument("--csv", required=True, help="the CSV of raw votes to write")
    q.add_argument("--design", default=None, help="also write the study design (pairs, order rule, criteria) as JSON")
    p.set_defaults(fn=cmd_study)
    return run_cli(ap, argv)


if __name__ == "__main__":
    from v2v_core.threads import apply

    apply()      # the process's thread policy (v2v_core.threads), before torch loads
    sys.exit(main())
