"""V2V Studio web UI (Gradio Blocks). Layout and events only: every action is a call into
comparisons.service (which calls v2v_core); no tensor math here.

    python app.py                                  # http://127.0.0.1:7860, embedded toy backbone (offline)
    python app.py --host 0.0.0.0 --port 7861 --share
    V2V_BACKBONE=sd15 python app.py                # pages start on SD-1.5 + LCM-LoRA (needs a GPU and the hub or a cache)
    V2V_BACKBONES=sd15-random,/models/my-sd python app.py   # more backbones for the picker

Each page picks its backbone (the picker at the top; README "Deploy"). On ZeroGPU (SPACES_ZERO_GPU) the listed backbones
load at import, as the platform's documentation lays out; elsewhere a backbone loads on first use.
Environment: V2V_BACKBONE, V2V_BACKBONES, V2V_ZEROGPU_MAX_S, V2V_MAX_FRAMES (120), V2V_MAX_SIZE (512), V2V_MAX_UPLOAD ("200mb"),
V2V_STUDY_DB (study.db), V2V_STUDY_PASSWORD (admin view), V2V_CLIP_MODEL (CLIP metrics), V2V_HOST, V2V_PORT.
Importing this module builds `demo` without loading any model (except on ZeroGPU, above).
"""
from __future__ import annotations

import argparse
import html
import os
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from comparisons import service  # noqa: E402
from comparisons.registry import PRESETS, REGISTRY  # noqa: E402
from v2v_core.config import RUNTIME_HELP, RUNTIMES  # noqa: E402
from ui_common import GPU, METHOD_NAMES, call_service, prompt_box, prompt_update  # noqa: E402
from v2v_core.errors import V2VError  # noqa: E402
from ui_live import LIVE_HEAD, build_live_tab, camera_help  # noqa: E402
from ui_study import STUDY_CSS, SYNC_STUDY_VIDEOS_JS, build_participant_page, build_study_admin_tab, study_routes  # noqa: E402

# ZeroGPU on Hugging Face Spaces (the platform sets SPACES_ZERO_GPU): as its documentation lays out, every backbone
# the picker offers loads NOW, at import, and goes to 'cuda' at module level; the GPU-decorated calls (ui_common.GPU)
# only run (a load inside one would spend the visitor's GPU slot on a download). Elsewhere nothing loads at import.
LOAD_FAILURES = service.load_at_start() if service.ZERO_GPU else {}

HERE = Path(__file__).parent
EXAMPLES = sorted(str(p) for p in (HERE / "examples").glob("*.mp4"))
# Each example with the prompt that shows the embedded model at its best on it, and a caption
EXAMPLE_PROMPTS = {"astronaut-pan": ("a snowy scene", "astronaut, camera pans: snowy scene (snow chosen per frame)"),
                   "chelsea-rotate": ("a pencil sketch", "cat, camera rotates: pencil sketch"),
                   "coffee-zoom": ("a sepia photo", "coffee, camera zooms: sepia"),
                   "rocket-object": ("pointillism", "rocket, a ball crosses: pointillism (dots invented per frame)")}
EXAMPLES.sort(key=lambda e: list(EXAMPLE_PROMPTS).index(Path(e).stem) if Path(e).stem in EXAMPLE_PROMPTS else 99)
# The example clips are rendered from scikit-image's photographs, which the toy model also trained on: say so, so
# nobody takes them for footage it never saw.
EXAMPLES_LABEL = "Example clips (each with its own prompt)" + (
    "; the embedded model trained on these photos: upload a clip of your own to see it on new footage"
    if service.BACKBONE == "toy" else "")


def keep_prompt_help(examples, backbone, prompt):
    """Gradio's example click gives the prompt box its first props back (the page's first backbone's suggestions and
    help): they follow this session's pick again right after."""
    examples.load_input_event.then(prompt_update, backbone, prompt, api_visibility="private", show_progress="hidden",
                                   queue=False)


def example_rows():
    """[clip, prompt] per example and their captions."""
    rows = [[e, EXAMPLE_PROMPTS.get(Path(e).stem, ("a thermal image", ""))[0]] for e in EXAMPLES]
    labels = [EXAMPLE_PROMPTS.get(Path(e).stem, ("", Path(e).stem))[1] or Path(e).stem for e in EXAMPLES]
    return rows, labels
SPARE_PANELS = 6            # result panels for names outside the registry (imported results)
DEFAULT_METHODS = ("StreamDiffusion", "StreamV2V")   # ticked on the Compare tab (and in the examples' results)


def control_for(field: dict):
    """A widget from a config field's metadata (never retyped by hand)."""
    label, info = field["name"].replace("_", " "), field["help"]
    if isinstance(field["value"], bool):
        return gr.Checkbox(value=field["value"], label=label, info=info)
    if field["choices"]:
        return gr.Radio(list(field["choices"]), value=field["value"], label=label, info=info)
    if isinstance(field["value"], (int, float)):
        return gr.Slider(field["lo"], field["hi"], value=field["value"], step=field["step"], label=label, info=info)
    return gr.Textbox(value=field["value"], label=label, info=info)


# -- Compare ---------------------------------------------------------------------------------------
def session_key(request) -> str:
    """A browser session's key for its running job (Stop and a closed tab end that job, no other)."""
    return getattr(request, "session_hash", None) or "local"


def progress_board(board: dict, order: list[str], note: str = "") -> str:
    """Each method's own progress row: its name, a bar, "frame i / n" and the stage it is in."""
    rows = []
    for name in order:
        b = board.get(name) or {"done": 0, "total": None, "stage": "waiting"}
        total = b["total"]
        share = min(1.0, b["done"] / total) if total else (1.0 if b["stage"].startswith("done") else 0.0)
        count = f"frame {b['done']} / {total}" if total else ""
        rows.append(f"<div class='pb-row'><span class='pb-name'>{html.escape(name)}</span>"
                    f"<span class='pb-bar'><span style='width:{100 * share:.0f}%'></span></span>"
                    f"<span class='pb-count'>{count}</span><span class='pb-stage'>{html.escape(b['stage'])}</span></div>")
    head = f"<div class='pb-note'>{html.escape(note)}</div>" if note else ""
    return f"<div class='progress-board'>{head}{''.join(rows)}</div>"


BOARD_CSS = """
.backbone-status { font-size: 0.85em; color: #555; }
.progress-board { font-size: 0.9em; }
.pb-row { display: flex; gap: 8px; align-items: center; margin: 2px 0; flex-wrap: wrap; }
.pb-name { flex: 0 0 13em; font-weight: 600; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.pb-bar { flex: 1 1 8em; height: 8px; background: #ddd; border-radius: 4px; overflow: hidden; min-width: 6em; }
.pb-bar > span { display: block; height: 100%; background: #5b6cc0; }
.pb-count { flex: 0 0 7.5em; font-variant-numeric: tabular-nums; }
.pb-stage { flex: 1 1 10em; color: #666; }
.pb-note { font-weight: 600; margin-bottom: 4px; }
"""


def run_job(request, order: list[str], work, n_outputs: int, on_event):
    """Run work as this session's job and turn its events into UI updates: every output but the last
    (the progress board) is left as it is unless on_event(kind, name, value) gives new values. A stop
    or an error keeps what is on screen and says so on the board."""
    keep = [gr.update()] * n_outputs
    yield (*keep, progress_board({}, order, "Starting (the model loads on the first run)…"))
    job = service.start_job(session_key(request), work)
    try:
        yield from _job_updates(job, order, keep, on_event)
    finally:                # the page went away (closed tab, Gradio closed this generator): the job ends too
        job.stop()
        service.forget_job(session_key(request), job)


def remaining_note(board: dict, order: list[str], elapsed: float) -> str:
    """'about N s left': this run's own pace so far (seconds per frame done, over every method's frames,
    model loading included) times the frames still to do; nothing until a frame is done."""
    done = sum(min(b["done"], b["total"]) for b in board.values() if b.get("total"))
    total = sum(b["total"] for b in board.values() if b.get("total"))
    total += sum(1 for n in order if n not in board)          # not reported yet: at least a frame each
    if done <= 0 or total <= done:
        return ""
    return f"About {elapsed / done * (total - done):.0f} s left (at this run's pace so far)."


def _job_updates(job, order, keep, on_event):
    board, note, t0 = {}, "", time.monotonic()
    for kind, name, value in job.events():
        if kind == "progress":
            board = value
            yield (*keep, progress_board(board, order, note or remaining_note(board, order, time.monotonic() - t0)))
        elif kind == "stopped":
            yield (*keep, progress_board(job.board, order, service.stopped_message(name, value, job.finished, len(order))))
        elif kind == "error":   # a warning that keeps the results on screen
            gr.Warning(value, duration=None)
            yield (*keep, progress_board(board, order, f"Not run: {value}"))
        elif kind in ("result", "report"):
            note = "Done." if kind == "report" else note
            yield (*on_event(kind, name, value), progress_board(job.board, order, note))


def stop_job(request: gr.Request):
    service.stop_job(session_key(request))


def warn_about_prompt(prompt, backbone):
    """A prompt the backbone does not know, or a style it draws faintly: a warning toast; the run goes ahead."""
    warning = service.prompt_warning(prompt, backbone)
    if warning:
        gr.Warning(warning)


def compare_gpu_seconds(request, video, prompt, methods, size, frames, seed, strength, steps, backbone, runtime,
                        *override_values, specs=()):
    """ZeroGPU's `duration` for run_compare: called with the same arguments, before a GPU is attached."""
    return service.gpu_seconds(methods, frames, size, steps)


@GPU(duration=compare_gpu_seconds)
def run_compare(request, video, prompt, methods, size, frames, seed, strength, steps, backbone, runtime, *override_values,
                specs=()):
    """A generator: each method's progress on the board, and its video, the plots and the table as soon as
    that method is done."""
    overrides: dict[str, dict] = {}
    for (name, field), value in zip(specs, override_values):
        default = next(f["value"] for f in REGISTRY[name].fields() if f["name"] == field)
        if value != default:
            overrides.setdefault(name, {})[field] = type(default)(value)
    warn_about_prompt(prompt, backbone)
    order = [n for n in METHOD_NAMES if n in (methods or [])]
    partial: dict = {"methods": {}, "settings": {"size": int(size), "frames": int(frames)}}

    def work(progress, cancel):
        return service.compare_iter(video, prompt, methods, size, frames, seed, strength, steps, overrides,
                                    progress=progress, cancel=cancel, backbone=backbone, runtime=runtime)

    def on_event(kind, name, value):
        if kind == "report":
            return compare_outputs(value)
        partial["methods"][name] = value
        vids = video_updates({n: m["video"] for n, m in partial["methods"].items()})
        return (*vids, gr.update(), service.warp_error_figure(partial), service.bank_figure(partial),
                table_update(partial), gr.update(), gr.update())

    yield from run_job(request, order, work, len(METHOD_NAMES) + SPARE_PANELS + 6, on_event)


def table_update(rep: dict):
    """The summary table, its label saying the size and frame count every warp error was measured at."""
    s = rep.get("settings") or {}      # which model and runtime made these (the picker may differ now)
    made = "".join(f"; {k} {s[k]}" for k in ("backbone", "runtime") if s.get(k))
    return gr.update(value=service.summary_rows(rep), label=f"Summary ({service.measured_at(rep)}{made})")


def video_updates(videos: dict) -> list:
    """Updates of the result panels: a registered method in its own panel, any other name (imported
    results) in the spare panels, in order."""
    others = [n for n in videos if n not in REGISTRY][:SPARE_PANELS]
    ups = [gr.update(visible=n in videos, value=videos.get(n), label=n) if n in videos else gr.update(visible=False)
           for n in METHOD_NAMES]
    ups += [gr.update(visible=True, value=videos[others[i]], label=others[i]) if i < len(others)
            else gr.update(visible=False, value=None) for i in range(SPARE_PANELS)]
    return ups


def compare_outputs(rep: dict) -> tuple:
    public = service.public_report(rep)
    return (*video_updates(rep["videos"]), rep["mosaic"], service.warp_error_figure(rep), service.bank_figure(rep),
            table_update(rep), rep["zip"], public)


def show_example_results(backbone, evt: gr.SelectData):
    """An example's results made in advance (examples/make_results.py), shown at once by replay and labelled so;
    nothing changes when there are none for the picked backbone."""
    index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    rep = service.example_results(EXAMPLES[int(index)], backbone) if EXAMPLES else None
    if rep is None:
        return tuple(gr.update() for _ in range(len(METHOD_NAMES) + SPARE_PANELS + 8))
    order = list(rep["methods"])
    note = (f"Made in advance with the embedded model (weights {rep['settings']['made_in_advance']['weights']}, "
            f"{rep['settings']['made_in_advance'].get('command', 'python examples/make_results.py')}): press Run to compute "
            "them live.")
    board = {n: {"done": rep["settings"]["frames"], "total": rep["settings"]["frames"], "stage": "made in advance"}
             for n in order}
    return (*compare_outputs(rep), progress_board(board, order, note), gr.update(value=service.replay_controls(rep)["methods"]))


REPLAY_CONTROLS = ("input", "prompt", "methods", *service.REPLAY_SETTINGS)
PLACEHOLDER_PLOTS: list = []      # the Compare tab's charts, drawn empty when a page opens (placeholder_plots)


def placeholder_plots():
    return (service.placeholder_figure("Warp error per frame pair appears here after a run"),
            service.placeholder_figure("Temporal memory per frame appears here after a run"))


def load_results(bundle, source, edits, prompt):
    """Replay results made elsewhere (a bundle zip, or a source plus edited videos named by their file
    names): the same videos, plots and table as a fresh run, and no model is loaded. The run's controls
    (input, prompt, methods ticked, run settings) take the replayed run's values, so that they describe
    what is on screen and Run recomputes it."""
    pairs = [(Path(e).stem, e) for e in (edits or [])]
    try:
        rep = service.replay(bundle, source, pairs, prompt)
    except V2VError as e:   # a warning; the results on screen stay
        gr.Warning(str(e), duration=None)
        return tuple(gr.update() for _ in range(len(METHOD_NAMES) + SPARE_PANELS + 6 + len(REPLAY_CONTROLS)))
    shown = service.replay_controls(rep)
    controls = [gr.update(value=shown[k]) if k in shown and (shown[k] is not None or k == "input") else gr.update()
                for k in REPLAY_CONTROLS]
    return (*compare_outputs(rep), *controls)


def compare_api(video, prompt, methods, size, frames, seed):
    """/compare: (video file, prompt, method names, size px, frames, seed) -> (report JSON, result videos)."""
    rep = call_service(service.compare, video, prompt, list(methods or []), int(size), int(frames), int(seed))
    report = service.public_report(rep)
    return report, [rep["mosaic"], *rep["videos"].values()]


def metrics_api(source, edited):
    """/metrics: (source video, edited video) -> metrics JSON."""
    return call_service(service.metrics, source, edited)


def build_compare_tab(backbone):
    """The Compare tab; returns its prompt box (the backbone picker updates its help)."""
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            video = gr.Video(label="Input clip", sources=["upload"], elem_id="compare-input", height=240)
            prompt = prompt_box("a thermal image")
            methods = gr.CheckboxGroup(METHOD_NAMES, value=list(DEFAULT_METHODS), label="Methods")
            with gr.Row():
                go = gr.Button("Run", variant="primary", elem_id="run-compare")
                stop = gr.Button("Stop", elem_id="stop-compare")
            examples = None
            if EXAMPLES:
                rows, labels = example_rows()
                examples = gr.Examples(rows, [video, prompt], label=EXAMPLES_LABEL, example_labels=labels)
                keep_prompt_help(examples, backbone, prompt)
            with gr.Accordion("Run settings", open=False):
                size = gr.Slider(128, service.MAX_SIZE, value=256, step=64, label="Size (px)", elem_id="compare-size")
                frames = gr.Slider(2, service.MAX_FRAMES, value=24, step=1, label="Frames", elem_id="compare-frames")
                strength = gr.Slider(0.1, 0.9, value=0.4, step=0.05, label="Strength")
                steps = gr.Slider(1, 4, value=2, step=1, label="LCM steps")
                seed = gr.Number(value=0, precision=0, label="Seed")
                runtime = gr.Radio(list(RUNTIMES), value="torch", label="Runtime", elem_id="compare-runtime",
                                   info=RUNTIME_HELP)
            specs, controls = [], []
            with gr.Accordion("Method settings (each method's switches, paper defaults)", open=False):
                for p in PRESETS:
                    fields = p.fields()
                    if fields:
                        with gr.Accordion(p.name, open=False):
                            for f in fields:
                                specs.append((p.name, f["name"]))
                                controls.append(control_for(f))
            with gr.Accordion("Load results (made here or elsewhere; no model needed)", open=False,
                              elem_id="load-results"):
                bundle = gr.File(label="Results zip (the download below, or `comparisons import`)",
                                 file_types=[".zip"], elem_id="bundle-file")
                gr.Markdown("…or a source clip (optional) and edited videos, each named by its file name:")
                src_clip = gr.Video(label="Source clip (optional)", sources=["upload"], elem_id="replay-source")
                edits = gr.File(label="Edited videos", file_count="multiple", file_types=["video"],
                                elem_id="replay-edits")
                load = gr.Button("Load results", elem_id="load-results-btn")
        with gr.Column(scale=2, min_width=320):
            board = gr.HTML(elem_id="progress-board")
            mosaic = gr.Video(label="Side by side (mosaic)", elem_id="mosaic", height=360)
            with gr.Row():
                vids = [gr.Video(label=n, visible=False, elem_classes=["result-video"], min_width=200, height=280)
                        for n in METHOD_NAMES]
                vids += [gr.Video(label="result", visible=False, elem_classes=["result-video"], min_width=200, height=280)
                         for _ in range(SPARE_PANELS)]
            warp_plot = gr.Plot(label="Warp error per frame", elem_id="warp-plot")
            bank_plot = gr.Plot(label="Bank memory per frame")
            # fixed column widths: the table fits at desktop width and scrolls sideways on a phone (no
            # letter-by-letter wrapping)
            table = gr.Dataframe(headers=service.SUMMARY_HEADERS, label="Summary", interactive=False, wrap=True,
                                 elem_id="summary-table", column_widths=["160px"] + ["90px"] * 7)
            gr.Markdown(service.SUMMARY_LEGEND)
            zip_file = gr.File(label="Download everything (zip)")
            report = gr.JSON(label="Report", open=False)

    def handler(request: gr.Request, video, prompt, methods, size, frames, seed, strength, steps, *rest):
        call_service(service.check_gpu_budget, methods, frames, size, steps)     # ZeroGPU: refused before the run
        yield from run_compare(request, video, prompt, methods, size, frames, seed, strength, steps, *rest, specs=specs)

    go.click(handler, [video, prompt, methods, size, frames, seed, strength, steps, backbone, runtime, *controls],
                  [*vids, mosaic, warp_plot, bank_plot, table, zip_file, report, board], api_name="compare_ui",
                  show_progress="hidden")
    stop.click(stop_job, None, None, concurrency_limit=None, api_visibility="private")
    if examples is not None:      # an example's click shows its results made in advance at once (Run recomputes)
        # no model and no queue slot to wait for: a replay takes well under a second, even while another run holds
        # the queue's one slot
        examples.dataset.select(show_example_results, backbone,
                                [*vids, mosaic, warp_plot, bank_plot, table, zip_file, report, board, methods],
                                api_visibility="private", show_progress="hidden", concurrency_limit=None)
    load.click(load_results, [bundle, src_clip, edits, prompt],
               [*vids, mosaic, warp_plot, bank_plot, table, zip_file, report, video, prompt, methods, size, frames, seed,
                strength, steps], api_name="load_results")
    PLACEHOLDER_PLOTS.extend([warp_plot, bank_plot])
    with gr.Row(visible=False):  # the stable public API (users' scripts call these two signatures)
        a_video, a_prompt = gr.Video(), gr.Textbox()
        a_methods = gr.Dropdown(METHOD_NAMES, multiselect=True)
        a_size, a_frames, a_seed = gr.Number(value=256), gr.Number(value=24), gr.Number(value=0)
        a_report, a_files = gr.JSON(), gr.Files()
        a_go = gr.Button()
        m_src, m_edit, m_out, m_go = gr.Video(), gr.Video(), gr.JSON(), gr.Button()
    a_go.click(compare_api, [a_video, a_prompt, a_methods, a_size, a_frames, a_seed], [a_report, a_files],
               api_name="compare")
    m_go.click(metrics_api, [m_src, m_edit], m_out, api_name="metrics")
    return prompt


# -- Ablation --------------------------------------------------------------------------------------
def ablation_gpu_seconds(request, video, prompt, grid, frames, backbone):
    return service.gpu_seconds(frames=frames, grid=grid)


@GPU(duration=ablation_gpu_seconds)
def run_ablation(request, video, prompt, grid, frames, backbone):
    """A generator like run_compare: the grid's settings one by one, the chart and the videos as each is done."""
    warn_about_prompt(prompt, backbone)
    partial: dict = {"methods": {}, "settings": {"size": 256, "frames": int(frames)}}
    order = call_service(service.ablation_settings, grid)

    def work(progress, cancel):
        return service.ablation_iter(video, prompt, grid, 256, frames, progress=progress, cancel=cancel,
                                     backbone=backbone)

    def on_event(kind, name, value):
        rep = value if kind == "report" else partial
        if kind == "result":
            partial["methods"][name] = value
        vids = {n: m["video"] for n, m in rep["methods"].items()}
        if kind == "report":    # the person may be watching a setting by now: keep it
            return (service.ablation_figure(rep, grid), rep["ablation_table"], vids, gr.update(choices=list(vids)),
                    gr.update(), rep["mosaic"])
        return (service.ablation_figure(rep, grid), gr.update(), vids, gr.update(choices=list(vids), value=name),
                vids[name], gr.update())

    yield from run_job(request, order, work, 6, on_event)


def build_ablation_tab(backbone):
    """The Ablation tab; returns its prompt box."""
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            video = gr.Video(label="Input clip", sources=["upload"], elem_id="ablation-input", height=240)
            prompt = prompt_box("a thermal image")
            grid = gr.Radio(list(service.ABLATION_GRIDS), value="streamv2v", label="Grid",
                            info="streamv2v: EA x FF x bank (the code's FF defaults 0.8 / 0.98); streamv2v-paper: the "
                                 "same with the paper's 0.75 / 0.9; svdiff: memory sizes 1x1, 8x8, 16x16 against the "
                                 "per-frame baseline")
            frames = gr.Slider(2, service.MAX_FRAMES, value=24, step=1, label="Frames")
            with gr.Row():
                go = gr.Button("Run ablation", variant="primary", elem_id="run-ablation")
                stop = gr.Button("Stop", elem_id="stop-ablation")
            if EXAMPLES:
                rows, labels = example_rows()
                keep_prompt_help(gr.Examples(rows, [video, prompt], label=EXAMPLES_LABEL, example_labels=labels),
                                 backbone, prompt)
        with gr.Column(scale=2, min_width=320):
            board = gr.HTML(elem_id="ablation-board")
            chart = gr.Plot(label="Warp error by setting", elem_id="ablation-chart")
            table = gr.Markdown()
            with gr.Row():
                setting = gr.Dropdown([], label="Play one setting's output", elem_id="ablation-setting")
                setting_video = gr.Video(label="Setting's output", elem_id="ablation-video", autoplay=True, loop=True,
                                         height=280)
            mosaic = gr.Video(label="All settings side by side", elem_id="ablation-mosaic", height=420)
    videos = gr.State({})

    def run(request: gr.Request, video, prompt, grid, frames, backbone):
        call_service(service.check_gpu_budget, frames=frames, grid=grid)       # ZeroGPU: refused before the run
        yield from run_ablation(request, video, prompt, grid, frames, backbone)

    go.click(run, [video, prompt, grid, frames, backbone], [chart, table, videos, setting, setting_video, mosaic, board],
             api_name="ablation", show_progress="hidden")
    stop.click(stop_job, None, None, concurrency_limit=None, api_visibility="private")
    setting.input(lambda name, vids: vids.get(name), [setting, videos], setting_video, api_visibility="private",
                  show_progress="hidden")
    return prompt


# -- Correspondence --------------------------------------------------------------------------------
@GPU(duration=60)
def correspondence_run(video, method, frame, backbone):
    """Run a method with the recorder on (at most 33 frames at 256 px: well inside a minute of GPU)."""
    r = call_service(service.correspondence_run, video, method, int(frame), backbone=backbone)
    return r, r["frames"][r["frame"]], gr.update(choices=r["layers"], value=r["default_layer"])


def build_correspondence_tab(backbone):
    gr.Markdown("Run a method on a clip, then **click a point** on the last frame: the matched points and "
                "attention heat maps on the four frames before it (from the UNet's self-attention queries and keys).")
    with gr.Row():
        with gr.Column():
            video = gr.Video(label="Clip", sources=["upload"], elem_id="corr-input")
            method = gr.Dropdown([n for n in METHOD_NAMES if REGISTRY[n].core_method in ("streamdiffusion", "streamv2v", "window")],
                                 value="StreamV2V", label="Method")
            frame = gr.Slider(4, 32, value=8, step=1, label="Frame n")
            layer = gr.Dropdown([], label="Self-attention layer")
            go = gr.Button("Run", variant="primary")
            if EXAMPLES:
                rows, labels = example_rows()
                gr.Examples([[r[0]] for r in rows], [video], label="Example clips", example_labels=labels)
        with gr.Column():
            last = gr.Image(label="Frame n: click a point", interactive=False, elem_id="corr-frame")
            matches = gr.JSON(label="Matched points", elem_id="corr-matches")
            gr.Markdown(service.CORRESPONDENCE_LEGEND)
    # the five frames side by side need the page's whole width (in a half column they were drawn 600 px wide)
    view = gr.Image(label="Frame n and its matches in frames n-1 .. n-4", elem_id="corr-view")
    state = gr.State(None)

    def click(r, layer, evt: gr.SelectData):
        if r is None:
            raise gr.Error("Run a method first.")
        img, m = service.correspondence_view(r, evt.index[0], evt.index[1], layer)
        return img, m

    go.click(correspondence_run, [video, method, frame, backbone], [state, last, layer])
    last.select(click, [state, layer], [view, matches])


# -- Backbone picker -------------------------------------------------------------------------------
def backbone_note(rows: list[dict], current: str) -> str:
    """Under the picker: what the picked backbone is, and each one that cannot run here with the reason."""
    row = next((r for r in rows if r["key"] == current), None)
    note = f"**{row['label']}**: {row['about']}." if row else f"`{current}`"
    out = [r for r in rows if r["unavailable"]]
    if out:     # folded: on a phone the reasons would push the tabs a screen down
        reasons = "".join(f"<li><i>{html.escape(r['label'])}</i>: {html.escape(r['unavailable'])}.</li>" for r in out)
        note += (f"<details><summary>Unavailable here: {html.escape(', '.join(r['label'] for r in out))} (why)</summary>"
                 f"<ul>{reasons}</ul></details>")
    return note


def backbone_menu(current):
    """When a page opens: the picker's entries, those that cannot run here marked, and why (loads no model)."""
    rows = service.backbone_status()
    choices = [(r["label"] + (" (unavailable here)" if r["unavailable"] else ""), r["key"]) for r in rows]
    return gr.update(choices=choices), backbone_note(rows, current)


def pick_backbone(key, last):
    """This session's backbone (no other session's changes): one that cannot run here is refused with its reason and
    the picker goes back; the prompt boxes' suggestions and help follow the backbone."""
    rows = service.backbone_status()
    row = next((r for r in rows if r["key"] == key), None)
    if row and row["unavailable"]:
        gr.Warning(f"{row['label']} cannot run here: {row['unavailable']}.", duration=10)   # the line below keeps it
        key = last
    return (key, key, backbone_note(rows, key), *(prompt_update(key) for _ in range(3)))


with gr.Blocks(title="V2V Studio", delete_cache=(3600, 7200)) as demo:
    with gr.Row(equal_height=True):
        gr.Markdown("# V2V Studio\nStreaming video-to-video methods side by side, on the backbone you pick.")
        backbone = gr.Dropdown(service.backbone_choices(), value=service.BACKBONE, label="Backbone",
                               elem_id="backbone-picker", info="for every tab of this page; another visitor's is their own")
    backbone_status = gr.Markdown(elem_id="backbone-status", elem_classes=["backbone-status"])
    picked = gr.State(service.BACKBONE)     # the last backbone that could run: where a refused pick goes back to
    with gr.Tab("Compare"):
        prompts = [build_compare_tab(backbone)]
    with gr.Tab("Ablation"):
        prompts.append(build_ablation_tab(backbone))
    with gr.Tab("Live"):
        live_help, live_prompt = build_live_tab(backbone)
        prompts.append(live_prompt)
    with gr.Tab("Correspondence"):
        build_correspondence_tab(backbone)
    with gr.Tab("User study"):
        build_study_admin_tab()
    demo.load(camera_help, None, live_help, api_visibility="private", show_progress="hidden")
    demo.load(backbone_menu, backbone, [backbone, backbone_status], api_visibility="private", show_progress="hidden",
              concurrency_limit=None)
    backbone.input(pick_backbone, [backbone, picked], [backbone, picked, backbone_status, *prompts],
                   api_visibility="private", show_progress="hidden", concurrency_limit=None)
    demo.load(placeholder_plots, None, PLACEHOLDER_PLOTS, api_visibility="private", show_progress="hidden",
              concurrency_limit=None)
    demo.unload(stop_job)       # a closed or reloaded tab ends its running job: the worker is free again
with demo.route("Participate in the study", "/study") as study_page:
    build_participant_page(study_page)


def main():
    from v2v_core.threads import apply

    apply()     # the thread policy (v2v_core.threads: cores - 1, passive wait) before the model loads torch
    if EXAMPLES:    # the first click on an example replays its results: its libraries load now, not on that click
        service.example_results(EXAMPLES[0])
    ap = argparse.ArgumentParser(description="V2V Studio web UI")
    ap.add_argument("--host", default=os.environ.get("V2V_HOST", "127.0.0.1"))
    ap.add_argument("--port", type=int, default=int(os.environ.get("V2V_PORT", "7860")))
    ap.add_argument("--share", action="store_true")
    args = ap.parse_args()
    demo.queue(default_concurrency_limit=1, max_size=20).launch(
        server_name=args.host, server_port=args.port, share=args.share, show_error=True, ssr_mode=False,
        **LAUNCH_OPTIONS)


# What every launch of the studio needs beyond its address: the study's own video route (registered before Gradio's
# routes), the scripts and styles of the pages. Tests that launch `demo` themselves pass the same.
LAUNCH_OPTIONS = dict(max_file_size=os.environ.get("V2V_MAX_UPLOAD", "200mb"), js=SYNC_STUDY_VIDEOS_JS,
                      css=BOARD_CSS + STUDY_CSS, head=LIVE_HEAD, app_kwargs={"routes": study_routes()})


if __name__ == "__main__":
    main()
