"""What OpenVINO converts (v2v_core.openvino_runtime converts, caches and runs it): the autoencoder's halves, the text
encoder, and the UNet as one traced module per method family, each method's state as extra inputs and what its update
needs as extra outputs. Each family's graph context (GraphBankCall, GraphShiftCall, GraphMemoryCall, TokenFlow's own
contexts or GraphPropagateCall) reaches the routed attention processors and block hooks through
cross_attention_kwargs, as the method's PyTorch context does; the state itself stays the stream's."""
from __future__ import annotations

import torch

from .backbones import Backbone


class Encode(torch.nn.Module):
    def __init__(self, bb: Backbone):
        super().__init__()
        self.bb, self.vae = bb, bb.vae          # the autoencoder registered: its weights are the graph's

    def forward(self, x):
        return Backbone.encode_images(self.bb, x)


class Decode(torch.nn.Module):
    def __init__(self, bb: Backbone):
        super().__init__()
        self.bb, self.vae = bb, bb.vae

    def forward(self, z):
        return Backbone.decode_latents(self.bb, z)


class Text(torch.nn.Module):
    def __init__(self, text_encoder):
        super().__init__()
        self.te = text_encoder

    def forward(self, ids):
        return self.te(ids)[0]


class PlainUNet(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, x, t, text):
        return self.unet(x, t, encoder_hidden_states=text).sample


class GraphBankCall:
    """The routed processors' context inside the traced StreamV2V graph: extended attention and feature fusion on
    the bank tensors the graph was given (layer -> (K, V, O) or None), the frame's (k, v, o) kept per layer."""

    def __init__(self, config, ff_prefixes, banks: dict):
        self.config, self.ff_prefixes, self.banks = config, ff_prefixes, banks
        self.kvo: dict[str, tuple] = {}

    def self_attention(self, name, attn, hidden_states, mask):
        from . import attention
        from .streamv2v import feature_fusion

        cfg = self.config
        p = attention.project(attn, hidden_states)
        bank = self.banks.get(name)
        k, v = p.k, p.v
        if bank is not None and cfg.extended_attention:
            k, v = torch.cat([k, bank[0][None]], 1), torch.cat([v, bank[1][None]], 1)
        o = attention.attend(attn, p.q, k, v, mask)[0]
        self.kvo[name] = (p.k[0], p.v[0], o)
        if bank is not None and cfg.feature_fusion and name.startswith(self.ff_prefixes):
            o = feature_fusion(o, bank[2], cfg.ff_strength, cfg.ff_threshold)
        return attention.finish(attn, o[None], hidden_states)


class StateUNet(torch.nn.Module):
    """The UNet as a graph of (latent, timestep, text, *state) -> (prediction, *what the state's update needs): a
    method family's context (context(state)) reaches its processors and hooks through cross_attention_kwargs;
    outputs(ctx) lists what it kept."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, x, t, text, *state):
        ctx = self.context(state)
        out = self.unet(x, t, encoder_hidden_states=text, cross_attention_kwargs={"v2v": ctx}).sample
        return (out, *self.outputs(ctx))


class BankUNet(StateUNet):
    """StreamV2V's attention, its bank as inputs and the frame's K/V/O as outputs (one graph per config and bank
    shapes; `layers` with a bank, in order)."""

    def __init__(self, unet, config, ff_prefixes, layers: list[str], all_layers: list[str]):
        super().__init__(unet)
        self.config, self.ff_prefixes = config, ff_prefixes
        self.layers, self.all_layers = layers, all_layers

    def context(self, bank):
        banks = {name: bank[3 * i:3 * i + 3] for i, name in enumerate(self.layers)}
        return GraphBankCall(self.config, self.ff_prefixes, banks)

    def outputs(self, ctx):
        return [part for name in self.all_layers for part in ctx.kvo[name]]


class GraphShiftCall:
    """Temporal shift's context inside the traced graph: each block's previous hidden states given as graph inputs
    (none on the first frame), the frame's own (before the shift, as the PyTorch path caches them) kept per block."""

    def __init__(self, fraction: float, prev: dict):
        self.fraction, self.prev, self.cur = fraction, prev, {}

    def self_attention(self, *args):
        return None          # stock attention

    def shift(self, block: str, hidden_states: torch.Tensor) -> torch.Tensor:
        from .temporal_shift import shift

        self.cur[block] = hidden_states[0]
        return shift(hidden_states, [self.prev.get(block)], self.fraction)


class ShiftUNet(StateUNet):
    """Temporal shift's block hooks, the previous frame's block inputs as graph inputs (`blocks` that have one, in
    order) and the frame's as outputs (`all_blocks`)."""

    def __init__(self, unet, fraction: float, blocks: list[str], all_blocks: list[str]):
        super().__init__(unet)
        self.fraction, self.blocks, self.all_blocks = fraction, blocks, all_blocks

    def context(self, prev):
        return GraphShiftCall(self.fraction, dict(zip(self.blocks, prev)))

    def outputs(self, ctx):
        return [ctx.cur[b] for b in self.all_blocks]


class GraphMemoryCall:
    """SVDiff's context inside the traced graph: each transformer block's memory given as a graph input (its learned
    initial memory on the first frame), the memory the block's MemoryBlock returns kept per block."""

    def __init__(self, memory, mems: dict):
        self.memory, self.mems, self.new = memory, mems, {}

    def self_attention(self, *args):
        return None          # stock self-attention

    def after_block(self, block: str, hs: torch.Tensor) -> torch.Tensor:
        from .svdiff import _key, through_memory

        out, m = through_memory(self.memory[_key(block)], hs, self.mems[block][None])
        self.new[block] = m[0]
        return out


class MemoryUNet(StateUNet):
    """SVDiff's block hooks and memory weights, every block's memory as an input and its update as an output
    (`blocks` in order)."""

    def __init__(self, unet, memory, blocks: list[str]):
        super().__init__(unet)
        self.memory, self.blocks = memory, blocks

    def context(self, mems):
        return GraphMemoryCall(self.memory, dict(zip(self.blocks, mems)))

    def outputs(self, ctx):
        return [ctx.new[b] for b in self.blocks]


class GraphPropagateCall:
    """TokenFlow's propagation inside the traced graph, as tokenflow._Propagate (stock source branch: the matches
    given) or tokenflow._PropagateReleased (released: matched here on the source half as this pass computes it), with
    the frames' keyframe slots and weights as tensors (a, b: (m,) int64; w: (m,)), so that one graph serves every chunk
    and step of its shape. `key_inputs`: layer -> the source keyframes' normalised inputs (K, N, C) (released);
    `key_out`: layer -> the keyframes' outputs ((2K, N, C) released: [source; edit], else (K, N, C)); `given`: layer ->
    (nn_a, nn_b) (m, N) (stock). Keeps each layer's matches (released)."""

    def __init__(self, key_out, a, b, w, key_inputs=None, given=None):
        self.key_out, self.key_inputs, self.given = key_out, key_inputs, given
        self.a, self.b, self.w = a, b, w[:, None, None]
        self.matches: dict[str, tuple] = {}

    @staticmethod
    def _take(table, slots, nn):
        """table[slots[i]][nn[i]] for every frame i: (m, N, C), as one gather of rows of the flattened table."""
        k, n, c = table.shape
        return table.reshape(k * n, c).index_select(0, (slots[:, None] * n + nn).reshape(-1)).reshape(nn.shape[0], -1, c)

    @staticmethod
    def _argmax(sim):
        """torch.argmax over the last axis (the first index among equal maxima) written as reductions: OpenVINO's TopK,
        what argmax converts to, took 253 of the propagation graph's 888 ms a call on this project's CPU."""
        n = sim.shape[-1]
        first_high = torch.arange(n, 0, -1, dtype=sim.dtype, device=sim.device)       # n .. 1: exact in f32 to 2^24
        return (n - ((sim >= sim.amax(-1, keepdim=True)) * first_high).amax(-1)).long()

    def self_attention(self, name, attn, hidden_states, mask):
        import torch.nn.functional as F

        from . import attention

        # (no local named x, t or text: the converter names a graph input after the variable that first holds it, and
        # would take such a one for forward's own argument of that name)
        kout = self.key_out[name]
        if self.key_inputs is None:                                   # stock: one branch, the matches given
            nn_a, nn_b = self.given[name]
            out = self.w * self._take(kout, self.a, nn_a) + (1 - self.w) * self._take(kout, self.b, nn_b)
            return attention.finish(attn, out, hidden_states)
        m = hidden_states.shape[0] // 2
        src = F.normalize(hidden_states[:m].float(), dim=-1)
        ki = self.key_inputs[name]
        kn = ki.shape[0]
        nn_a = self._argmax(torch.bmm(src, ki.index_select(0, self.a).transpose(1, 2)))
        nn_b = self._argmax(torch.bmm(src, ki.index_select(0, self.b).transpose(1, 2)))
        self.matches[name] = (nn_a, nn_b)
        out = [self.w * self._take(kout, h * kn + self.a, nn_a) + (1 - self.w) * self._take(kout, h * kn + self.b, nn_b)
               for h in (0, 1)]
        return attention.finish(attn, torch.cat(out), hidden_states)


class JointUNet(StateUNet):
    """TokenFlow's joint keyframe pass (tokenflow._Joint, traced as it is): per self-attention layer the keyframes'
    outputs and, with keep_inputs, the source keyframes' normalised inputs as outputs (`layers` in order)."""

    def __init__(self, unet, branches: int, keep_inputs: bool, layers: list[str]):
        super().__init__(unet)
        self.branches, self.keep_inputs, self.layers = branches, keep_inputs, layers

    def context(self, state):
        from .tokenflow import _Joint

        return _Joint(self.branches, self.keep_inputs)

    def outputs(self, ctx):
        return [ctx.tokens[n] for n in self.layers] + ([ctx.inputs[n] for n in self.layers] if self.keep_inputs else [])


class SourceUNet(StateUNet):
    """TokenFlow's stock source pass (tokenflow._SourceFeatures): every self-attention layer's input as an output."""

    def __init__(self, unet, layers: list[str]):
        super().__init__(unet)
        self.layers = layers

    def context(self, state):
        from .tokenflow import _SourceFeatures

        return _SourceFeatures()

    def outputs(self, ctx):
        return [ctx.tokens[n] for n in self.layers]


class PropagateUNet(StateUNet):
    """TokenFlow's propagation pass: state = (a, b, w, then per layer the keyframes' outputs, then per layer the source
    keyframes' inputs (released) or the frames' matches nn_a, nn_b (stock)); the matches made as outputs (released)."""

    def __init__(self, unet, released: bool, layers: list[str]):
        super().__init__(unet)
        self.released, self.layers = released, layers

    def context(self, state):
        a, b, w, *rest = state
        n = len(self.layers)
        key_out = dict(zip(self.layers, rest[:n]))
        if self.released:
            return GraphPropagateCall(key_out, a, b, w, key_inputs=dict(zip(self.layers, rest[n:])))
        given = {name: (rest[n + 2 * i], rest[n + 2 * i + 1]) for i, name in enumerate(self.layers)}
        return GraphPropagateCall(key_out, a, b, w, given=given)

    def outputs(self, ctx):
        return [x for n in self.layers for x in ctx.matches[n]] if self.released else []
