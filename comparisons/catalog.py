"""The backbones a visitor can pick, and whether each can run here, found without loading any.

    entries()                    the picker's list: the embedded model, SD-1.5 + LCM-LoRA, SD-turbo, the operator's
                                 V2V_BACKBONE and every folder or hub id in V2V_BACKBONES (comma-separated)
    unavailable_reason(entry)    None, or why it cannot run here (no GPU for a model that needs one, weights neither
                                 in the cache nor reachable, not loaded at start on ZeroGPU)
    prompt_help(key)             the prompt box's suggestions and help for that backbone

A backbone, once loaded, is shared by every session of the process (runner.get_backbone); what each session
picks is its own, and its streams keep their own state.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

# the speed a CPU gets from an SD-1.5-sized model (benchmarks/speed.py --backbones sd15-random --size 512, this
# project's 2-core machine, 2026-12-03): what "needs a GPU" means
SD_CPU_SECONDS_PER_FRAME = 43
# StreamV2V's and StreamDiffusion's own demo prompts: examples for an open-vocabulary model (any text works)
OPEN_PROMPTS = ("a pencil sketch", "a van gogh painting", "a watercolor painting", "a claymation character",
                "an anime character", "a marble statue")


@dataclass(frozen=True)
class Entry:
    key: str            # what v2v_core.backbones.load_backbone takes
    label: str          # what the picker shows
    needs_gpu: bool     # refused on a machine without one (an SD-sized model at 43 s a frame is not usable)
    about: str          # one line under the picker

    @property
    def open_vocabulary(self) -> bool:
        return self.key != "toy"


BUILTIN = (
    Entry("toy", "Embedded model (offline, CPU)", False,
          "the studio's own small model: a closed set of styles (a thermal image, a pencil sketch, ...), "
          "runs on a CPU"),
    Entry("sd15", "SD-1.5 + LCM-LoRA (StreamV2V's setting)", True,
          "stable-diffusion-v1-5 with the LCM-LoRA fused: the backbone of the StreamV2V paper; any prompt"),
    Entry("sd-turbo", "SD-turbo (StreamDiffusion's setting)", True,
          "stabilityai/sd-turbo, 1-4 steps without a LoRA: StreamDiffusion's fastest setting; any prompt"),
)


def _operator_entry(source: str) -> Entry:
    if source == "sd15-random":
        return Entry(source, "SD-1.5 layout, random weights (speed and memory only)", False,
                     "SD-1.5's architecture with seeded random weights: its output is noise, never an edit; for "
                     "timing and memory")
    return Entry(source, source, False, f"listed by this studio's operator (V2V_BACKBONES): {source}")


def listed(env=None) -> list[str]:
    """The operator's backbones: the configured one (V2V_BACKBONE, default the embedded model) and V2V_BACKBONES'."""
    env = os.environ if env is None else env
    names = [env.get("V2V_BACKBONE", "toy")] + [s.strip() for s in env.get("V2V_BACKBONES", "").split(",")]
    return list(dict.fromkeys(n for n in names if n))


def entries(env=None) -> list[Entry]:
    """The picker's list: the built-ins, then the operator's backbones not among them."""
    known = {e.key for e in BUILTIN}
    return list(BUILTIN) + [_operator_entry(n) for n in listed(env) if n not in known]


def entry(key: str) -> Entry:
    for e in entries():
        if e.key == key:
            return e
    return _operator_entry(key)


def on_zerogpu(env=None) -> bool:
    """Whether this process runs on a ZeroGPU Space (the platform sets SPACES_ZERO_GPU)."""
    env = os.environ if env is None else env
    return env.get("SPACES_ZERO_GPU", "").lower() in ("1", "true", "yes")


@functools.lru_cache(maxsize=1)
def has_gpu() -> bool:
    """A CUDA or Apple GPU (imports torch: called when a page opens, never when `app` is imported)."""
    if on_zerogpu():
        return True         # ZeroGPU attaches one for each decorated call
    import torch

    return torch.cuda.is_available() or bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def unavailable_reason(e: Entry, loaded_at_start: set[str] | None = None) -> str | None:
    """Why `e` cannot run here, in words a visitor understands; None when it can. Loads nothing.
    loaded_at_start: on ZeroGPU, the backbones loaded when the app started (no other may load later)."""
    from v2v_core.backbones import weights_missing

    if loaded_at_start is not None and e.key not in loaded_at_start:
        return ("not loaded when this Space started: on ZeroGPU every model loads before any GPU call; the operator "
                "lists it in V2V_BACKBONES to offer it")
    reasons = []
    if e.needs_gpu and not has_gpu():
        reasons.append(f"needs a GPU (about {SD_CPU_SECONDS_PER_FRAME} s a frame at 512 px on a 2-core CPU) and this "
                       "machine has none")
    missing = weights_missing(e.key)
    if missing:
        reasons.append(missing)
    return "; and ".join(reasons) or None


def prompt_help(key: str) -> tuple[list[str], str]:
    """(suggested prompts, help line) for the prompt boxes under backbone `key`. Needs no model."""
    if key == "toy":
        from v2v_core.toy.styles import STYLES

        return ([s.prompts[0] for s in STYLES],
                "The embedded toy model knows these styles; other text gives no meaningful edit.")
    if key == "sd15-random":
        return list(OPEN_PROMPTS), "Random weights: any prompt gives noise (this backbone is for timing and memory)."
    return list(OPEN_PROMPTS), "Any text: these are examples from the methods' own demos."
