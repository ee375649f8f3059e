"""StreamV2V's feature bank (Liang et al., ICLR 2025): extended self-attention (EA), feature fusion
(FF) and dynamic merging (DyMe), plus the queue bank and window attention (METHODS.md sections 1-2).

    method = StreamV2V(StreamV2VConfig())              # EA + FF + DyMe, the paper's defaults
    stream = Stream(backbone, "a cartoon", settings, method)

Inside every self-attention layer (attn1), per stream and per denoising step, a bank holds keys K_b,
values V_b and outputs O_b of past frames (M tokens of C channels):
- EA: the frame attends to [K ; K_b], [V ; V_b].
- FF (low-resolution decoder layers): each output token moves towards its most similar bank output
  token, o <- (1 - s) o + s o_b, where their cosine similarity is at least tau.
- Bank start: frame 0's own K, V, O. Every `interval` frames the current frame's tokens enter the
  bank: DyMe merges bank + new tokens back to a constant size; the queue keeps the last max_frames
  frames; "none" keeps nothing. Which frames: `bank_schedule` (input-frame: frames 0, 4, 8, ... at every
  denoising step; reference: the released code's counter, see the field).
The pure tensor math (dynamic_merge, feature_fusion) is at the top and tested by hand; the wiring
goes through v2v_core.attention's routed processors; all state lives in FeatureBankState, owned by
the stream.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .config import param

if TYPE_CHECKING:  # torch loads on first use, so importing the config (e.g. by `import app`) stays cheap
    import torch


# -- pure tensor math --------------------------------------------------------------------------------
def dynamic_merge(k: torch.Tensor, v: torch.Tensor, o: torch.Tensor, ratio: float = 0.5,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DyMe: merge T tokens down to T - int(ratio * T).

    k, v, o: (T, C) tokens (bank then new). A random set A of r = int(ratio * T) tokens is merged
    into the rest, B: each A token picks the B token whose KEY is most similar (cosine); every B token
    becomes the mean of itself and the A tokens that picked it. K, V and O share one assignment.
    `generator` (CPU) makes the split reproducible."""
    import torch
    import torch.nn.functional as F

    t = k.shape[0]
    r = int(ratio * t)
    if r <= 0:
        return k, v, o
    perm = torch.randperm(t, generator=generator).to(k.device)
    a, b = perm[:r], perm[r:]
    sim = F.normalize(k[a].float(), dim=-1) @ F.normalize(k[b].float(), dim=-1).T   # (r, T - r)
    dst = sim.argmax(dim=-1)                                                          # (r,) index into B
    count = torch.ones(t - r, device=k.device, dtype=torch.float32).index_add_(0, dst, torch.ones(r, device=k.device))

    def merge(x):
        acc = x[b].float().index_add(0, dst, x[a].float())
        return (acc / count[:, None]).to(x.dtype)

    return merge(k), merge(v), merge(o)


def feature_fusion(o: torch.Tensor, bank_o: torch.Tensor, strength: float = 0.8, threshold: float = 0.98) -> torch.Tensor:
    """FF: o (N, C), bank_o (M, C). Tokens whose best cosine match in the bank reaches `threshold`
    become (1 - strength) o + strength o_match; the others are returned bit-identical."""
    import torch
    import torch.nn.functional as F

    cos = F.normalize(o.float(), dim=-1) @ F.normalize(bank_o.float(), dim=-1).T      # (N, M)
    best, idx = cos.max(dim=-1)
    fused = (1 - strength) * o + strength * bank_o[idx]
    return torch.where((best >= threshold)[:, None], fused, o)


# -- configuration -----------------------------------------------------------------------------------
@dataclass
class StreamV2VConfig:
    """StreamV2V's switches (reference defaults). Important: extended_attention, feature_fusion, bank.
    To tinker with: ff_strength / ff_threshold (higher threshold = fewer, safer fusions), interval
    (how often the bank takes a new frame), merge_ratio (DyMe), max_frames (queue)."""
    extended_attention: bool = param(True, "EA: attend to the bank's keys and values too", flag="--ea")
    feature_fusion: bool = param(True, "FF: pull output tokens towards similar bank outputs", flag="--ff")
    ff_strength: float = param(0.8, "FF blend weight of the matched bank token", lo=0.0, hi=1.0, step=0.05)
    ff_threshold: float = param(0.98, "FF only where cosine similarity reaches this", lo=0.0, hi=1.0, step=0.01)
    ff_layers: str = param("mid_block,up_blocks.0,up_blocks.1",
                           "comma-separated layer-name prefixes where FF applies (low-resolution decoder)")
    bank: str = param("dyme", "dyme: merge to constant size; queue: last max_frames frames; none: no bank",
                      choices=("dyme", "queue", "none"))
    interval: int = param(4, "add the current frame to the bank every N frames", lo=1, hi=64, step=1)
    merge_ratio: float = param(0.5, "DyMe: share of bank+new tokens merged away", lo=0.1, hi=0.9, step=0.05)
    max_frames: int = param(4, "queue bank: frames kept", lo=1, hi=16, step=1)
    bank_schedule: str = param("input-frame", "which frames enter the bank. input-frame: every interval-th input frame "
                                              "(0, 4, 8, ...) at every denoising step, as the paper describes it; "
                                              "reference: the released code's one counter per UNet call, shared by "
                                              "the stream batch's slots and advanced by its warm-up calls: at k "
                                              "steps, step s banks the frames f with f + k + s divisible by interval "
                                              "(2 steps: step 0 banks 2, 6, 10, ..., step 1 banks 1, 5, 9, ...)",
                               choices=("input-frame", "reference"))


WINDOW_ATTENTION = StreamV2VConfig(extended_attention=True, feature_fusion=False, bank="queue", interval=1, max_frames=3)


# -- per-stream state ----------------------------------------------------------------------------------
class _Bank:
    """Tokens of one (layer, denoising step): DyMe keeps one merged set, the queue a list of frames."""

    def __init__(self):
        self.k = self.v = self.o = None          # (M, C) each (DyMe) or concatenation of the queue
        self.queue: deque | None = None

    @property
    def tokens(self) -> int:
        return 0 if self.k is None else self.k.shape[0]

    @property
    def nbytes(self) -> int:
        return 0 if self.k is None else sum(t.numel() * t.element_size() for t in (self.k, self.v, self.o))


class FeatureBankState:
    """Everything StreamV2V remembers for ONE stream: a bank per (self-attention layer, step), the
    stream's own random generator (DyMe's split), the time spent in bank operations, and an optional
    correspondence recorder."""

    def __init__(self, config: StreamV2VConfig, seed: int = 0, recorder=None, steps: int = 1):
        import torch

        self.config = config
        self.steps = steps                      # the stream's denoising steps (the reference schedule counts them)
        self.banks: dict[tuple[str, int], _Bank] = {}
        self.generator = torch.Generator().manual_seed(int(seed))
        self.recorder = recorder
        self._seconds = 0.0

    def reset(self):
        self.banks.clear()
        self._seconds = 0.0

    def pop_seconds(self) -> float:
        s, self._seconds = self._seconds, 0.0
        return s

    def accounting(self) -> dict:
        return {"bank_tokens": sum(b.tokens for b in self.banks.values()),
                "bank_bytes": sum(b.nbytes for b in self.banks.values())}

    def takes(self, frame: int, step: int) -> bool:
        """Whether input frame `frame` at denoising step `step` enters a bank that has started (bank_schedule)."""
        cfg = self.config
        if cfg.bank_schedule == "reference":
            return (frame + self.steps + step) % cfg.interval == 0
        return frame % cfg.interval == 0

    def update(self, key, k, v, o, frame: int):
        """Add a frame's tokens (N, C) to the bank of `key` = (layer, step), by the configured rule. A bank that
        nothing reads (EA and FF both off) is not kept: that setting holds no memory, and reports none."""
        import torch

        cfg = self.config
        if cfg.bank == "none" or not (cfg.extended_attention or cfg.feature_fusion):
            return
        bank = self.banks.get(key)
        if bank is None:                         # bank start: the first frame's own tokens
            bank = self.banks[key] = _Bank()
            if cfg.bank == "queue":
                bank.queue = deque(maxlen=cfg.max_frames)
        elif not self.takes(frame, key[1]):
            return
        if cfg.bank == "queue":
            bank.queue.append((k, v, o))
            bank.k, bank.v, bank.o = (torch.cat([f[i] for f in bank.queue]) for i in range(3))
        elif bank.k is None:
            bank.k, bank.v, bank.o = k, v, o
        else:
            bank.k, bank.v, bank.o = dynamic_merge(torch.cat([bank.k, k]), torch.cat([bank.v, v]),
                                                   torch.cat([bank.o, o]), cfg.merge_ratio, self.generator)


def ff_prefixes(config: StreamV2VConfig) -> tuple[str, ...]:
    """The layer-name prefixes where FF applies, from the comma-separated config field."""
    return tuple(p.strip() for p in config.ff_layers.split(",") if p.strip())


class _Call:
    """The context one UNet call passes to the routed processors (cross_attention_kwargs["v2v"])."""

    def __init__(self, config: StreamV2VConfig, state: FeatureBankState, frames: list[int], steps: list[int],
                 ff_prefixes: tuple[str, ...]):
        self.config, self.state, self.frames, self.steps = config, state, frames, steps
        self.ff_prefixes = ff_prefixes

    def self_attention(self, name, attn, hidden_states, attention_mask):
        import torch

        from . import attention

        cfg, st = self.config, self.state
        p = attention.project(attn, hidden_states)                      # (B, N, C) each
        outs = []
        for b, (frame, step) in enumerate(zip(self.frames, self.steps)):
            bank = st.banks.get((name, step))
            q, k, v = p.q[b:b + 1], p.k[b:b + 1], p.v[b:b + 1]
            if cfg.extended_attention and bank is not None and bank.tokens:
                k = torch.cat([k, bank.k[None]], dim=1)                 # (1, N + M, C)
                v = torch.cat([v, bank.v[None]], dim=1)
            o = attention.attend(attn, q, k, v, attention_mask)[0]      # (N, C_out)
            t0 = time.perf_counter()
            fuse = cfg.feature_fusion and bank is not None and bank.tokens and name.startswith(self.ff_prefixes)
            bank_o = bank.o if fuse else None                           # the bank of past frames, before this update
            # the bank takes the output BEFORE fusion (the reference clones it first): banking the fused
            # output would make fusion compound over frames
            st.update((name, step), p.k[b], p.v[b], o, frame)
            if fuse:
                o = feature_fusion(o, bank_o, cfg.ff_strength, cfg.ff_threshold)
            st._seconds += time.perf_counter() - t0
            if st.recorder is not None:
                st.recorder.record(name, frame, step, p.q[b], p.k[b])
            outs.append(o)
        return attention.finish(attn, torch.stack(outs), hidden_states)


class StreamV2V:
    """The method plug-in: routed processors on the shared UNet + a FeatureBankState per stream."""
    online = True

    def __init__(self, config: StreamV2VConfig | None = None, name: str = "streamv2v", recorder_factory=None):
        from .config import validate

        self.config = config or StreamV2VConfig()
        validate(self.config)
        self.name = name
        self.recorder_factory = recorder_factory
        self.ff_prefixes = ff_prefixes(self.config)

    def install(self, backbone) -> None:
        from . import attention

        attention.install(backbone.unet)

    def new_state(self, stream) -> FeatureBankState:
        rec = self.recorder_factory() if self.recorder_factory is not None else None
        return FeatureBankState(self.config, stream.settings.seed, rec, stream.settings.steps)

    def unet_kwargs(self, state: FeatureBankState, frames: list[int], steps: list[int]) -> dict:
        return {"v2v": _Call(self.config, state, frames, steps, self.ff_prefixes)}
