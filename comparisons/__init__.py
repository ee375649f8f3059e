"""V2V Studio comparisons: method registry, side-by-side runner, evaluation and user-study store.

Sits between the core (v2v_core) and the UI (app.py); never imports gradio. Filled in as methods land.
"""
