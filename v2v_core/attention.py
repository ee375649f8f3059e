"""Routing attention processor: how per-stream temporal methods reach the shared UNet.

`install(unet)` sets one `RoutedAttnProcessor` per attention layer through diffusers' own
`unet.set_attn_processor`. A processor holds only its layer name (configuration). At call time the
UNet's `cross_attention_kwargs={"v2v": ctx}` hands it the calling stream's context; for a
self-attention layer the processor asks `ctx.self_attention(...)` for the output, and without a
context (or for cross-attention) it runs diffusers' stock `AttnProcessor2_0` unchanged. So:
- streams of different methods can share one loaded UNet, each passing its own context;
- no state lives in processors, modules or globals;
- `remove(unet)` restores the stock processors, and with no context the output is exactly stock.

`self_attention_parts` is AttnProcessor2_0's self-attention path split open, so methods can add
keys/values (extended attention) or edit the output (feature fusion) without re-deriving it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

_STOCK = AttnProcessor2_0()


class RoutedAttnProcessor:
    """Stock attention, unless the call carries a stream context that handles self-attention."""

    def __init__(self, name: str):
        self.name = name  # e.g. "up_blocks.1.attentions.0.transformer_blocks.0.attn1"

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 v2v=None):
        if v2v is not None and encoder_hidden_states is None and hidden_states.ndim == 3 and attn.group_norm is None \
                and attn.spatial_norm is None:
            out = v2v.self_attention(self.name, attn, hidden_states, attention_mask)
            if out is not None:
                return out
        return _STOCK(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


def install(unet) -> None:
    """Route every attention layer (idempotent: applying twice is the same as once)."""
    procs = unet.attn_processors
    if all(isinstance(p, RoutedAttnProcessor) for p in procs.values()):
        return
    unet.set_attn_processor({k: RoutedAttnProcessor(k[: -len(".processor")]) for k in procs})


def remove(unet) -> None:
    """Back to diffusers' stock processors."""
    unet.set_attn_processor(AttnProcessor2_0())


def add_block_hooks(unet, attr: str, module_class, make_hook, pre: bool) -> None:
    """PyTorch hooks (with kwargs) on every `module_class` module of the UNet, made by make_hook(name)
    and kept under `unet.<attr>` (idempotent), plus the routed processors, so a method's stream
    context reaches the blocks through cross_attention_kwargs without warnings."""
    install(unet)
    if getattr(unet, attr, None):
        return
    register = "register_forward_pre_hook" if pre else "register_forward_hook"
    setattr(unet, attr, [getattr(m, register)(make_hook(n), with_kwargs=True)
                         for n, m in unet.named_modules() if isinstance(m, module_class)])


def remove_block_hooks(unet, attr: str) -> None:
    for h in getattr(unet, attr, None) or []:
        h.remove()
    setattr(unet, attr, None)


@dataclass
class QKV:
    q: torch.Tensor   # (B, N, C) projected queries (before the head split)
    k: torch.Tensor   # (B, N, C)
    v: torch.Tensor   # (B, N, C)


def project(attn: Attention, hidden_states: torch.Tensor) -> QKV:
    return QKV(attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states))


def _heads(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    b, n, c = x.shape
    return x.view(b, n, attn.heads, c // attn.heads).transpose(1, 2)  # (B, heads, N, d)


def attend(attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attention_mask=None) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d)) V per head, then the output projection: AttnProcessor2_0's math.
    q: (B, N, C); k, v: (B, M, C) with M >= N allowed (extended attention). Returns (B, N, C_out)."""
    b, n, _ = q.shape
    qh, kh, vh = _heads(attn, q), _heads(attn, k), _heads(attn, v)
    if attn.norm_q is not None:
        qh = attn.norm_q(qh)
    if attn.norm_k is not None:
        kh = attn.norm_k(kh)
    if attention_mask is not None:
        attention_mask = attn.prepare_attention_mask(attention_mask, k.shape[1], b)
        attention_mask = attention_mask.view(b, attn.heads, -1, attention_mask.shape[-1])
    out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=attention_mask, dropout_p=0.0, is_causal=False)
    out = out.transpose(1, 2).reshape(b, n, -1).to(q.dtype)
    return output_projection(attn, out)


def output_projection(attn: Attention, out: torch.Tensor) -> torch.Tensor:
    return attn.to_out[1](attn.to_out[0](out))


def finish(attn: Attention, out: torch.Tensor, hidden_states: torch.Tensor) -> torch.Tensor:
    """What AttnProcessor2_0 does after the output projection: the optional residual, then the
    rescale (neither is used by SD's transformer blocks, kept for exactness)."""
    if attn.residual_connection:
        out = out + hidden_states
    return out / attn.rescale_output_factor
