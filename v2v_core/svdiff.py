"""SVDiff's spatial-aware temporal memory (Chen et al. 2024), METHODS.md section 3.

    method = SVDiff(SVDiffConfig(memory_size=8))       # the shipped checkpoint for the backbone
    stream = Stream(backbone, "a cartoon", settings, method)

After each transformer block (each `Transformer2DModel` of the UNet) a memory M of h x w tokens of the
block's width d joins the block's output tokens F in one multi-head self-attention over [F ; M]:
- the first N outputs, through an output projection initialised to ZERO, are added to F (so an
  untrained memory is an exact identity);
- the last h*w outputs are the memory of the next frame.
Initial memory (per video and per denoising step): m_ij = w0 + FFN([i - h/2, j - w/2]).

Installed as PyTorch forward hooks on diffusers' Transformer2DModel modules (no forward replaced;
`remove()` gives back the exact baseline). The learned weights belong to the method object (they are
configuration, shared read-only by every stream); the memories themselves live in a MemoryState owned
by each stream, keyed by (block, denoising step, guidance branch), so conditional and unconditional
passes (classifier-free guidance) never share one. The hook reads the calling stream's context from
the block's `cross_attention_kwargs`, so without a context it does nothing.

Trainer: v2v_core/svdiff_train.py (`python -m v2v_core train-svdiff`).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .config import param
from .errors import V2VError

if TYPE_CHECKING:  # torch loads on first use: importing the config (e.g. by `import app`) stays cheap
    import torch

MEMORY_SIZES = (1, 4, 8, 16)
CHECKPOINT_DIR = Path(__file__).parent / "svdiff_checkpoints"
FORMAT = "v2v-svdiff/1"
_HOOKS_ATTR = "_v2v_svdiff_hooks"


@dataclass
class SVDiffConfig:
    """SVDiff's knobs. memory_size is the paper's ablation (Table 3: 1x1, 8x8, 16x16)."""
    memory_size: int = param(8, "memory tokens per side (h = w): 1, 4, 8 or 16", choices=MEMORY_SIZES)
    memory_checkpoint: str = param("", "trained memory (.safetensors); empty: the shipped checkpoint for this "
                                       "backbone and size")


def shipped_checkpoint(backbone_name: str, memory_size: int) -> Path:
    return CHECKPOINT_DIR / f"{backbone_name}-{memory_size}x{memory_size}.safetensors"


def heads_for(dim: int) -> int:
    return 8 if dim >= 320 and dim % 8 == 0 else 4 if dim % 4 == 0 else 1


def transformer_blocks(unet) -> dict[str, int]:
    """Name -> channel width of every Transformer2DModel of the UNet, in module order."""
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    return {n: int(m.config.in_channels) for n, m in unet.named_modules() if isinstance(m, Transformer2DModel)}


def _key(block: str) -> str:
    return block.replace(".", "-")   # ModuleDict keys may not contain dots


def backbone_fingerprint(unet) -> str:
    """A short hash of the UNet's weights (conv_in and every self-attention query projection, rounded to
    float16 so fp16 and fp32 loads of the same weights agree). A memory is trained against one frozen
    backbone: the same name and widths with retrained weights must not pass as a match."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for name, p in unet.named_parameters():
        if name == "conv_in.weight" or name.endswith("attn1.to_q.weight"):
            h.update(name.encode())
            h.update(p.detach().to("cpu", torch.float16).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def build_memory(widths: dict[str, int], memory_size: int, seed: int = 0):
    """A ModuleDict of MemoryBlocks, one per transformer block (seeded initialisation)."""
    import torch

    from torch import nn

    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        block = memory_block_class()
        return nn.ModuleDict({_key(b): block(d, memory_size, heads_for(d)) for b, d in widths.items()})
    finally:
        torch.random.set_rng_state(state)


_MEMORY_BLOCK = None


def memory_block_class():
    """The MemoryBlock nn.Module class (defined on first use, so importing this module needs no torch)."""
    global _MEMORY_BLOCK
    if _MEMORY_BLOCK is not None:
        return _MEMORY_BLOCK
    import torch
    from torch import nn

    class MemoryBlock(nn.Module):
        """Memory attention of one transformer block: tokens F (B, N, d), memory M (B, h*w, d)."""

        def __init__(self, dim: int, size: int, heads: int):
            super().__init__()
            self.size, self.dim = size, dim
            self.w0 = nn.Parameter(torch.randn(dim) * 0.02)
            self.pos = nn.Sequential(nn.Linear(2, dim), nn.SiLU(), nn.Linear(dim, dim))
            self.norm = nn.LayerNorm(dim)
            self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
            self.proj_out = nn.Linear(dim, dim)
            nn.init.zeros_(self.proj_out.weight)
            nn.init.zeros_(self.proj_out.bias)

        def initial(self) -> torch.Tensor:
            """(h*w, d): w0 + FFN([i - h/2, j - w/2]) over the grid positions."""
            h = w = self.size
            p = self.w0
            i, j = torch.meshgrid(torch.arange(h, device=p.device), torch.arange(w, device=p.device), indexing="ij")
            grid = torch.stack([i - h / 2, j - w / 2], -1).reshape(h * w, 2).to(p.dtype)
            return self.w0 + self.pos(grid)

        def forward(self, f: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x = self.norm(torch.cat([f, m], dim=1))
            out, _ = self.attn(x, x, x, need_weights=False)
            n = f.shape[1]
            return f + self.proj_out(out[:, :n]), out[:, n:]

    _MEMORY_BLOCK = MemoryBlock
    return MemoryBlock


# -- checkpoints ----------------------------------------------------------------------------------------
def save_checkpoint(path, memory, meta: dict, optimizer=None, half: bool = False) -> Path:
    """safetensors with a JSON header (memory size, backbone id, channel widths, heads, steps, ...).
    With an optimizer its Adam moments are stored too (resumable); `half` writes float16 weights only
    (the shipped form)."""
    import torch
    from safetensors.torch import save_file

    dt = torch.float16 if half else torch.float32
    tensors = {f"memory.{k}": v.detach().to("cpu", dt).contiguous() for k, v in memory.state_dict().items()}
    if optimizer is not None and not half:
        names = {id(p): k for k, p in memory.named_parameters()}
        for group in optimizer.param_groups:
            for p in group["params"]:
                st = optimizer.state.get(p, {})
                for s in ("exp_avg", "exp_avg_sq"):
                    if s in st:
                        tensors[f"optim.{names[id(p)]}.{s}"] = st[s].detach().cpu().contiguous()
                if "step" in st:
                    meta = {**meta, "adam_step": int(st["step"])}
    header = {"format": FORMAT, **{k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=header)
    os.replace(tmp, path)
    return path


def read_header(path) -> dict:
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise V2VError(f"SVDiff checkpoint {p} does not exist: train one with `python -m v2v_core train-svdiff` "
                       "or leave --memory-checkpoint empty to use the shipped one.")
    try:
        with safe_open(str(p), framework="pt") as f:
            raw = f.metadata() or {}
    except Exception as e:  # noqa: BLE001 - any unreadable file is a user mistake here
        raise V2VError(f"{p} is not a safetensors file ({e}).") from None
    if raw.get("format") != FORMAT:
        raise V2VError(f"{p} is not an SVDiff memory checkpoint of this project (format {raw.get('format')!r}).")
    out = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def load_checkpoint(path, backbone_name: str, widths: dict[str, int], fingerprint: str | None = None
                    ) -> tuple[dict, dict, dict]:
    """(memory state dict, header, optimizer moments). Refuses a checkpoint made for another backbone,
    or (when both sides have a fingerprint) for other weights of this one."""
    from safetensors.torch import load_file

    head = read_header(path)
    theirs = {str(k): int(v) for k, v in head.get("widths", {}).items()}
    stale = fingerprint is not None and head.get("backbone_fingerprint") not in (None, fingerprint)
    if head.get("backbone") != backbone_name or theirs != widths or stale:
        why = (f"it was trained for backbone '{head.get('backbone')}'" if head.get("backbone") != backbone_name
               else "its transformer blocks' channel widths differ from this backbone's" if theirs != widths
               else "it was trained against other weights of this backbone (retrained since)")
        raise V2VError(f"SVDiff checkpoint {path} does not fit backbone '{backbone_name}': {why}. Use a checkpoint "
                       f"trained on '{backbone_name}' (python -m v2v_core train-svdiff --backbone {backbone_name} ...).")
    tensors = load_file(str(path))
    mem = {k[len("memory."):]: v.float() for k, v in tensors.items() if k.startswith("memory.")}
    opt = {k[len("optim."):]: v for k, v in tensors.items() if k.startswith("optim.")}
    return mem, head, opt


# -- per-stream state -------------------------------------------------------------------------------------
class MemoryState:
    """The memories of ONE stream: (block, step, branch) -> (h*w, d) tokens, plus time spent."""

    def __init__(self):
        self.memory: dict[tuple, torch.Tensor] = {}
        self._seconds = 0.0

    def pop_seconds(self) -> float:
        s, self._seconds = self._seconds, 0.0
        return s

    def detach(self) -> None:
        """Truncated backpropagation: keep the values, cut the graph (segment boundaries)."""
        self.memory = {k: v.detach() for k, v in self.memory.items()}

    def forget(self, slot) -> None:
        """Drop the memories of one slot (a new video starts there)."""
        self.memory = {k: v for k, v in self.memory.items() if k[1:] != tuple(slot)}

    def accounting(self) -> dict:
        return {"bank_tokens": sum(t.shape[0] for t in self.memory.values()),
                "bank_bytes": sum(t.numel() * t.element_size() for t in self.memory.values())}


def through_memory(mod, hs: torch.Tensor, mems: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A block's output hs (B, C, H, W) through its MemoryBlock with memories mems (B, h*w, d): (the new output, same
    layout, channels-last strides; the updated memories). Used by the PyTorch hooks and the OpenVINO graph alike."""
    b, c, h, w = (int(s) for s in hs.shape)                     # int(): constants when traced
    f, m = mod(hs.permute(0, 2, 3, 1).reshape(b, h * w, c), mems)
    return f.reshape(b, h, w, c).permute(0, 3, 1, 2), m


class _Call:
    """What one UNet call hands to the hooks: the method's weights, the stream's state and, per batch
    item, its memory slot (denoising step, guidance branch)."""

    def __init__(self, memory, state: MemoryState, slots: list[tuple]):
        self.memory, self.state, self.slots = memory, state, slots

    def self_attention(self, *args):
        return None      # stock self-attention

    def after_block(self, block: str, hs: torch.Tensor) -> torch.Tensor:
        import torch

        t0 = time.perf_counter()
        mod = self.memory[_key(block)]
        init = None
        mems = []
        for slot in self.slots:
            m = self.state.memory.get((block, *slot))
            if m is None:
                init = mod.initial().to(hs.dtype) if init is None else init
                m = init
            mems.append(m)
        out, m = through_memory(mod, hs, torch.stack(mems))
        for slot, mi in zip(self.slots, m):
            self.state.memory[(block, *slot)] = mi
        self.state._seconds += time.perf_counter() - t0
        return out


def _make_hook(name: str):
    def hook(module, args, kwargs, output):
        ctx = (kwargs.get("cross_attention_kwargs") or {}).get("v2v")
        if ctx is None or not hasattr(ctx, "after_block"):
            return None
        if isinstance(output, tuple):
            return (ctx.after_block(name, output[0]), *output[1:])
        output.sample = ctx.after_block(name, output.sample)
        return output
    return hook


def install(unet) -> None:
    """Forward hooks on every Transformer2DModel (idempotent), plus the routed attention processors
    so the stream context reaches the blocks through cross_attention_kwargs without warnings."""
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    from . import attention

    attention.add_block_hooks(unet, _HOOKS_ATTR, Transformer2DModel, _make_hook, pre=False)


def remove(unet) -> None:
    from . import attention

    attention.remove_block_hooks(unet, _HOOKS_ATTR)


class SVDiff:
    """The method plug-in. `memory` (a ModuleDict of MemoryBlocks) is built for a backbone on install:
    from `config.memory_checkpoint`, else the shipped checkpoint for the backbone and size, else (only
    for random-weight backbones, whose output is noise anyway: speed figures) untrained."""
    online = True

    def __init__(self, config: SVDiffConfig | None = None, name: str = "svdiff", memory=None):
        from .config import validate

        self.config = config or SVDiffConfig()
        validate(self.config)
        self.name = name
        self.memory = memory
        self.header: dict = {}
        self.checkpoint: str | None = None
        self._for: str | None = None

    def install(self, backbone) -> None:
        install(backbone.unet)
        if self.memory is not None and self._for in (None, backbone.name):
            self.memory.to(device=backbone.device, dtype=backbone.dtype)
            self._for = backbone.name
            return
        widths = transformer_blocks(backbone.unet)
        path = self.config.memory_checkpoint or shipped_checkpoint(backbone.name, self.config.memory_size)
        memory = build_memory(widths, self.config.memory_size)
        if Path(path).is_file() or self.config.memory_checkpoint:
            state, self.header, _ = load_checkpoint(path, backbone.name, widths, backbone_fingerprint(backbone.unet))
            if int(self.header.get("memory_size", -1)) != self.config.memory_size:
                raise V2VError(f"SVDiff checkpoint {path} holds a {self.header.get('memory_size')}x"
                               f"{self.header.get('memory_size')} memory, not {self.config.memory_size}x"
                               f"{self.config.memory_size}: pick the matching --memory-size.")
            memory.load_state_dict(state)
            self.checkpoint = str(path)
        elif backbone.makes_edits:
            raise V2VError(f"No trained SVDiff memory for backbone '{backbone.name}' at {self.config.memory_size}x"
                           f"{self.config.memory_size}: train one with `python -m v2v_core train-svdiff --backbone "
                           f"{backbone.name} --memory-size {self.config.memory_size} ...` and pass --memory-checkpoint.")
        memory.to(device=backbone.device, dtype=backbone.dtype).eval().requires_grad_(False)
        self.memory, self._for = memory, backbone.name

    def new_state(self, stream) -> MemoryState:
        return MemoryState()

    def unet_kwargs(self, state: MemoryState, frames: list[int], steps: list[int]) -> dict:
        # the engine runs LCM steps without classifier-free guidance: every pass is the conditional one
        return {"v2v": _Call(self.memory, state, [(s, "cond") for s in steps])}
