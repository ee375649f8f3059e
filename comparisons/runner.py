"""Side-by-side runner: one clip, one prompt, one loaded backbone, the same settings and seed for
every selected method.

The clip is read once; then each method runs in turn (online ones in their own Stream, offline ones such
as TokenFlow on the whole clip) and its video and metrics are reported as soon as it finishes (on_result),
so a UI shows results as they come. Outputs equal each method's output run alone (tested).
Writes to out_dir a results bundle (comparisons.bundle, format_version 1): input.mp4 (the input as
processed), one mp4 per method, mosaic.mp4 (labelled tiles), report.json (file names inside the
folder) and report.md. The returned report has absolute paths.

report.json: {"settings": {...}, "input": ..., "mosaic": ...,
              "methods": {name: {"warp_error", "warp_error_paper_compatible", "style_mae", "fps", "seconds",
                                 "peak_memory_bytes", "bank_bytes": [per frame], "timings_ms", "clip_*",
                                 "video", ...}}}
"""
from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from v2v_core.engine import Stream, StreamSettings, fps_after_warmup, mean_timings
from v2v_core.errors import Cancelled, V2VError
from v2v_core.metrics import evaluate_clip, laplacian_energy, peak_memory_bytes
from v2v_core.openvino_runtime import setup_reports
from v2v_core.toy.styles import style_mae, style_targets
from v2v_core.video import VideoWriter, iter_frames, probe

from .bundle import FORMAT_VERSION, mosaic_frame, self_flow_warp_error, write_report
from .registry import MethodPreset, resolve

_BACKBONES: dict[tuple, object] = {}
_LOADING = threading.Lock()


def get_backbone(name: str = "toy", device=None, dtype=None):
    """Load a backbone once per process and share it (streams keep their own state). Without a device or dtype, the
    one already loaded under that name is it, wherever it was put (e.g. on 'cuda' at a ZeroGPU Space's start)."""
    from v2v_core.backbones import load_backbone

    with _LOADING:          # two sessions picking the same backbone at once load it once
        if device is None and dtype is None:
            for (n, _, _), bb in _BACKBONES.items():
                if n == name:
                    return bb
        key = (name, str(device), str(dtype))
        if key not in _BACKBONES:
            _BACKBONES[key] = load_backbone(name, device=device, dtype=dtype)
        return _BACKBONES[key]


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def run_comparison(input_path: str | Path, prompt: str, methods: str | list, out_dir: str | Path, backbone="toy",
                   frames: int | None = None, size: int = 256, seed: int = 0, strength: float = 0.4, steps: int = 2,
                   configs: dict[str, object] | None = None, clip_model: str | None = None,
                   progress: Callable[[str, int, int | None, str], None] | None = None, keep_frames: bool = False,
                   on_result: Callable[[str, dict], None] | None = None, cancel=None, runtime: str = "torch") -> dict:
    """Run the selected presets side by side; returns the report (also written to out_dir).

    configs: preset name -> replacement config (UI overrides). progress(method, done, total, stage), in
    frames (total None while a stage has no count). on_result(name, entry) is called as soon as each
    method's video and metrics are ready. cancel: a threading.Event; once set, the run raises
    v2v_core.errors.Cancelled before the next frame."""
    for kind, name, value in iter_comparison(input_path, prompt, methods, out_dir, backbone, frames, size, seed,
                                             strength, steps, configs, clip_model, progress, keep_frames, cancel,
                                             runtime):
        if kind == "result" and on_result is not None:
            on_result(name, value)
    return value


def pick_runtime(bb, presets, runtime: str = "torch"):
    """(backbone to run on, runtime used, why) for a run: ONE runtime for every method of the run, so that speeds
    compare. "openvino" and the bfloat16 runtimes refuse a run they cannot serve; "auto" (f32 OpenVINO, never bfloat16) falls
    back to PyTorch for the whole run, saying why."""
    from v2v_core.openvino_runtime import RUNTIMES, bf16_missing, needs_bf16, openvino_backbone, unsupported_reason

    if runtime not in RUNTIMES:
        raise V2VError(f"Unknown runtime '{runtime}': choose one of {', '.join(RUNTIMES)}.")
    if runtime == "torch":
        return bb, "torch", None
    reason = unsupported_reason([p.core_method for p in presets], bb.device)
    if reason is None and needs_bf16(runtime):
        reason = bf16_missing()
    if reason is None:
        used = "openvino" if runtime == "auto" else runtime
        return openvino_backbone(bb, used), used, None
    if runtime != "auto":
        raise V2VError(f"This run cannot use OpenVINO: {reason}. Use runtime torch or auto.")
    return bb, "torch", f"auto chose PyTorch: {reason}"


def iter_comparison(input_path, prompt, methods, out_dir, backbone="toy", frames=None, size=256, seed=0, strength=0.4,
                    steps=2, configs=None, clip_model=None, progress=None, keep_frames=False, cancel=None,
                    runtime: str = "torch"):
    """run_comparison as a generator, for UIs that show results as they come: yields
    ("result", name, entry) as each method finishes, then ("report", None, report) at the end.
    runtime: torch | openvino | auto (pick_runtime), one for every method."""
    presets: list[MethodPreset] = resolve(methods) if not isinstance(methods, list) or isinstance(methods[0], str) \
        else methods
    if not prompt or not prompt.strip():
        raise V2VError("The prompt is empty: describe the output, e.g. \"a pencil sketch\".")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = probe(input_path)
    bb = get_backbone(backbone) if isinstance(backbone, str) else backbone
    bb, runtime_used, runtime_note = pick_runtime(bb, presets, runtime)
    settings = StreamSettings(strength=strength, steps=steps, seed=seed)
    configs = configs or {}
    total = min(frames, info.frames) if (frames and info.frames) else (frames or info.frames)
    built = {p.name: p.build(configs.get(p.name)) for p in presets}    # bad settings fail before any work
    for p in presets:
        if not p.online:                                               # offline: refuse before reading
            built[p.name].check_memory(bb, total or 1, size, size)
    source = list(iter_frames(input_path, frames, size, info=info))
    if len(source) < 2:
        raise V2VError(f"The input clip {Path(input_path).name} has {len(source)} frame(s); temporal consistency needs "
                       "at least 2. Give a longer clip (or more frames).")
    with VideoWriter(out_dir / "input.mp4", info.fps) as w:
        for f in source:
            w.write(f)

    report = {"settings": {"input": str(input_path), "prompt": prompt, "backbone": bb.name, "size": size,
                           "frames": len(source), "seed": seed, "strength": strength, "steps": steps,
                           "device": str(bb.device), "runtime": runtime_used, "runtime_note": runtime_note,
                           "backbone_makes_edits": bb.makes_edits,
                           "prompt_warning": bb.prompt_warning(prompt) if hasattr(bb, "prompt_warning") else None},
              "input": str(out_dir / "input.mp4"), "mosaic": str(out_dir / "mosaic.mp4"), "methods": {}}
    outputs: dict[str, list[np.ndarray]] = {}
    n = len(source)
    targets = style_targets(source, prompt)        # filtered once, scored against every method's output
    report_progress = progress or (lambda *a: None)
    for p in presets:
        report_progress(p.name, 0, n, "waiting")

    def check_cancel(method, done):
        if cancel is not None and cancel.is_set():
            raise Cancelled(method, done)

    for k, p in enumerate(presets):
        t0, setup0 = time.perf_counter(), bb.runtime_setup_seconds()
        at = {"done": 0, "total": n}     # where the method's bar stands: a graph's one-off setup is reported there

        def on_setup(part, converting, name=p.name):
            report_progress(name, at["done"], at["total"], f"converting OpenVINO graph {part} (a first start: kept on disk "
                            "after)" if converting else f"compiling OpenVINO graph {part} (read from the disk cache)")

        with setup_reports(on_setup):
            if p.online:
                s = Stream(bb, prompt, settings, built[p.name])
                outs: list[np.ndarray] = []
                for i, frame in enumerate(source):
                    check_cancel(p.name, i)
                    outs += s.push(frame)
                    at["done"] = i + 1
                    report_progress(p.name, i + 1, n, "generating")
                outs += s.flush()
                timings = s.timings
            else:
                def on_event(e, name=p.name):
                    # counted in frames: the clip's encoding and decoding, and each denoising step over the clip
                    if e["stage"] in ("encode", "decode"):
                        done, total, stage = e["done"], n, {"encode": "encoding", "decode": "decoding"}[e["stage"]]
                    else:
                        done = (e["step"] - 1) * n + (e["done"] if e["stage"] == "propagate" else 0)
                        total, stage = steps * n, f"denoising step {e['step']}/{steps}: {e['stage']}"
                    check_cancel(name, done)
                    at.update(done=done, total=total)
                    report_progress(name, done, total, stage)

                outs = built[p.name].run(bb, source, prompt, settings, on_event)
                timings = None
        seconds = time.perf_counter() - t0
        setup = bb.runtime_setup_seconds() - setup0        # the runtime's one-off conversion and compilation: not speed
        outputs[p.name] = outs
        with VideoWriter(out_dir / f"{slug(p.name)}.mp4", info.fps) as w:
            for o in outs:
                w.write(o)
        report_progress(p.name, n, None, "measuring (warp error, style)")
        m = evaluate_clip(source, outs, prompt=prompt, clip_model=clip_model)
        mem = peak_memory_bytes()
        entry = {
            "warp_error": m["warp_error"], "warp_error_paper_compatible": m["warp_error_paper_compatible"],
            "flow": m["flow"], "clip_consistency": m["clip_consistency"], "clip_text": m["clip_text"],
            "clip_unavailable_reason": m["clip_unavailable_reason"],
            "warp_error_series": m["warp_error_series"],
            # the flow of the edit itself, as imported results (which may have no source) always get it: the summary
            # table's column is filled for every result, fresh or imported
            "warp_error_self_flow": self_flow_warp_error(outs)[0],
            "style_mae": style_mae(source, outs, prompt, targets),
            "laplacian": laplacian_energy(outs),
            "fps": fps_after_warmup(timings) if timings else n / max(seconds - setup, 1e-9), "seconds": seconds,
            "runtime_setup_seconds": setup,
            "online": p.online,
            "timings_ms": {k2: 1000 * v for k2, v in mean_timings(timings).items()} if timings
            else {"total": 1000 * seconds / max(n, 1)},
            "peak_memory_bytes": mem.get("peak_cuda_bytes", mem["peak_rss_bytes"]),
            "peak_memory_scope": "process so far (methods run one after another in one process)",
            "bank_bytes": [t.get("bank_bytes", 0) for t in timings] if timings else [],
            "bank_tokens": [t.get("bank_tokens", 0) for t in timings] if timings else [],
            "video": str(out_dir / f"{slug(p.name)}.mp4"), "description": p.description, "paper": p.paper,
            "config": p.fields(),
        }
        report["methods"][p.name] = entry
        report_progress(p.name, n, n, f"done in {seconds:.1f} s")
        yield "result", p.name, entry

    names = ["input"] + [p.name for p in presets]
    with VideoWriter(out_dir / "mosaic.mp4", info.fps) as w:
        for i in range(n):
            w.write(mosaic_frame([source[i]] + [outputs[nm][i] for nm in names[1:]], names))
    report["relative_to_baseline"] = relative_to_baseline(report["methods"])
    report["format_version"] = FORMAT_VERSION
    write_report(report, out_dir, markdown_table(report))      # a results bundle (comparisons.bundle)
    if keep_frames:
        report["_frames"] = {"input": source, **outputs}
    yield "report", None, report


BASELINE = "StreamDiffusion"
RELATIVE_KEYS = ("warp_error", "warp_error_paper_compatible", "style_mae", "laplacian")


def relative_to_baseline(methods: dict, baseline: str = BASELINE) -> dict | None:
    """Each method's figures over the per-frame baseline's on the same frames (warp errors, style MAE: below 1 is
    better; laplacian, the fine detail: well below 1 means a steadier output won by blurring); None when the run
    has no baseline. A figure the method lacks (style MAE outside the toy's styles) is None."""
    if baseline not in methods:
        return None
    base = methods[baseline]

    def ratio(m, k):
        return round(m[k] / base[k], 3) if m.get(k) is not None and base.get(k) else None

    return {"baseline": baseline, "methods": {n: {k: ratio(m, k) for k in RELATIVE_KEYS} for n, m in methods.items()}}


def _x(v) -> str:
    return "n/a" if v is None else f"{v:.2f}x"


def markdown_table(report: dict) -> str:
    s = report["settings"]
    lines = [f"Input `{Path(s['input']).name}`, prompt \"{s['prompt']}\", backbone `{s['backbone']}`, "
             f"{s['frames']} frames at {s['size']} px, seed {s['seed']}, strength {s['strength']}, {s['steps']} steps, "
             f"runtime {s.get('runtime', 'torch')}" + (f" ({s['runtime_note']})" if s.get("runtime_note") else "") + ".",
             "", "| method | warp error ↓ | warp error (paper-compatible) ↓ | style MAE ↓ | CLIP consistency | fps | s total | "
             "bank MiB (last frame) | warp / baseline | detail / baseline |", "|---|---|---|---|---|---|---|---|---|---|"]
    rel = (report.get("relative_to_baseline") or {}).get("methods", {})
    for name, m in report["methods"].items():
        clip = f"{m['clip_consistency']:.2f}" if m["clip_consistency"] is not None else "n/a"
        bank = (m["bank_bytes"][-1] if m["bank_bytes"] else 0) / 2 ** 20
        style = f"{m['style_mae']:.2f}" if m.get("style_mae") is not None else "n/a"
        lines.append(f"| {name} | {m['warp_error']:.2f} | {m['warp_error_paper_compatible']:.2f} | {style} | {clip} | "
                     f"{m['fps']:.2f} | {m['seconds']:.1f} | {bank:.2f} | {_x(rel.get(name, {}).get('warp_error'))} | "
                     f"{_x(rel.get(name, {}).get('laplacian'))} |")
    flow = next(iter(report["methods"].values()))["flow"] if report["methods"] else "?"
    lines.append("")
    lines.append(f"Warp error: flow `{flow}` on the source; the paper-compatible column reproduces the reference "
                 "script's uint8 wrap-around (see README). Style MAE: mean absolute error (0-255) to the toy "
                 "prompt's filter target (n/a for other prompts): what steadiness costs in fidelity. The last two "
                 f"columns divide by {BASELINE}'s figures on the same frames (n/a without it): warp error (below 1: "
                 "steadier) and detail, the mean absolute Laplacian (well below 1: steadier by blurring).")
    return "\n".join(lines)
