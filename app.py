"""V2V Studio web UI (Gradio). Layout and events only: every action is a call into v2v_core.

    python app.py                       # http://127.0.0.1:7860, embedded toy backbone (offline)
    python app.py --host 0.0.0.0 --port 7861 --share
    V2V_BACKBONE=sd15 python app.py     # SD-1.5 + LCM-LoRA (needs the model hub or a local cache)

Importing this module builds the Blocks (`demo`) without loading any model: the backbone loads on
the first request.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import threading
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from v2v_core.errors import V2VError  # noqa: E402

HERE = Path(__file__).parent
EXAMPLES = sorted((HERE / "examples").glob("*.mp4"))
BACKBONE = os.environ.get("V2V_BACKBONE", "toy")
MAX_FRAMES = int(os.environ.get("V2V_MAX_FRAMES", "120"))

_backbone = None
_backbone_lock = threading.Lock()


def get_backbone():
    """Load the backbone once per process (shared by all sessions; streams keep their own state)."""
    global _backbone
    with _backbone_lock:
        if _backbone is None:
            from v2v_core.backbones import load_backbone

            _backbone = load_backbone(BACKBONE)
        return _backbone


def translate(video, prompt, size, frames, strength, steps, seed, progress=gr.Progress()):
    from v2v_core.engine import StreamSettings
    from v2v_core.translate import translate_video

    if not video:
        raise gr.Error("Upload a clip or pick an example first.")
    out = Path(tempfile.mkdtemp(prefix="v2v-")) / "translated.mp4"
    try:
        settings = StreamSettings(strength=float(strength), steps=int(steps), seed=int(seed))
        report = translate_video(get_backbone(), video, prompt, out, settings, int(size), int(frames),
                                 progress=lambda d, t: progress((d, t), desc="translating", unit="frames"))
    except V2VError as e:
        raise gr.Error(str(e)) from None
    report["timings"].pop("per_frame", None)
    return str(out), report


def build_translate_tab():
    with gr.Row():
        with gr.Column():
            video = gr.Video(label="Input clip", sources=["upload"])
            prompt = gr.Textbox(label="Prompt", value="a pencil sketch")
            with gr.Accordion("Advanced", open=False):
                size = gr.Slider(128, 512, value=256, step=64, label="Size (px)")
                frames = gr.Slider(1, MAX_FRAMES, value=24, step=1, label="Frames")
                strength = gr.Slider(0.1, 0.9, value=0.4, step=0.05, label="Strength")
                steps = gr.Slider(1, 4, value=2, step=1, label="LCM steps")
                seed = gr.Number(value=0, precision=0, label="Seed")
            go = gr.Button("Translate", variant="primary")
        with gr.Column():
            result = gr.Video(label="Translated (StreamDiffusion baseline)")
            report = gr.JSON(label="Report")
    if EXAMPLES:
        gr.Examples([[str(p), "a pencil sketch"] for p in EXAMPLES], [video, prompt])
    go.click(translate, [video, prompt, size, frames, strength, steps, seed], [result, report], api_name="translate")


with gr.Blocks(title="V2V Studio") as demo:
    gr.Markdown(f"# V2V Studio\nStreaming video-to-video translation. Backbone: `{BACKBONE}`.")
    with gr.Tab("Translate"):
        build_translate_tab()


def main():
    ap = argparse.ArgumentParser(description="V2V Studio web UI")
    ap.add_argument("--host", default=os.environ.get("V2V_HOST", "127.0.0.1"))
    ap.add_argument("--port", type=int, default=int(os.environ.get("V2V_PORT", "7860")))
    ap.add_argument("--share", action="store_true")
    args = ap.parse_args()
    demo.queue(default_concurrency_limit=1, max_size=20).launch(
        server_name=args.host, server_port=args.port, share=args.share, max_file_size="200mb", show_error=True,
        ssr_mode=False)


if __name__ == "__main__":
    main()
