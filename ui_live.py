"""The Live tab (UI only, used by app.py): a webcam stream through one method, with what the person experiences
measured in the page. Every frame is a call into comparisons.service.LiveSession; no tensor math here."""
from __future__ import annotations

import gradio as gr

from comparisons import service
from comparisons.registry import PRESETS, REGISTRY
from v2v_core.config import RUNTIME_HELP, RUNTIMES
from ui_common import GPU, call_service, prompt_box

STAMP = -424242     # the hidden stamp input's value; the page's script replaces it with the send time
# What the person experiences, measured in the page (a script in the page's head, before Gradio's client
# starts): each camera frame sent to the server carries its send time (the STAMP input), the server
# echoes it with the output, and when the output image has loaded the page knows that frame's
# camera-to-screen latency. #live-figures shows, over the last 5 s: displayed frames per second, latency
# p50/p95, time to first frame, frames sent, dropped (sent but never processed: the newest frame
# wins) and held back (never sent while one frame was in flight) and the model's own time per frame (from the server).
LIVE_HEAD = """
<script>
(() => {
  const STAMP = %d, WINDOW = 5000, HOLD_MS = 10000;
  const st = window.v2vLive = {sent: 0, held: 0, inFlight: null, firstSent: null, firstShown: null, shown: [],
                               processed: 0, modelMs: null};
  const realFetch = window.fetch.bind(window);   // Gradio's client calls fetch as a method of its own objects
  window.fetch = function (input, init) {
    try {
      const url = typeof input === 'string' ? input : (input && input.url) || '';
      if (init && typeof init.body === 'string' && /queue\\/join|\\/stream\\//.test(url)
          && init.body.indexOf(String(STAMP)) >= 0) {
        const now = Date.now();
        // Frames go as fast as the server takes them: after a frame is sent, the camera's next ones are held back
        // (never sent) until its output shows, or, once the model's time per frame is known, until 0.8 of it has
        // passed, so that the next frame is waiting when the server is free (it keeps only the newest waiting one).
        const hold = st.modelMs > 0 ? Math.min(HOLD_MS, 0.8 * st.modelMs) : HOLD_MS;
        if (/\\/stream\\//.test(url) && st.inFlight !== null && now - st.inFlight < hold) {
          st.held += 1;
          return Promise.resolve(new Response('{"msg": "success"}', {status: 200,
                                 headers: {'Content-Type': 'application/json'}}));
        }
        const body = JSON.parse(init.body), i = Array.isArray(body.data) ? body.data.indexOf(STAMP) : -1;
        if (i >= 0) {
          body.data[i] = now; init = Object.assign({}, init, {body: JSON.stringify(body)});
          st.sent += 1; st.inFlight = now; if (st.firstSent === null) st.firstSent = now;
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
    st.lastStamp = stamp; st.inFlight = null;
    if (st.firstShown === null) st.firstShown = now;
    st.shown.push([now, now - stamp]);
    st.processed = Number(meta.dataset.frames); st.modelMs = Number(meta.dataset.modelMs);
    st.runtime = meta.dataset.runtime || 'torch';
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
      + `${Math.max(0, st.sent - st.processed - 1)} dropped, ${st.held} held back while the server was busy · model ${f(st.modelMs, 0)} ms/frame (${st.runtime || 'torch'})`;
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
            f"data-runtime='{info.get('runtime', 'torch')}' "
            f"style='display:none'></div>")


# Gradio's camera sends a frame every `stream_every` seconds whatever the server is doing, and the server keeps only
# the newest it has not started (measured: 865 sent, 818 never processed in 25 s at 0.03 s). The page's script holds
# frames back while one is in flight (LIVE_HEAD), so this is how soon after an output shows the next frame goes, not a
# frame rate. At the 0.2 s it once was, no machine could show more than 5 fps.
LIVE_POLL_S = 0.03

# Under ZeroGPU a GPU is attached per decorated call: each camera frame is one call (ZeroGPU's queue between frames,
# not the model, sets the frame rate). Not measured: no ZeroGPU Space is reachable from where this was written.
LIVE_FRAME_GPU_S = 10
ZEROGPU_NOTE = ("On this ZeroGPU Space every camera frame is a GPU call of its own (each asks for "
                f"{LIVE_FRAME_GPU_S} s and gives the GPU back at once): expect a few frames a second at best, with the "
                "platform's queue between frames; the Compare tab is the place to judge the methods here.")


@GPU(duration=LIVE_FRAME_GPU_S)
def step(frame, method, prompt, ea, ff, bank, runtime, stamp, sess, backbone):
    """One camera frame through this session's stream (its own state; a new backbone, method, runtime or switch
    restarts it)."""
    sess = sess or service.LiveSession()
    over = dict(extended_attention=ea, feature_fusion=ff, bank=bank) if REGISTRY[method].core_method == "streamv2v" else {}
    img, info = call_service(sess.process, frame, method, prompt, over, backbone=backbone, runtime=runtime)
    return img, live_meta(stamp, info), sess


def build_live_tab(backbone):
    """The Live tab; returns its camera help (filled in when a page opens) and its prompt box."""
    help_md = gr.Markdown(camera_help())
    if service.ZERO_GPU:
        gr.Markdown(ZEROGPU_NOTE, elem_id="live-zerogpu")
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
            runtime = gr.Radio(list(RUNTIMES), value="torch", label="Runtime", elem_id="live-runtime",
                               info=RUNTIME_HELP + "; the first frame on OpenVINO waits for the conversion, "
                                    "cached on disk after")
        with gr.Column(min_width=300):
            out = gr.Image(label="Translated", elem_id="live-out", format="jpeg")
            gr.Markdown("Press Record on the camera to start.", elem_id="live-figures")
            meta = gr.HTML(elem_id="live-meta")
    stamp = gr.Number(STAMP, visible=False)
    session = gr.State(None)

    inputs = [cam, method, prompt, ea, ff, bank, runtime, stamp, session, backbone]
    cam.stream(step, inputs, [out, meta, session], stream_every=LIVE_POLL_S, time_limit=120, concurrency_limit=2,
               show_progress="hidden")
    method.change(lambda m: gr.update(visible=REGISTRY[m].core_method == "streamv2v"), method, v2v_controls,
                  api_visibility="private", show_progress="hidden")
    gr.Button("Translate one frame", visible=False).click(step, inputs, [out, meta, session], api_name="live_frame")
    return help_md, prompt


