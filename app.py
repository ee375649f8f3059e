"""V2V Studio web UI (Gradio Blocks). Layout and events only: every action is a call into
comparisons.service (which calls v2v_core); no tensor math here.

    python app.py                                  # http://127.0.0.1:7860, embedded toy backbone (offline)
    python app.py --host 0.0.0.0 --port 7861 --share
    V2V_BACKBONE=sd15 python app.py                # SD-1.5 + LCM-LoRA (needs the hub or a local cache)

Environment: V2V_BACKBONE, V2V_MAX_FRAMES (120), V2V_MAX_SIZE (512), V2V_MAX_UPLOAD ("200mb"),
V2V_STUDY_DB (study.db), V2V_STUDY_PASSWORD (admin view), V2V_CLIP_MODEL (CLIP metrics), V2V_HOST, V2V_PORT.
Importing this module builds `demo` without loading any model: the backbone loads on first use.
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
from ui_common import METHOD_NAMES, call_service  # noqa: E402
from v2v_core.errors import V2VError  # noqa: E402
from ui_study import STUDY_CSS, SYNC_STUDY_VIDEOS_JS, build_participant_page, build_study_admin_tab, study_routes  # noqa: E402

try:  # ZeroGPU on Hugging Face Spaces; a no-op decorator elsewhere
    import spaces

    GPU = spaces.GPU
except ImportError:
    def GPU(fn=None, **kw):
        return fn if fn is not None else (lambda f: f)

HERE = Path(__file__).parent
EXAMPLES = sorted(str(p) for p in (HERE / "examples").glob("*.mp4"))
# Each example with the prompt that shows the embedded model at its best on it, and a caption
EXAMPLE_PROMPTS = {"astronaut-pan": ("a thermal image", "astronaut, camera pans: thermal"),
                   "chelsea-rotate": ("a pencil sketch", "cat, camera rotates: pencil sketch"),
                   "coffee-zoom": ("a sepia photo", "coffee, camera zooms: sepia"),
                   "rocket-object": ("pointillism", "rocket, a ball crosses: pointillism (dots invented per frame)")}
EXAMPLES.sort(key=lambda e: list(EXAMPLE_PROMPTS).index(Path(e).stem) if Path(e).stem in EXAMPLE_PROMPTS else 99)
# The example clips are rendered from scikit-image's photographs, which the toy model also trained on: say so, so
# nobody takes them for footage it never saw.
EXAMPLES_LABEL = "Example clips (each with its own prompt)" + (
    "; the embedded model trained on these photos: upload a clip of your own to see it on new footage"
    if service.BACKBONE == "toy" else "")


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


def prompt_box(value: str, **kw):
    """A prompt box that offers the backbone's known prompts (the toy's styles) and takes any text."""
    known = service.suggested_prompts()
    if known is None:
        return gr.Textbox(label="Prompt", value=value, **kw)
    return gr.Dropdown(known, value=value, label="Prompt", allow_custom_value=True, filterable=True,
                       info="The embedded toy model knows these styles; other text gives no meaningful edit.", **kw)


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


def warn_about_prompt(prompt):
    """A prompt the backbone does not know, or a style it draws faintly: a warning toast; the run goes ahead."""
    warning = service.prompt_warning(prompt)
    if warning:
        gr.Warning(warning)


@GPU(duration=120)
def run_compare(request, video, prompt, methods, size, frames, seed, strength, steps, *override_values, specs=()):
    """A generator: each method's progress on the board, and its video, the plots and the table as soon as
    that method is done."""
    overrides: dict[str, dict] = {}
    for (name, field), value in zip(specs, override_values):
        default = next(f["value"] for f in REGISTRY[name].fields() if f["name"] == field)
        if value != default:
            overrides.setdefault(name, {})[field] = type(default)(value)
    warn_about_prompt(prompt)
    order = [n for n in METHOD_NAMES if n in (methods or [])]
    partial: dict = {"methods": {}, "settings": {"size": int(size), "frames": int(frames)}}

    def work(progress, cancel):
        return service.compare_iter(video, prompt, methods, size, frames, seed, strength, steps, overrides,
                                    progress=progress, cancel=cancel)

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
    return gr.update(value=service.summary_rows(rep), label=f"Summary ({service.measured_at(rep)})")


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


def show_example_results(evt: gr.SelectData):
    """An example's results made in advance (examples/make_results.py), shown at once by replay and labelled so;
    nothing changes when there are none for the configured model."""
    index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    rep = service.example_results(EXAMPLES[int(index)]) if EXAMPLES else None
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


def build_compare_tab():
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
            with gr.Accordion("Run settings", open=False):
                size = gr.Slider(128, service.MAX_SIZE, value=256, step=64, label="Size (px)")
                frames = gr.Slider(2, service.MAX_FRAMES, value=24, step=1, label="Frames")
                strength = gr.Slider(0.1, 0.9, value=0.4, step=0.05, label="Strength")
                steps = gr.Slider(1, 4, value=2, step=1, label="LCM steps")
                seed = gr.Number(value=0, precision=0, label="Seed")
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

    def handler(request: gr.Request, *args):
        yield from run_compare(request, *args, specs=specs)

    go.click(handler, [video, prompt, methods, size, frames, seed, strength, steps, *controls],
                  [*vids, mosaic, warp_plot, bank_plot, table, zip_file, report, board], api_name="compare_ui",
                  show_progress="hidden")
    stop.click(stop_job, None, None, concurrency_limit=None, api_visibility="private")
    if examples is not None:      # an example's click shows its results made in advance at once (Run recomputes)
        # no model and no queue slot to wait for: a replay takes well under a second, even while another run holds
        # the queue's one slot
        examples.dataset.select(show_example_results, None,
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


# -- Ablation --------------------------------------------------------------------------------------
def build_ablation_tab():
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
                gr.Examples(rows, [video, prompt], label=EXAMPLES_LABEL, example_labels=labels)
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

    def run(request: gr.Request, video, prompt, grid, frames):
        warn_about_prompt(prompt)
        partial: dict = {"methods": {}, "settings": {"size": 256, "frames": int(frames)}}
        order = call_service(service.ablation_settings, grid)

        def work(progress, cancel):
            return service.ablation_iter(video, prompt, grid, 256, frames, progress=progress, cancel=cancel)

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

    go.click(run, [video, prompt, grid, frames], [chart, table, videos, setting, setting_video, mosaic, board],
             api_name="ablation", show_progress="hidden")
    stop.click(stop_job, None, None, concurrency_limit=None, api_visibility="private")
    setting.input(lambda name, vids: vids.get(name), [setting, videos], setting_video, api_visibility="private",
                  show_progress="hidden")


# -- Live ------------------------------------------------------------------------------------------
STAMP = -424242     # the hidden stamp input's value; the page's script replaces it with the send time
# What the person experiences, measured in the page (a script in the page's head, before Gradio's client
# starts): each camera frame sent to the server carries its send time (the STAMP input), the server
# echoes it with the output, and when the output image has loaded the page knows that frame's
# camera-to-screen latency. #live-figures shows, over the last 5 s: displayed frames per second, latency
# p50/p95, time to first frame, frames sent and dropped (sent but never processed: the newest frame
# wins) and the model's own time per frame (from the server).
LIVE_HEAD = """
<script>
(() => {
  const STAMP = %d, WINDOW = 5000;
  const st = window.v2vLive = {sent: 0, firstSent: null, firstShown: null, shown: [], processed: 0, modelMs: null};
  const realFetch = window.fetch.bind(window);   // Gradio's client calls fetch as a method of its own objects
  window.fetch = function (input, init) {
    try {
      const url = typeof input === 'string' ? input : (input && input.url) || '';
      if (init && typeof init.body === 'string' && /queue\\/join|\\/stream\\//.test(url)
          && init.body.indexOf(String(STAMP)) >= 0) {
        const body = JSON.parse(init.body), i = Array.isArray(body.data) ? body.data.indexOf(STAMP) : -1;
        if (i >= 0) {
          const now = Date.now();
          body.data[i] = now; init = Object.assign({}, init, {body: JSON.stringify(body)});
          st.sent += 1; if (st.firstSent === null) st.firstSent = now;
        }
      }
    } catch (e) {}
    return realFetch(input, init);
  };
  document.addEventListener('load', (e) => {
    const img = e.target;
    if (!img || img.tagName !== 'IMG' || !img.closest || !img.closest('#live-out')) return;
    const meta = document.querySelector('#live-meta [data-stamp]');
    if (!meta) return;
    const stamp = Number(meta.dataset.stamp), now = Date.now();
    if (!(stamp > 0) || stamp === st.lastStamp) return;
    st.lastStamp = stamp;
    if (st.firstShown === null) st.firstShown = now;
    st.shown.push([now, now - stamp]);
    st.processed = Number(meta.dataset.frames); st.modelMs = Number(meta.dataset.modelMs);
  }, true);
  const q = (a, p) => { const s = a.slice().sort((x, y) => x - y); return s[Math.min(s.length - 1, Math.floor(p * s.length))]; };
  setInterval(() => {
    const el = document.querySelector('#live-figures'); if (!el) return;
    const now = Date.now(); st.shown = st.shown.filter(([t]) => now - t <= 60000);
    const recent = st.shown.filter(([t]) => now - t <= WINDOW);
    if (!st.sent) { el.textContent = 'Press Record on the camera to start.'; return; }
    const span = recent.length > 1 ? (recent[recent.length - 1][0] - recent[0][0]) / 1000 : 0;
    const fps = span > 0 ? (recent.length - 1) / span : 0, lat = recent.map(r => r[1]);
    const f = (x, d) => (x === null || x === undefined || isNaN(x)) ? 'n/a' : x.toFixed(d);
    el.dataset.fps = fps.toFixed(3);
    el.dataset.p95 = lat.length ? q(lat, 0.95) : '';
    el.textContent = `shown ${f(fps, 2)} frames/s · camera-to-screen latency p50 ${lat.length ? q(lat, 0.5) : 'n/a'} ms, `
      + `p95 ${lat.length ? q(lat, 0.95) : 'n/a'} ms (last 5 s) · first frame after `
      + `${st.firstShown ? f((st.firstShown - st.firstSent) / 1000, 1) + ' s' : '…'} · ${st.sent} frames sent, `
      + `${Math.max(0, st.sent - st.processed - 1)} dropped (the newest frame wins) · model ${f(st.modelMs, 0)} ms/frame`;
  }, 500);
})();
</script>
""" % STAMP


def camera_help(request: gr.Request | None = None) -> str:
    """The camera help, naming the address this studio is actually served at."""
    host = (request.headers.get("host") if request is not None else None) or ""
    port = host.rsplit(":", 1)[1] if ":" in host else None
    local = f"http://127.0.0.1:{port}" if port else "http://127.0.0.1 with this studio's port"
    return ("Browsers only give the camera to pages served from **localhost** or over **HTTPS**. If no picture "
            f"appears, open the studio at {local} on the computer that runs it, use a Space's https:// address, or "
            "allow the camera in the address bar.")


def live_meta(stamp, info: dict) -> str:
    """What the page's script reads when the output image has loaded: the frame's send time, the model's
    time per frame and the frames processed so far."""
    return (f"<div data-stamp='{int(stamp or 0)}' data-model-ms='{info['model_ms']}' data-frames='{info['frames']}' "
            f"style='display:none'></div>")


def build_live_tab():
    help_md = gr.Markdown(camera_help())
    with gr.Row():
        with gr.Column(min_width=300):
            # the model needs a 256 px short side: asking the camera for about that keeps each frame's JPEG, its
            # upload and its decoding small (a camera that cannot gives its nearest size; the server fits it)
            cam = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Camera", elem_id="cam",
                           webcam_options=gr.WebcamOptions(mirror=True, constraints={
                               "video": {"width": {"ideal": 384}, "height": {"ideal": 288}}}))
            method = gr.Dropdown([p.name for p in PRESETS if p.online], value="StreamV2V", label="Method",
                                 info="switchable while streaming (the stream restarts with a fresh bank)")
            prompt = prompt_box("a thermal image")
            with gr.Row(visible=True) as v2v_controls:      # StreamV2V's switches, shown only for its variants
                ea = gr.Checkbox(True, label="EA (StreamV2V)", info="extended attention", min_width=150)
                ff = gr.Checkbox(True, label="FF (StreamV2V)", info="feature fusion", min_width=150)
                bank = gr.Radio(["dyme", "queue", "none"], value="dyme", label="Bank (StreamV2V)", min_width=150)
        with gr.Column(min_width=300):
            out = gr.Image(label="Translated", elem_id="live-out", format="jpeg")
            gr.Markdown("Press Record on the camera to start.", elem_id="live-figures")
            meta = gr.HTML(elem_id="live-meta")
    stamp = gr.Number(STAMP, visible=False)
    session = gr.State(None)

    def step(frame, method, prompt, ea, ff, bank, stamp, sess):
        sess = sess or service.LiveSession()
        over = dict(extended_attention=ea, feature_fusion=ff, bank=bank) if REGISTRY[method].core_method == "streamv2v" else {}
        img, info = call_service(sess.process, frame, method, prompt, over)
        return img, live_meta(stamp, info), sess

    inputs = [cam, method, prompt, ea, ff, bank, stamp, session]
    cam.stream(step, inputs, [out, meta, session], stream_every=0.2, time_limit=120, concurrency_limit=2,
               show_progress="hidden")
    method.change(lambda m: gr.update(visible=REGISTRY[m].core_method == "streamv2v"), method, v2v_controls,
                  api_visibility="private", show_progress="hidden")
    gr.Button("Translate one frame", visible=False).click(step, inputs, [out, meta, session], api_name="live_frame")
    return help_md


# -- Correspondence --------------------------------------------------------------------------------
def build_correspondence_tab():
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

    def run(video, method, frame):
        r = call_service(service.correspondence_run, video, method, int(frame))
        return r, r["frames"][r["frame"]], gr.update(choices=r["layers"], value=r["default_layer"])

    def click(r, layer, evt: gr.SelectData):
        if r is None:
            raise gr.Error("Run a method first.")
        img, m = service.correspondence_view(r, evt.index[0], evt.index[1], layer)
        return img, m

    go.click(run, [video, method, frame], [state, last, layer])
    last.select(click, [state, layer], [view, matches])


with gr.Blocks(title="V2V Studio", delete_cache=(3600, 7200)) as demo:
    gr.Markdown(f"# V2V Studio\nStreaming video-to-video methods side by side. Backbone: `{service.BACKBONE}`"
                + (" (the embedded toy model: simple styles such as *a thermal image*, *a pencil sketch*, *a sepia photo*, "
                   "*pointillism*)."
                   if service.BACKBONE == "toy" else "."))
    with gr.Tab("Compare"):
        build_compare_tab()
    with gr.Tab("Ablation"):
        build_ablation_tab()
    with gr.Tab("Live"):
        live_help = build_live_tab()
    with gr.Tab("Correspondence"):
        build_correspondence_tab()
    with gr.Tab("User study"):
        build_study_admin_tab()
    demo.load(camera_help, None, live_help, api_visibility="private", show_progress="hidden")
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
