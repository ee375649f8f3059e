"""What the studio's UI modules (app.py, ui_study.py) share: no tensor math, no model."""
from __future__ import annotations

import gradio as gr

from comparisons import service
from comparisons.registry import PRESETS
from v2v_core.errors import V2VError

METHOD_NAMES = [p.name for p in PRESETS]     # every registered method, in the registry's order

try:  # ZeroGPU on Hugging Face Spaces: the decorator that attaches a GPU for a call; a no-op decorator elsewhere
    import spaces

    GPU = spaces.GPU
except ImportError:
    def GPU(fn=None, **kw):
        return fn if fn is not None else (lambda f: f)


def call_service(fn, *args, **kw):
    """Run a service call; user mistakes become a gr.Error message and the app stays up."""
    try:
        return fn(*args, **kw)
    except V2VError as e:
        raise gr.Error(str(e)) from None


def prompt_box(value: str, backbone: str | None = None, **kw):
    """A prompt box that offers the backbone's prompts (the toy's styles, or examples for an open-vocabulary model) and
    takes any text; prompt_update() follows the backbone picker."""
    known, help_line = service.prompt_help(backbone)
    return gr.Dropdown(known, value=value, label="Prompt", allow_custom_value=True, filterable=True, info=help_line, **kw)


def prompt_update(backbone: str):
    known, help_line = service.prompt_help(backbone)
    return gr.update(choices=known, info=help_line)
