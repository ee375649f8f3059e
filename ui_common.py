"""What the studio's UI modules (app.py, ui_study.py) share: no tensor math, no model."""
from __future__ import annotations

import gradio as gr

from comparisons.registry import PRESETS
from v2v_core.errors import V2VError

METHOD_NAMES = [p.name for p in PRESETS]     # every registered method, in the registry's order


def call_service(fn, *args, **kw):
    """Run a service call; user mistakes become a gr.Error message and the app stays up."""
    try:
        return fn(*args, **kw)
    except V2VError as e:
        raise gr.Error(str(e)) from None
