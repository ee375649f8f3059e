"""Translate a whole clip file to a file: the one function the CLI, the app and the tests call."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from .backbones import Backbone
from .engine import Stream, StreamSettings, fps_after_warmup, mean_timings
from .errors import V2VError
from .video import VideoWriter, iter_frames, probe


def translate_video(backbone: Backbone, input_path: str | Path, prompt: str, out_path: str | Path,
                    settings: StreamSettings | None = None, size: int = 256, frames: int | None = None,
                    keep_aspect: bool = False, method=None, method_name: str = "streamdiffusion",
                    progress: Callable[[int, int | None], None] | None = None) -> dict:
    """Run one stream over the clip, write H.264 mp4 to out_path, return the report dict
    (keys: frames, fps, settings, timings, ...). progress(done, total) is called per frame."""
    settings = settings or StreamSettings()
    if not prompt or not prompt.strip():
        raise V2VError("The prompt is empty: describe the output, e.g. \"a pencil sketch\".")
    if frames is not None and frames < 1:
        raise V2VError("frames must be at least 1.")
    info = probe(input_path)
    total = min(frames, info.frames) if (frames and info.frames) else (frames or info.frames)
    if method is not None and not getattr(method, "online", True):
        return _translate_offline(backbone, input_path, prompt, out_path, settings, size, frames, keep_aspect, method,
                                  method_name, progress, info, total)
    stream = Stream(backbone, prompt, settings, method)
    with VideoWriter(out_path, fps=info.fps) as w:
        for i, frame in enumerate(stream.run(iter_frames(input_path, frames, size, keep_aspect, info))):
            w.write(frame)
            if progress is not None:
                progress(i + 1, total)
    return {
        "input": str(input_path), "output": str(out_path), "frames": stream.frames_out,
        "fps": fps_after_warmup(stream.timings),
        "settings": {"backbone": backbone.name, "method": method_name, "prompt": prompt, "size": size,
                     "device": str(backbone.device), "dtype": str(backbone.dtype).replace("torch.", ""),
                     "t_list": stream.t_list, **dataclasses.asdict(settings),
                     "method_config": dataclasses.asdict(method.config) if hasattr(method, "config") else {}},
        "timings": {"mean": mean_timings(stream.timings), "per_frame": stream.timings},
        "backbone_makes_edits": backbone.makes_edits,
        "bank_bytes": [t.get("bank_bytes", 0) for t in stream.timings],
        "bank_tokens": [t.get("bank_tokens", 0) for t in stream.timings],
    }


def _translate_offline(backbone, input_path, prompt, out_path, settings, size, frames, keep_aspect, method, method_name,
                       progress, info, total) -> dict:
    """Offline methods (TokenFlow): method.check_memory runs from the probed size BEFORE any frame is
    decoded; then the whole clip goes through method.run and is written."""
    import time

    from .video import fitted_size

    if total is None:
        raise V2VError("The container does not say how many frames it holds; pass --frames for an offline method.")
    w, h = fitted_size(info.width, info.height, size, keep_aspect)
    estimate = method.check_memory(backbone, total, h, w)
    clip = list(iter_frames(input_path, frames, size, keep_aspect, info))

    def on_event(e):
        if progress is not None and e["stage"] == "propagate":
            progress((e["step"] - 1) * len(clip) + e["done"], settings.steps * len(clip))

    t0 = time.perf_counter()
    out = method.run(backbone, clip, prompt, settings, on_event)
    seconds = time.perf_counter() - t0
    with VideoWriter(out_path, fps=info.fps) as wr:
        for frame in out:
            wr.write(frame)
    per = seconds / max(len(out), 1)
    return {
        "input": str(input_path), "output": str(out_path), "frames": len(out), "fps": len(out) / seconds,
        "settings": {"backbone": backbone.name, "method": method_name, "prompt": prompt, "size": size,
                     "device": str(backbone.device), "dtype": str(backbone.dtype).replace("torch.", ""),
                     **dataclasses.asdict(settings), "method_config": dataclasses.asdict(method.config)},
        "timings": {"mean": {"total": per}, "seconds": seconds, "per_frame": []},
        "backbone_makes_edits": backbone.makes_edits,
        "memory_estimate_bytes": estimate,
        "bank_bytes": [], "bank_tokens": [],
    }
