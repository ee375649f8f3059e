"""Temporal shift (TSM-style), a training-free baseline named by the SVDiff paper (METHODS.md s.2).

In each transformer block, the first `fraction` of the channels of the current frame's hidden states
are replaced by the same channels of the previous frame's hidden states (cached per block and
denoising step, in the stream's state). Installed as forward pre-hooks on diffusers'
BasicTransformerBlock modules (PyTorch's hook API, no forward replaced); the hook reads the calling
stream's context from the block's own `cross_attention_kwargs`, so without a context it does nothing.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .config import param

if TYPE_CHECKING:  # torch loads on first use: importing the config stays cheap
    import torch

_HOOKS_ATTR = "_v2v_temporal_shift_hooks"


@dataclass
class TemporalShiftConfig:
    fraction: float = param(0.125, "share of channels taken from the previous frame", lo=0.0, hi=0.5, step=0.025)


class TemporalShiftState:
    def __init__(self):
        self.cache: dict[tuple[str, int], torch.Tensor] = {}     # (block, step) -> (N, C) previous hidden states
        self._seconds = 0.0

    def pop_seconds(self) -> float:
        s, self._seconds = self._seconds, 0.0
        return s

    def accounting(self) -> dict:
        return {"bank_tokens": sum(t.shape[0] for t in self.cache.values()),
                "bank_bytes": sum(t.numel() * t.element_size() for t in self.cache.values())}


def shift(hidden_states: torch.Tensor, prev: list, fraction: float) -> torch.Tensor:
    """hidden_states (B, N, C) with, for each batch item b whose prev[b] (N, C) is not None, its first
    round(fraction * C) channels taken from prev[b]. Used by the PyTorch hooks and the OpenVINO graph alike."""
    c = int(round(fraction * int(hidden_states.shape[-1])))     # int(): a constant when traced
    if not c or all(p is None for p in prev):
        return hidden_states
    out = hidden_states.clone()
    for b, p in enumerate(prev):
        if p is not None:
            out[b, :, :c] = p[:, :c]
    return out


class _Call:
    def __init__(self, config, state, frames, steps):
        self.config, self.state, self.frames, self.steps = config, state, frames, steps

    def self_attention(self, *args):
        return None      # stock attention

    def shift(self, block: str, hidden_states: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        prev = [self.state.cache.get((block, step)) for step in self.steps]
        for b, step in enumerate(self.steps):
            self.state.cache[(block, step)] = hidden_states[b].detach()
        out = shift(hidden_states, prev, self.config.fraction)
        self.state._seconds += time.perf_counter() - t0
        return out


def _make_hook(name: str):
    def hook(module, args, kwargs):
        ctx = (kwargs.get("cross_attention_kwargs") or {}).get("v2v")
        if ctx is None or not hasattr(ctx, "shift"):
            return None
        hs = args[0] if args else kwargs["hidden_states"]
        hs = ctx.shift(name, hs)
        if args:
            return (hs, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hs}
    return hook


def install(unet) -> None:
    """Pre-hooks on every BasicTransformerBlock (idempotent), plus routed attention processors so the
    context reaches the blocks without warnings."""
    from diffusers.models.attention import BasicTransformerBlock

    from . import attention

    attention.add_block_hooks(unet, _HOOKS_ATTR, BasicTransformerBlock, _make_hook, pre=True)


def remove(unet) -> None:
    from . import attention

    attention.remove_block_hooks(unet, _HOOKS_ATTR)


class TemporalShift:
    online = True

    def __init__(self, config: TemporalShiftConfig | None = None, name: str = "temporal-shift"):
        self.config = config or TemporalShiftConfig()
        self.name = name

    def install(self, backbone) -> None:
        install(backbone.unet)

    def new_state(self, stream) -> TemporalShiftState:
        return TemporalShiftState()

    def unet_kwargs(self, state, frames, steps) -> dict:
        return {"v2v": _Call(self.config, state, frames, steps)}
