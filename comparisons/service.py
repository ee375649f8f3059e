"""What the web UI calls: plain functions and one session class, no gradio. The UI only turns their
results into widgets; the tests call the same functions.

- compare(...)           side-by-side run + plots + a zip of everything
- metrics(...)           metrics of an edited clip against its source
- LiveSession            per-browser-session webcam stream (its own Stream, never shared)
- correspondence_run / correspondence_view   the "looking backward" figure for a clicked point
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from v2v_core.errors import V2VError

from .registry import ABLATION_GRIDS, REGISTRY, resolve  # noqa: F401  (the UI lists the grids from here)


def get_backbone(name: str):
    from .runner import get_backbone as load  # torch and the model load on first use, not at import

    return load(name)

BACKBONE = os.environ.get("V2V_BACKBONE", "toy")
MAX_FRAMES = int(os.environ.get("V2V_MAX_FRAMES", "120"))
MAX_SIZE = int(os.environ.get("V2V_MAX_SIZE", "512"))


def suggested_prompts() -> list[str] | None:
    """The prompts the configured backbone understands (the toy's styles), for the UI's prompt boxes;
    None for an open-vocabulary backbone. Needs no model."""
    if BACKBONE != "toy":
        return None
    from v2v_core.toy.styles import STYLES

    return [s.prompts[0] for s in STYLES]


def prompt_warning(prompt: str) -> str | None:
    """The same warning the loaded backbone gives, without loading it (toy only)."""
    if BACKBONE != "toy" or not prompt or not prompt.strip():
        return None
    from v2v_core.toy.styles import unknown_prompt_warning

    return unknown_prompt_warning(prompt)


def _work_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def check_request(video, prompt, methods, size, frames):
    """The user's mistakes, as one clear message each."""
    if not video:
        raise V2VError("Upload a clip or pick an example first.")
    if prompt is not None and not str(prompt).strip():
        raise V2VError("The prompt is empty: describe the output, e.g. \"a pencil sketch\".")
    if methods is not None and not methods:
        raise V2VError("Tick at least one method.")
    if int(size) % 64 or not 64 <= int(size) <= MAX_SIZE:
        raise V2VError(f"Size must be a multiple of 64 between 64 and {MAX_SIZE}.")
    if not 2 <= int(frames) <= MAX_FRAMES:
        raise V2VError(f"Frames must be between 2 and {MAX_FRAMES} here.")


def compare(video, prompt: str, methods: list[str], size: int = 256, frames: int = 24, seed: int = 0,
            strength: float = 0.4, steps: int = 2, overrides: dict[str, dict] | None = None, progress=None,
            backbone: str | None = None) -> dict:
    """Run methods side by side. overrides: preset name -> {field: value}. Returns the report plus
    `videos` (name -> path), `mosaic`, `zip` and `table` (rows)."""
    for kind, _, value in compare_iter(video, prompt, methods, size, frames, seed, strength, steps, overrides,
                                       progress, backbone):
        if kind == "report":
            return value
    raise RuntimeError("the comparison ended without a report")


def compare_iter(video, prompt: str, methods: list[str], size: int = 256, frames: int = 24, seed: int = 0,
                 strength: float = 0.4, steps: int = 2, overrides: dict[str, dict] | None = None, progress=None,
                 backbone: str | None = None):
    """compare() as a generator: ("result", name, entry) as each method finishes (so a UI can show it at
    once), then ("report", None, report) with `videos`, `zip` and `table` added."""
    check_request(video, prompt, methods, size, frames)
    configs = {n: REGISTRY[n].with_overrides(**o) for n, o in (overrides or {}).items() if o and n in methods}
    out = _work_dir("v2v-compare-")
    from .runner import iter_comparison

    for kind, name, value in iter_comparison(video, prompt, list(methods), out,
                                             backbone=get_backbone(backbone or BACKBONE), size=int(size),
                                             frames=int(frames), seed=int(seed), strength=float(strength),
                                             steps=int(steps), configs=configs, progress=progress):
        if kind == "result":
            yield kind, name, value
            continue
        yield "report", None, _presented(value, out)


def _presented(rep: dict, folder: Path) -> dict:
    """A report as the Compare tab shows it: `videos`, `zip` (the bundle zipped) and `table` added."""
    from .bundle import zip_bundle

    rep["videos"] = {n: m["video"] for n, m in rep["methods"].items()}
    rep["zip"] = str(zip_bundle(folder, folder / "results.zip"))
    rep["table"] = summary_rows(rep)
    return rep


def replay(bundle=None, source=None, edits: list | None = None, prompt: str | None = None) -> dict:
    """Results made elsewhere, shown like a fresh run, with no backbone loaded: a bundle (zip or folder, e.g.
    the zip this tab offers), or a source clip (optional) plus named edited videos [(name, path), ...]."""
    from .bundle import import_results, load_bundle

    if bundle:
        out = _work_dir("v2v-replay-")
        rep = load_bundle(bundle, extract_to=out)
        return _presented(rep, Path(rep["bundle_dir"]))
    if not edits:
        raise V2VError("Load a results zip, or give at least one edited video (a source clip is optional).")
    out = _work_dir("v2v-import-")
    names = [n for n, _ in edits]
    if len(set(names)) < len(names):
        raise V2VError("Two edited videos have the same name; name each one differently.")
    rep = import_results(dict(edits), out, source=source or None, prompt=prompt or None, max_frames=MAX_FRAMES)
    return _presented(rep, out)


def _r(v, digits=2):
    return None if v is None else round(v, digits)


def summary_rows(rep: dict) -> list[list]:
    rows = []
    for n, m in rep["methods"].items():
        rows.append([n, _r(m.get("warp_error")), _r(m.get("warp_error_paper_compatible")), _r(m.get("warp_error_self_flow")),
                     _r(m.get("style_mae")), _r(m.get("fps")), _r(m.get("seconds"), 1),
                     round((m["bank_bytes"][-1] if m.get("bank_bytes") else 0) / 2 ** 20, 2)])
    return rows


SUMMARY_HEADERS = ["method", "warp error ↓", "warp error (paper-compatible) ↓", "self-flow warp error ↓",
                   "style MAE ↓ (toy prompts)", "fps", "seconds", "bank MiB"]


def warp_error_figure(rep: dict):
    """Per-frame warp error on the source's flow; when no result has a source, the self-flow figure,
    titled as such (the two are never drawn together)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    with_source = any(m.get("warp_error_series") for m in rep["methods"].values())
    key = "warp_error_series" if with_source else "warp_error_self_flow_series"
    for n, m in rep["methods"].items():
        if m.get(key):
            fig.add_trace(go.Scatter(y=m[key], mode="lines", name=n))
    flow = next(iter(rep["methods"].values())).get("flow", "?") if rep["methods"] else "?"
    what = f"flow: {flow} on the source" if with_source else f"flow: {flow} estimated on each edit itself (no source)"
    st = rep.get("settings") or {}
    first = next(iter(rep["methods"].values()), {}) if rep["methods"] else {}
    size = first.get("size") or ([st["size"]] * 2 if st.get("size") else None)
    n = first.get("frames") or st.get("frames") or (len(first.get(key) or []) + 1 if first.get(key) else None)
    at = (f"{n} frames" if n else "") + (f" at {size[0]}x{size[1]} px" if size else "")
    fig.update_layout(title=f"Warp error per frame pair{', ' + at if at else ''} ({what}; lower is steadier)",
                      xaxis_title="frame pair (i, i+1)", yaxis_title="warp error (0..255)", height=360)
    return fig


def bank_figure(rep: dict):
    import plotly.graph_objects as go

    fig = go.Figure()
    for n, m in rep["methods"].items():
        fig.add_trace(go.Scatter(y=[b / 2 ** 20 for b in m.get("bank_bytes") or []], mode="lines", name=n))
    recorded = any(m.get("bank_bytes") for m in rep["methods"].values())
    fig.update_layout(title="Temporal memory held per stream" + ("" if recorded else " (not recorded: no online method "
                                                                                  "of this studio ran)"),
                      xaxis_title="frame", yaxis_title="MiB", height=360)
    return fig


def metrics(source, edited, prompt: str | None = None) -> dict:
    from v2v_core.metrics import evaluate_clip
    from v2v_core.video import read_video

    if not source or not edited:
        raise V2VError("Give both the source clip and the edited clip.")
    src, _ = read_video(source, MAX_FRAMES * 4)
    ed, _ = read_video(edited, MAX_FRAMES * 4)
    return evaluate_clip(src, ed, prompt=prompt or None, clip_model=os.environ.get("V2V_CLIP_MODEL"))


def ablation(video, prompt: str, grid: str, size: int = 256, frames: int = 24, seed: int = 0) -> dict:
    from .ablation import run_ablation

    check_request(video, prompt, None, size, frames)
    out = _work_dir("v2v-ablate-")
    rep = run_ablation(video, prompt, grid, out, backbone=get_backbone(BACKBONE), size=int(size), frames=int(frames),
                       seed=int(seed))
    rep["png"] = str(out / "ablation.png")
    return rep


LIVE_TIMINGS = 300   # a live stream keeps its last 300 frames' timings (a minute at 5 fps): flat memory


class LiveSession:
    """One browser session's webcam stream: a Stream rebuilt when the method or a toggle changes."""

    def __init__(self, size: int = 256):
        self.size = size
        self.key = None
        self.stream = None
        self.frames = 0
        self.last = time.perf_counter()
        self.fps = 0.0

    def process(self, frame: np.ndarray, method: str, prompt: str, overrides: dict | None = None,
                strength: float = 0.4, steps: int = 2) -> tuple[np.ndarray, dict]:
        from v2v_core.engine import Stream, StreamSettings
        from v2v_core.video import fit_frame

        if frame is None:
            raise V2VError("No camera frame arrived.")
        preset = REGISTRY[method] if method in REGISTRY else resolve(method)[0]
        key = (preset.name, prompt, tuple(sorted((overrides or {}).items())), strength, steps)
        if key != self.key:                           # a switch: new state, same shared backbone
            cfg = preset.with_overrides(**overrides) if overrides and preset.fields() else None
            self.stream = Stream(get_backbone(BACKBONE), prompt or "a photo", StreamSettings(strength=strength, steps=steps),
                                 preset.build(cfg), keep_timings=LIVE_TIMINGS)
            self.key = key
        t0 = time.perf_counter()
        out = self.stream.push(fit_frame(np.ascontiguousarray(frame[..., :3]), self.size))
        latency = time.perf_counter() - t0
        now = time.perf_counter()
        self.fps = 0.8 * self.fps + 0.2 / max(now - self.last, 1e-6) if self.frames else 0.0
        self.last = now
        self.frames += 1
        return out[-1], {"fps": round(self.fps, 2), "latency_ms": round(1000 * latency, 1), "frames": self.frames,
                         "method": preset.name}


def correspondence_run(video, method: str = "StreamV2V", frame: int = 4, size: int = 256, prompt: str = "a photo") -> dict:
    """Run a method on frames 0..frame with the recorder on; returns the data a view needs."""
    from v2v_core.correspondence import CorrespondenceRecorder
    from v2v_core.engine import Stream, StreamSettings
    from v2v_core.video import read_video

    if not video:
        raise V2VError("Upload a clip or pick an example first.")
    frames, _ = read_video(video, int(frame) + 1, int(size))
    if len(frames) < 2:
        raise V2VError("The clip needs at least 2 frames.")
    rec = CorrespondenceRecorder(keep=5)
    preset = REGISTRY[method]
    core = preset.build(recorder_factory=lambda: rec)
    if not hasattr(core, "recorder_factory"):
        raise V2VError(f"{method} has no attention features to record; pick StreamDiffusion or a StreamV2V variant.")
    bb = get_backbone(BACKBONE)
    outputs = list(Stream(bb, prompt, StreamSettings(), core).run(frames))
    layers = rec.recorded_layers()
    default = bb.correspondence_layer if bb.correspondence_layer in layers else layers[-1]
    return {"recorder": rec, "frames": dict(enumerate(frames)), "outputs": outputs, "frame": len(frames) - 1,
            "layers": layers, "default_layer": default, "size": (frames[0].shape[0], frames[0].shape[1])}


def correspondence_view(run: dict, x: float, y: float, layer: str | None = None) -> tuple[np.ndarray, list[dict]]:
    from v2v_core.correspondence import render_view

    layer = layer or run["default_layer"]
    matches = run["recorder"].match(layer, run["frame"], x, y, run["size"])
    img = render_view(run["frames"], run["frame"], x, y, matches)
    return img, [dict(dataclasses.asdict(m), heat=None) for m in matches]
