"""What the web UI calls: plain functions and one session class, no gradio. The UI only turns their
results into widgets; the tests call the same functions.

- compare(...)           side-by-side run + plots + a zip of everything
- metrics(...)           metrics of an edited clip against its source
- LiveSession            per-browser-session webcam stream (its own Stream, never shared)
- correspondence_run / correspondence_view   the "looking backward" figure for a clicked point
"""
from __future__ import annotations

import os
import functools
from collections import deque
import queue
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from v2v_core.errors import Cancelled, V2VError, check_prompt
from v2v_core.video import MAX_SIZE, check_size  # noqa: F401  (MAX_SIZE: the UI's size slider reads it here)

from . import catalog
from .presentation import (  # noqa: F401  (the UI reads them here)
    summary_rows, SUMMARY_HEADERS, SUMMARY_LEGEND, measured_at,
    placeholder_figure, warp_error_figure, bank_figure)
from .registry import ABLATION_GRIDS, REGISTRY, resolve  # noqa: F401  (the UI lists the grids from here)


BACKBONE = os.environ.get("V2V_BACKBONE", "toy")     # the backbone a new page starts on (the picker changes it)
MAX_FRAMES = int(os.environ.get("V2V_MAX_FRAMES", "120"))
ZERO_GPU = catalog.on_zerogpu()
LOADED_AT_START: set[str] | None = set() if ZERO_GPU else None     # on ZeroGPU: the only backbones there will be


def get_backbone(name: str | None = None):
    """The backbone `name` (default: the configured one), loaded once per process and shared by every session (streams
    keep their own state). On ZeroGPU only those loaded at start exist: a load inside a GPU call is refused."""
    from .runner import get_backbone as load  # torch and the model load on first use, not at import

    name = name or BACKBONE
    if LOADED_AT_START is not None and name not in LOADED_AT_START:
        raise V2VError(f"The backbone '{name}' was not loaded when this Space started (on ZeroGPU every model loads "
                       "before any GPU call). Pick one the backbone list offers.")
    return load(name)


def load_at_start() -> dict[str, str]:
    """ZeroGPU's documented pattern: every backbone the picker offers (V2V_BACKBONE and V2V_BACKBONES) loads now, at
    import, and goes to 'cuda' at module level (ZeroGPU defers the move until a GPU is attached); nothing loads inside a
    decorated call. Returns the ones that could not load, with the reason (the picker lists them so)."""
    from .runner import get_backbone as load

    failed = {}
    for key in catalog.listed():        # the built-ins the operator did not list are not loaded (nor offered)
        try:
            load(key, device="cuda")
            LOADED_AT_START.add(key)
        except V2VError as err:
            failed[key] = str(err)
    return failed


def backbone_choices() -> list[tuple[str, str]]:
    """(label, key) of every backbone the picker lists, before anything is checked (cheap: for building the page)."""
    return [(e.label, e.key) for e in catalog.entries()]


def backbone_status() -> list[dict]:
    """The picker's rows: key, label, about, and `unavailable` (None, or why it cannot run here). Loads no model."""
    return [{"key": e.key, "label": e.label, "about": e.about,
             "unavailable": catalog.unavailable_reason(e, LOADED_AT_START)} for e in catalog.entries()]


def check_backbone(name: str) -> None:
    """A backbone a run may use here, or a V2VError saying why not (before anything loads)."""
    reason = catalog.unavailable_reason(catalog.entry(name), LOADED_AT_START)
    if reason:
        raise V2VError(f"The backbone '{catalog.entry(name).label}' cannot run here: {reason}. Pick another one.")


def _gpu_methods(methods, grid):
    from .ablation import grid_presets

    return grid_presets(grid) if grid else list(methods or [])


def gpu_seconds(methods=None, frames: int = 24, size: int = 256, steps: int = 2, grid: str | None = None) -> int:
    """The seconds a ZeroGPU call for this run requests (comparisons.zerogpu: frames x methods x size, TokenFlow's
    passes; an ablation `grid`'s settings in place of methods)."""
    from .zerogpu import duration

    return duration(_gpu_methods(methods, grid), frames, size, steps)


def check_gpu_budget(methods=None, frames: int = 24, size: int = 256, steps: int = 2, grid: str | None = None) -> None:
    """On ZeroGPU, refuse before the run a request that one GPU call cannot hold (V2VError saying what to lower)."""
    from .zerogpu import check_fits

    if ZERO_GPU:
        check_fits(_gpu_methods(methods, grid), frames, size, steps)


def ready_backbone(backbone=None):
    """The loaded backbone for a run: a name (default: the configured one) is checked (check_backbone) and loaded once
    per process; an already loaded Backbone (tests, tools) is used as it is."""
    if backbone is not None and not isinstance(backbone, str):
        return backbone
    check_backbone(backbone or BACKBONE)
    return get_backbone(backbone)


def prompt_help(backbone: str | None = None) -> tuple[list[str], str]:
    """(prompts to offer, help line) for the prompt boxes under `backbone`: the toy's styles; examples for an
    open-vocabulary model. Needs no model."""
    return catalog.prompt_help(backbone or BACKBONE)


def prompt_warning(prompt: str, backbone: str | None = None) -> str | None:
    """The same warning the loaded backbone gives, without loading it: for the toy, an unknown prompt or a style the
    shipped weights draw faintly (their evaluation summary); for random weights, that the output is noise."""
    backbone = backbone or BACKBONE
    if backbone == "sd15-random":
        return "Random weights (sd15-random): the output is noise, never an edit; use it for speed and memory."
    if backbone != "toy" or not prompt or not prompt.strip():
        return None
    from v2v_core.toy.styles import shipped_model_prompt_warning

    return shipped_model_prompt_warning(prompt)


WORK_TTL_S = 24 * 3600     # a run's folder (its videos, zip and plots) is removed this long after it was made


def work_root() -> Path:
    """Where every run of the UI writes its folder: V2V_WORK_DIR, default <temp>/v2v-studio."""
    return Path(os.environ.get("V2V_WORK_DIR") or Path(tempfile.gettempdir()) / "v2v-studio")


def _work_dir(prefix: str) -> Path:
    """A new folder for one run under work_root(); folders older than WORK_TTL_S are removed first, so a Space or a
    local UI that runs for weeks does not fill its disk (gradio's own cache is cleaned by the app's delete_cache)."""
    root = work_root()
    root.mkdir(parents=True, exist_ok=True)
    old = time.time() - WORK_TTL_S
    for d in root.iterdir():
        try:
            if d.is_dir() and d.stat().st_mtime < old:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:           # another worker removed it first
            pass
    return Path(tempfile.mkdtemp(prefix=prefix, dir=root))


def check_request(video, prompt, methods, size, frames):
    """The user's mistakes, as one clear message each."""
    if not video:
        raise V2VError("Upload a clip or pick an example first.")
    if prompt is not None:
        check_prompt(prompt)
    if methods is not None and not methods:
        raise V2VError("Tick at least one method.")
    check_size(size)
    if not 2 <= int(frames) <= MAX_FRAMES:
        raise V2VError(f"Frames must be between 2 and {MAX_FRAMES} here.")


def compare(video, prompt: str, methods: list[str], size: int = 256, frames: int = 24, seed: int = 0,
            strength: float = 0.4, steps: int = 2, overrides: dict[str, dict] | None = None, progress=None,
            backbone: str | None = None, runtime: str = "torch") -> dict:
    """Run methods side by side. overrides: preset name -> {field: value}. Returns the report plus
    `videos` (name -> path), `mosaic`, `zip` and `table` (rows)."""
    for kind, _, value in compare_iter(video, prompt, methods, size, frames, seed, strength, steps, overrides,
                                       progress, backbone, runtime=runtime):
        if kind == "report":
            return value
    raise RuntimeError("the comparison ended without a report")


def compare_iter(video, prompt: str, methods: list[str], size: int = 256, frames: int = 24, seed: int = 0,
                 strength: float = 0.4, steps: int = 2, overrides: dict[str, dict] | None = None, progress=None,
                 backbone: str | None = None, cancel=None, runtime: str = "torch"):
    """compare() as a generator: ("result", name, entry) as each method finishes (so a UI can show it at
    once), then ("report", None, report) with `videos`, `zip` and `table` added. progress(method, done,
    total, stage); cancel: a threading.Event that stops the run before its next frame (Cancelled)."""
    check_request(video, prompt, methods, size, frames)
    bb = ready_backbone(backbone)
    configs = {n: REGISTRY[n].with_overrides(**o) for n, o in (overrides or {}).items() if o and n in methods}
    out = _work_dir("v2v-compare-")
    from .runner import iter_comparison

    for kind, name, value in iter_comparison(video, prompt, list(methods), out,
                                             backbone=bb, size=int(size),
                                             frames=int(frames), seed=int(seed), strength=float(strength),
                                             steps=int(steps), configs=configs, progress=progress,
                                             cancel=cancel, runtime=runtime):
        if kind == "result":
            yield kind, name, value
            continue
        yield "report", None, _presented(value, out)


class Job:
    """A run (comparison, ablation) in its own thread, so that the UI can show each method's progress while
    it runs and stop it within one frame. work(progress, cancel) is a generator of (kind, name, value)
    events, e.g. compare_iter; `events()` passes them on, with ("progress", None, board) snapshots between,
    and ends with ("end", ...), ("stopped", method, frames) or ("error", None, message)."""

    def __init__(self, work):
        self.cancel = threading.Event()
        self.board: dict[str, dict] = {}          # method -> {"done", "total", "stage"}, in frames
        self.finished: list[str] = []
        self._events: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, args=(work,), daemon=True)
        self.thread.start()

    def _progress(self, method, done, total, stage):
        self.board[method] = {"done": done, "total": total, "stage": stage}

    def _run(self, work):
        try:
            for kind, name, value in work(self._progress, self.cancel):
                if kind == "result":
                    self.finished.append(name)
                self._events.put((kind, name, value))
            self._events.put(("end", None, None))
        except Cancelled as c:
            self._mark_stopped(c.method, c.frames)
            self._events.put(("stopped", c.method, c.frames))
        except V2VError as e:
            self._events.put(("error", None, str(e)))
        except BaseException as e:  # a bug: re-raised in the caller's thread, with its traceback
            self._events.put(("crash", None, e))

    def _mark_stopped(self, method: str | None, frames: int) -> None:
        """The board after a stop: the method that was running says "stopped" at the frame it reached, those that
        had not started say "not run" (a row must not read "generating" after the run ended)."""
        for name, row in self.board.items():
            if name == method:
                row.update(done=frames, stage=f"stopped at frame {frames}")
            elif name not in self.finished:
                row["stage"] = "not run (stopped)"

    def stop(self):
        self.cancel.set()

    def events(self, every: float = 0.5):
        last = 0.0
        while True:
            try:
                ev = self._events.get(timeout=every)
            except queue.Empty:
                ev = None
            if time.monotonic() - last >= every or ev is not None:
                last = time.monotonic()
                yield "progress", None, {k: dict(v) for k, v in self.board.items()}
            if ev is None:
                continue
            if ev[0] == "crash":
                raise ev[2]
            yield ev
            if ev[0] in ("end", "stopped", "error"):
                return


JOBS: dict[str, Job] = {}       # each browser session's running job: its Stop button and a closed tab end it


def start_job(key: str, work) -> Job:
    """Run work as `key`'s job (a browser session); a job that session still had running is stopped first."""
    stop_job(key)
    JOBS[key] = job = Job(work)
    return job


def stop_job(key: str) -> bool:
    """Stop `key`'s running job, if any (within one frame); True when there was one."""
    job = JOBS.pop(key, None)
    if job is None:
        return False
    job.stop()
    return True


def forget_job(key: str, job: Job) -> None:
    """Drop a job that ended from the registry (not a newer job of the same session)."""
    if JOBS.get(key) is job:
        del JOBS[key]


def stopped_message(method: str | None, frames: int, finished: list[str], total: int) -> str:
    kept = (f"{len(finished)} of {total} finished and stay shown ({', '.join(finished)})" if finished
            else "none had finished")
    return f"Stopped after {frames} frames" + (f" of {method}" if method else "") + f"; {kept}."


def _presented(rep: dict, folder: Path) -> dict:
    """A report as the Compare tab shows it: `videos`, `zip` (the bundle zipped) and `table` added."""
    from .bundle import zip_bundle

    rep["videos"] = {n: m["video"] for n, m in rep["methods"].items()}
    rep["zip"] = str(zip_bundle(folder, folder / "results.zip"))
    rep["table"] = summary_rows(rep)
    return rep


PRIVATE_KEYS = ("videos", "zip", "table")


def public_report(rep: dict) -> dict:
    """The report as the UI's JSON panel and the /compare API show it: what the bundle's report.json holds (every
    file by its name inside the bundle, the input clip by its name; no server path), without the UI's own keys."""
    from .bundle import portable

    any_file = rep.get("mosaic") or next(iter(rep["methods"].values()))["video"]   # every file lies in the bundle
    folder = rep.get("bundle_dir") or Path(any_file).parent
    return {k: v for k, v in portable(rep, folder).items() if k not in PRIVATE_KEYS}


# Results the Compare tab shows on an example's first click (examples/make_results.py makes them): one bundle per
# example clip, shown by replay only while it was made with the weights the studio runs.
EXAMPLE_RESULTS = Path(__file__).resolve().parents[1] / "examples" / "results"


@functools.lru_cache(maxsize=4)
def _digest(folder: str, state: tuple) -> str:
    """`state` (the weight files' names, mtimes and sizes) is only the cache key: changed weights hash again."""
    from v2v_core.toy.styles import weights_digest

    return weights_digest(folder)


def made_in_advance() -> dict:
    """What identifies the model that example results were made with: the shipped toy's name and weights digest
    (hashed once per state of the weight files, not on every example click: they are 20 MB)."""
    from v2v_core.toy import MODEL_DIR

    files = sorted(Path(MODEL_DIR).glob("*/*.safetensors"))
    return {"backbone": "toy", "weights": _digest(str(MODEL_DIR), tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size)
                                                                        for f in files))}


def example_results(clip, backbone: str | None = None) -> dict | None:
    """The example clip's results made in advance, as a replayed report (`made_in_advance` in its settings), or None:
    no bundle for that clip, another backbone picked, or a bundle made with other weights than the shipped ones."""
    if not clip or (backbone or BACKBONE) != "toy":
        return None
    stem = Path(str(clip)).stem
    bundle, example = EXAMPLE_RESULTS / f"{stem}.zip", EXAMPLE_RESULTS.parent / f"{stem}.mp4"
    # the example clip itself (an upload that only shares its name gets nothing made in advance)
    if not bundle.is_file() or not example.is_file() or Path(str(clip)).read_bytes() != example.read_bytes():
        return None
    key = (str(bundle), bundle.stat().st_mtime_ns, made_in_advance()["weights"])
    cached = _EXAMPLE_REPLAYS.get(key)
    if cached is not None and not Path(cached.get("bundle_dir", "")).is_dir():   # its folder aged out (WORK_TTL_S)
        del _EXAMPLE_REPLAYS[key]
    if key not in _EXAMPLE_REPLAYS:       # extracted once per bundle and weights, not on every click
        rep = replay(bundle)
        _EXAMPLE_REPLAYS[key] = rep if rep["settings"].get("made_in_advance", {}).get("weights") == key[2] else None
    return _EXAMPLE_REPLAYS[key]


_EXAMPLE_REPLAYS: dict[tuple, dict | None] = {}


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


# The run settings a replayed report gives back to the Compare tab's controls (those a bundle made elsewhere lacks
# stay as they are): what a Run after the replay would recompute.
REPLAY_SETTINGS = ("size", "frames", "seed", "strength", "steps")


def replay_controls(rep: dict) -> dict:
    """What the Compare tab's controls show after a replay, so that they describe the results on screen: the input
    clip (the bundle's copy, or None when it has none), the prompt (None when the bundle names none), the registered
    methods among its results (ticked), and the run settings it records. Results under other names (imported
    edits) have no box to tick; they show in the spare panels."""
    from .registry import REGISTRY

    settings = rep.get("settings") or {}
    return {"input": rep.get("input"), "prompt": settings.get("prompt"),
            "methods": [n for n in rep["methods"] if n in REGISTRY],
            **{k: settings[k] for k in REPLAY_SETTINGS if isinstance(settings.get(k), (int, float))}}


def metrics(source, edited, prompt: str | None = None) -> dict:
    from v2v_core.metrics import evaluate_clip
    from v2v_core.video import read_video

    if not source or not edited:
        raise V2VError("Give both the source clip and the edited clip.")
    src, _ = read_video(source, MAX_FRAMES * 4)
    ed, _ = read_video(edited, MAX_FRAMES * 4)
    return evaluate_clip(src, ed, prompt=prompt or None, clip_model=os.environ.get("V2V_CLIP_MODEL"))


def ablation_settings(grid: str) -> list[str]:
    """The grid's setting names, in the order they run."""
    from .ablation import grid_presets

    return [p.name for p in grid_presets(grid)]


def ablation_iter(video, prompt: str, grid: str, size: int = 256, frames: int = 24, seed: int = 0, progress=None,
                  cancel=None, backbone=None):
    """The ablation as a generator, like compare_iter: ("result", setting, entry) as each setting is done
    (with its video), then ("report", None, report) with `png`, `videos`, `mosaic` and `ablation_table`."""
    from .ablation import iter_ablation

    check_request(video, prompt, None, size, frames)
    bb = ready_backbone(backbone)
    out = _work_dir("v2v-ablate-")
    for kind, name, value in iter_ablation(video, prompt, grid, out, backbone=bb,
                                           size=int(size), frames=int(frames), seed=int(seed), progress=progress,
                                           cancel=cancel):
        if kind == "report":
            value["png"] = str(out / "ablation.png")
            value["videos"] = {n: m["video"] for n, m in value["methods"].items()}
        yield kind, name, value


def ablation(video, prompt: str, grid: str, size: int = 256, frames: int = 24, seed: int = 0) -> dict:
    for kind, _, value in ablation_iter(video, prompt, grid, size, frames, seed):
        if kind == "report":
            return value
    raise RuntimeError("the ablation ended without a report")


def ablation_figure(rep: dict, grid: str):
    """The ablation's interactive chart (so far, while it runs), titled with what it was measured at."""
    from .ablation import ablation_figure as figure

    return figure(rep["methods"], rep.get("ablation_title") or f"{grid} ablation: {measured_at(rep)}")


LIVE_TIMINGS = 300   # a live stream keeps its last 300 frames' timings (a minute at 5 fps): flat memory


class LiveSession:
    """One browser session's webcam stream: a Stream rebuilt when the method, a toggle or the camera's
    shape changes. The output keeps the camera's aspect (the short side at `size`). Frames that arrive
    while one is in flight are not queued: the server takes the newest (Gradio's stream events replace
    the pending input), so latency stays bounded on a slow machine; `frames` counts those processed."""

    def __init__(self, size: int = 256):
        self.size = size
        self.key = None
        self.stream = None
        self.frames = 0
        self.model_ms: deque[float] = deque(maxlen=50)   # the last seconds' model times (a bounded window)
        self.runtime = "torch"

    def process(self, frame: np.ndarray, method: str, prompt: str, overrides: dict | None = None,
                strength: float = 0.4, steps: int = 2, backbone: str | None = None,
                runtime: str = "torch") -> tuple[np.ndarray, dict]:
        from v2v_core.engine import Stream, StreamSettings
        from v2v_core.video import fit_frame

        if frame is None:
            raise V2VError("No camera frame arrived.")
        preset = REGISTRY[method] if method in REGISTRY else resolve(method)[0]
        backbone = backbone or BACKBONE
        key = (backbone, runtime, preset.name, prompt, tuple(sorted((overrides or {}).items())), strength, steps,
               frame.shape[:2])
        if key != self.key:                           # a switch: new state, same shared backbone
            cfg = preset.with_overrides(**overrides) if overrides and preset.fields() else None
            from .runner import pick_runtime

            bb, self.runtime, _ = pick_runtime(ready_backbone(backbone), [preset], runtime)
            self.stream = Stream(bb, prompt or "a photo", StreamSettings(strength=strength, steps=steps),
                                 preset.build(cfg), keep_timings=LIVE_TIMINGS)
            self.key = key
        t0 = time.perf_counter()
        out = self.stream.push(fit_frame(np.ascontiguousarray(frame[..., :3]), self.size, keep_aspect=True))
        self.model_ms.append(1000 * (time.perf_counter() - t0))
        self.frames += 1
        return out[-1], {"model_ms": round(float(np.median(self.model_ms)), 1), "frames": self.frames,
                         "method": preset.name, "runtime": self.runtime}


def correspondence_run(video, method: str = "StreamV2V", frame: int = 4, size: int = 256, prompt: str = "a photo",
                       backbone: str | None = None) -> dict:
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
    bb = ready_backbone(backbone)
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
    return img, [match_summary(m) for m in matches]


CORRESPONDENCE_LEGEND = ("Each match: the earlier *frame*, the matched point (*x*, *y* in pixels: the centre of the arg-max "
                         "token's cell), *probability*: the softmax share q·k gives that token among the frame's *tokens* "
                         "(an even spread would give each 1 / tokens), and *times_uniform*: probability × tokens, how many "
                         "times more than an even spread (1 = no preference). The heat maps in the picture are the whole "
                         "softmax over the earlier frame.")


def match_summary(m) -> dict:
    """A match as the Correspondence tab lists it (CORRESPONDENCE_LEGEND): no heat map array, which the picture shows."""
    tokens = int(m.heat.size)
    return {"frame": m.frame, "x": round(m.x, 1), "y": round(m.y, 1), "probability": round(m.score, 4),
            "tokens": tokens, "times_uniform": round(m.score * tokens, 1)}
