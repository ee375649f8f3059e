"""OpenVINO on a CPU, for every method of a run alike, with the methods' state outside the graph.

    bb_ov = openvino_backbone(bb)          # same Backbone interface; encode, decode, text and UNet run compiled
    Stream(bb_ov, prompt, settings, StreamV2V(cfg))   # the engine and the method code are unchanged

What is converted (openvino.convert_model straight from the PyTorch modules, compiled for "CPU" at the studio's
thread count, cached on disk by the weights' digest and the input shapes under V2V_OPENVINO_CACHE, default
~/.cache/v2v-studio/openvino): the autoencoder's encoder and decoder, the text encoder, and the UNet as ONE graph per
method family and shape:
- the per-frame baseline: (latent, timestep, text) -> prediction;
- StreamV2V's family (EA, FF, DyMe or queue bank, window attention): (latent, timestep, text, and per
  self-attention layer the bank's keys, values and outputs of this denoising step) -> (prediction, and per layer the
  frame's keys, values and outputs before fusion). Extended attention and feature fusion run inside the graph on the
  bank it is given; the bank's update (DyMe's merge, the queue) stays in streamv2v.FeatureBankState, unchanged. A
  DyMe bank keeps a constant size, so one graph serves every frame after the first; a queue bank compiles one graph
  per length it passes through (at most max_frames);
- temporal shift: (latent, timestep, text, and per transformer block the previous frame's block input at this step)
  -> (prediction, and per block the frame's block input); the shift runs in the graph, the cache stays the method's;
- SVDiff: (latent, timestep, text, and per transformer block its memory for this step, the learned initial memory on
  the first frame) -> (prediction, and per block the memory its MemoryBlock returns); the memory's weights are in the
  graph (its file name carries their digest), the memories stay the stream's.
- TokenFlow, per pass and shape: the joint keyframe pass ((latent, timestep, text) -> (prediction, and per
  self-attention layer the keyframes' outputs and, for the released source branch, the source keyframes' inputs)), the
  source pass of source_branch="stock" (-> every layer's inputs) and the propagation pass ((latent, timestep, text,
  per layer the keyframes' outputs (and inputs), the frames' keyframe slots and weights as tensors) -> (prediction,
  and per layer the matches it made)): the nearest-neighbour search and the blend run in the graph, the keyframe
  draws, the chunks and the LCM update in tokenflow.py, unchanged.
Without a path here: the correspondence recorder, refused by `unsupported_reason` for a run that names it; such a run
runs on PyTorch as a whole (comparisons).
The graphs are traced from the PyTorch modules of whatever backbone is loaded: a retrained toy with another layout
converts through the same code.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import os
import warnings
from pathlib import Path
from types import SimpleNamespace

import torch

from .backbones import Backbone
from .openvino_graphs import (BankUNet, Decode, Encode, JointUNet, MemoryUNet, PlainUNet, PropagateUNet, ShiftUNet,
                              SourceUNet, Text)
from .config import RUNTIMES  # noqa: F401  (re-exported: the runtimes this module serves)
from .errors import V2VError
OV_METHODS = ("streamdiffusion", "streamv2v", "window", "temporal-shift", "svdiff", "tokenflow")   # with a path


def openvino_missing() -> str | None:
    """Why OpenVINO cannot run here (None: it can)."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "the openvino package is not installed (pip install openvino)"
    return None


@functools.cache        # the CPU does not change within a process
def bf16_missing() -> str | None:
    """Why OpenVINO cannot run in bfloat16 here (None: the CPU has bfloat16 units)."""
    import openvino as ov

    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        return "this CPU has no bfloat16 units (AVX512-BF16 or AMX): use runtime openvino"
    return None


def unsupported_reason(core_methods, device) -> str | None:
    """Why a run of these core methods (names of v2v_core.methods) cannot use OpenVINO (None: it can)."""
    missing = openvino_missing()
    if missing:
        return missing
    if torch.device(device).type != "cpu":
        return f"the backbone is on {device}: the OpenVINO path is for CPUs"
    others = sorted({m for m in core_methods if m not in OV_METHODS})
    if others:
        return f"{', '.join(others)} has no OpenVINO path yet (one runtime serves every method of a run)"
    return None


def cache_dir() -> Path:
    return Path(os.environ.get("V2V_OPENVINO_CACHE", Path.home() / ".cache" / "v2v-studio" / "openvino"))


def weights_digest(*modules) -> str:
    """A short SHA-256 of the modules' parameters and buffers (names and bytes): what a cached graph was made from."""
    h = hashlib.sha256()
    for m in modules:
        for name, t in list(m.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


GRAPH_FORMAT = "static1"   # in a cached graph's file name: graphs converted another way are converted anew
# Full precision, always: on a CPU with bfloat16 units (AVX512-BF16 / AMX) OpenVINO's CPU plugin otherwise runs in
# bfloat16 by default. Measured on such a machine (3 shared clips, 24 frames, "a pencil sketch"): bfloat16 put every
# method's output 50 dB from PyTorch's and its warp error 2.6-4.5% higher (noise that differs frame to frame), which
# would credit or blame a method for the runtime's rounding; f32 agrees to 1e-6 on the autoencoder. bfloat16 is the
# runtime "openvino-bf16", asked for by name (3-3.75x PyTorch there, against 1.2x in f32). Most of that warp change is
# the autoencoder's (the encoder's rounding moved wolf's warp error +0.7 points of the +1.1 left with an f32 decoder):
# "openvino-bf16-unet" keeps it and the text encoder in f32 and runs every UNet graph in bfloat16 (1.44-1.55x PyTorch,
# warp errors +0.11% to +0.39%, 55 dB; README).
# Per part ("encode", "decode", "text"; "unet" for every UNet graph, or one graph's name), "*" for the rest.
STATELESS_PARTS = ("encode", "decode", "text")
PRECISIONS = {"openvino": {"*": "f32"}, "openvino-bf16-unet": {"*": "f32", "unet": "bf16"}, "openvino-bf16": {"*": "bf16"}}


def needs_bf16(runtime: str) -> bool:
    """Whether a runtime runs any part in bfloat16 (refused on a CPU without bfloat16 units)."""
    return "bf16" in PRECISIONS.get(runtime, {}).values()


# Who hears of a graph's one-off setup (callback(part, converting)) in this thread's context: a run's progress board, so
# that a first start's minute of conversion is not a frozen bar. A context variable, not state on the shared compiler:
# two runs on one backbone each hear only their own.
_ON_SETUP: contextvars.ContextVar = contextvars.ContextVar("v2v_openvino_on_setup", default=None)


@contextlib.contextmanager
def setup_reports(callback):
    """Within the block (this thread), callback(part, converting) is called before a graph is converted (converting
    True) or read from the disk cache and compiled (False)."""
    token = _ON_SETUP.set(callback)
    try:
        yield
    finally:
        _ON_SETUP.reset(token)


class _Compiler:
    """Converts a PyTorch module once per (part, input shapes) and the backbone's weights, keeps it on disk and
    compiled in memory."""

    def __init__(self, digest: str, threads: int, precisions: dict | None = None):
        self.digest, self.threads, self.precisions = digest, threads, precisions or PRECISIONS["openvino"]
        self.compiled: dict[tuple, object] = {}
        self.convert_seconds = 0.0
        self.setup_seconds = 0.0          # conversion and compilation: what a graph's first use costs beyond its run

    def get(self, part: str, module: torch.nn.Module, example: tuple[torch.Tensor, ...], before_trace=None):
        key = (part, tuple(tuple(x.shape) for x in example))
        if key not in self.compiled:
            import time

            import openvino as ov

            t_setup = time.perf_counter()
            if before_trace is not None:       # what the trace needs installed (read from disk, it is not traced)
                before_trace()

            shapes = "_".join("x".join(map(str, s)) for s in key[1])
            path = cache_dir() / self.digest / f"{part}-{GRAPH_FORMAT}-{hashlib.sha256(shapes.encode()).hexdigest()[:12]}.xml"
            hear = _ON_SETUP.get()
            if hear is not None:
                hear(part, not path.exists())
            core = ov.Core()
            if not path.exists():
                t0 = time.perf_counter()
                path.parent.mkdir(parents=True, exist_ok=True)
                with torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")          # the tracer's notes on shape-dependent Python branches
                    # static shapes (one graph per shape set anyway): with example_input alone the batch and spatial
                    # sizes stay dynamic ([?,4,?,?]) and the CPU plugin plans its memory and kernels on every call
                    model = ov.convert_model(module, example_input=example, input=[tuple(x.shape) for x in example])
                ov.save_model(model, str(path), compress_to_fp16=False)
                self.convert_seconds += time.perf_counter() - t0
            self.compiled[key] = core.compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": self.threads,
                                                                       "INFERENCE_PRECISION_HINT": self.precision(part)})
            self.setup_seconds += time.perf_counter() - t_setup
        return self.compiled[key]

    def precision(self, part: str) -> str:
        """The part's own entry, else "unet" for every UNet graph (each method family's), else "*"."""
        unet = None if part in STATELESS_PARTS else self.precisions.get("unet")
        return self.precisions.get(part) or unet or self.precisions["*"]

    def run(self, part, module, *inputs: torch.Tensor, before_trace=None) -> list[torch.Tensor]:
        model = self.get(part, module, inputs, before_trace)
        res = model([x.detach().to(torch.float32 if x.is_floating_point() else x.dtype).numpy() for x in inputs])
        return [torch.from_numpy(res[o].copy()) for o in model.outputs]


class OpenVINOUNet:
    """What the engine calls as `backbone.unet`: the compiled graphs, the stream's state read and updated outside
    them. Attention processors are installed on the PyTorch UNet the graphs are traced from."""

    def __init__(self, unet, compiler: _Compiler):
        self.torch_unet, self.compiler = unet, compiler
        self._memory_digests: dict[int, tuple] = {}
        self.config = unet.config
        self.dtype = torch.float32

    @property
    def attn_processors(self):
        return self.torch_unet.attn_processors

    def __getattr__(self, name):
        """Anything else (named_modules, the methods' hook lists) is the PyTorch UNet's: a method installs its hooks
        there once, whichever runtime installed them first."""
        if name == "torch_unet":
            raise AttributeError(name)
        return getattr(self.torch_unet, name)

    def __setattr__(self, name, value):
        if name.startswith("_v2v_"):
            setattr(self.torch_unet, name, value)
        else:
            object.__setattr__(self, name, value)

    def set_attn_processor(self, processors):
        self.torch_unet.set_attn_processor(processors)

    @functools.cached_property
    def _self_attention_layers(self) -> list[str]:
        """The self-attention layers in the order the UNet runs them (down, mid, up): the order the PyTorch path
        updates their banks in, so DyMe draws its random splits in the same sequence. Once per UNet: walking the
        module tree for attn_processors cost 7 ms a frame, 10% of a bfloat16 StreamV2V frame."""
        def order(name):
            part = name.split(".")
            return ({"down_blocks": 0, "mid_block": 1, "up_blocks": 2}.get(part[0], 3),
                    [int(p) for p in part[1:] if p.isdigit()])

        return sorted((k[: -len(".processor")] for k in self.torch_unet.attn_processors if ".attn1." in k), key=order)

    @functools.cached_property
    def _basic_blocks(self) -> list[str]:
        """Temporal shift's blocks (BasicTransformerBlock), in module order; once per UNet (a module walk per call was
        a hot-path cost, see _self_attention_layers)."""
        from diffusers.models.attention import BasicTransformerBlock

        return [n for n, m in self.torch_unet.named_modules() if isinstance(m, BasicTransformerBlock)]

    @functools.cached_property
    def _memory_blocks(self) -> list[str]:
        """SVDiff's blocks (svdiff.transformer_blocks), in module order; once per UNet."""
        from .svdiff import transformer_blocks

        return list(transformer_blocks(self.torch_unet))

    def __call__(self, sample, timestep, encoder_hidden_states=None, cross_attention_kwargs=None):
        from . import svdiff, temporal_shift, tokenflow
        from .streamv2v import _Call

        ctx = (cross_attention_kwargs or {}).get("v2v")
        t = timestep.to(torch.int64).reshape(-1).expand(sample.shape[0]).contiguous()
        if ctx is None:
            out = self.compiler.run("unet", PlainUNet(self.torch_unet), sample, t, encoder_hidden_states)[0]
        elif isinstance(ctx, _Call) and len(ctx.frames) == 1 and ctx.state.recorder is None:
            out = self._streamv2v(ctx, sample, t, encoder_hidden_states)
        elif isinstance(ctx, temporal_shift._Call) and len(ctx.frames) == 1:
            out = self._temporal_shift(ctx, sample, t, encoder_hidden_states)
        elif isinstance(ctx, svdiff._Call) and len(ctx.slots) == 1:
            out = self._svdiff(ctx, sample, t, encoder_hidden_states)
        elif isinstance(ctx, (tokenflow._Joint, tokenflow._SourceFeatures, tokenflow._Propagate,
                              tokenflow._PropagateReleased)):
            out = self._tokenflow(ctx, sample, t, encoder_hidden_states)
        else:
            raise V2VError("This method has no OpenVINO path (or needs a recorder or a batch of frames): run it with "
                           "runtime torch.")
        return SimpleNamespace(sample=out)

    def _streamv2v(self, ctx, sample, t, text):
        import dataclasses

        from . import attention

        st, frame, step = ctx.state, ctx.frames[0], ctx.steps[0]
        names = self._self_attention_layers
        banks = {n: st.banks.get((n, step)) for n in names}
        with_bank = [n for n in names if banks[n] is not None and banks[n].tokens]
        tensors = [x for n in with_bank for x in (banks[n].k, banks[n].v, banks[n].o)]
        cfg = ctx.config
        part = "v2v-" + hashlib.sha256(repr((dataclasses.astuple(cfg), ctx.ff_prefixes, with_bank)).encode()).hexdigest()[:10]
        module = BankUNet(self.torch_unet, cfg, ctx.ff_prefixes, with_bank, names)
        out = self.compiler.run(part, module, sample, t, text, *tensors,
                                before_trace=lambda: attention.install(self.torch_unet))   # routed processors
        for i, n in enumerate(names):                      # the bank's update: the method's own PyTorch code
            k, v, o = out[1 + 3 * i:4 + 3 * i]
            st.update((n, step), k, v, o, frame)
        return out[0]

    def _temporal_shift(self, ctx, sample, t, text):
        st, step = ctx.state, ctx.steps[0]
        blocks = self._basic_blocks
        with_prev = [b for b in blocks if (b, step) in st.cache]
        part = "shift-" + hashlib.sha256(repr((ctx.config.fraction, with_prev)).encode()).hexdigest()[:10]
        module = ShiftUNet(self.torch_unet, ctx.config.fraction, with_prev, blocks)
        out = self.compiler.run(part, module, sample, t, text, *[st.cache[(b, step)] for b in with_prev])
        for b, hs in zip(blocks, out[1:]):          # the cache's update stays the method's state
            st.cache[(b, step)] = hs
        return out[0]

    def _svdiff(self, ctx, sample, t, text):
        from .svdiff import _key

        st, slot = ctx.state, ctx.slots[0]
        blocks = self._memory_blocks
        mems = [st.memory.get((b, *slot)) for b in blocks]
        mems = [ctx.memory[_key(b)].initial().to(sample.dtype) if m is None else m for b, m in zip(blocks, mems)]
        if id(ctx.memory) not in self._memory_digests:        # the memory's weights are in the graph: in its name
            # (the memory is kept with its digest, so that its id cannot be reused by another while this lives)
            self._memory_digests[id(ctx.memory)] = (ctx.memory, weights_digest(ctx.memory)[:10])
        part = "svdiff-" + self._memory_digests[id(ctx.memory)][1]
        out = self.compiler.run(part, MemoryUNet(self.torch_unet, ctx.memory, blocks), sample, t, text, *mems)
        for b, m in zip(blocks, out[1:]):                   # the stream's memories: the method's state
            st.memory[(b, *slot)] = m
        return out[0]

    def _tokenflow(self, ctx, sample, t, text):
        """One of TokenFlow's passes as its graph; what the pass's context keeps (tokens, inputs, matches) filled from
        the graph's outputs, as the PyTorch path fills it."""
        from . import attention, tokenflow

        names = self._self_attention_layers
        run = functools.partial(self.compiler.run, before_trace=lambda: attention.install(self.torch_unet))
        if isinstance(ctx, tokenflow._Joint):
            part = f"tokenflow-joint{ctx.branches}{'i' if ctx.keep_inputs else ''}"
            out = run(part, JointUNet(self.torch_unet, ctx.branches, ctx.keep_inputs, names), sample, t, text)
            ctx.tokens.update(zip(names, out[1:1 + len(names)]))
            ctx.inputs.update(zip(names, out[1 + len(names):]))
            return out[0]
        if isinstance(ctx, tokenflow._SourceFeatures):
            out = run("tokenflow-source", SourceUNet(self.torch_unet, names), sample, t, text)
            ctx.tokens.update(zip(names, out[1:]))
            return out[0]
        released = isinstance(ctx, tokenflow._PropagateReleased)
        slots = (torch.tensor(ctx.a, dtype=torch.int64), torch.tensor(ctx.b, dtype=torch.int64),
                 torch.tensor(ctx.w, dtype=torch.float32))
        if released:
            state = [ctx.key_out[n] for n in names] + [ctx.key_inputs[n] for n in names]
        else:
            state = [ctx.key_tokens[n] for n in names] + [x for n in names for x in (ctx.nn_a[n], ctx.nn_b[n])]
        part = "tokenflow-propagate" + ("-released" if released else "-stock")
        out = run(part, PropagateUNet(self.torch_unet, released, names), sample, t, text, *slots, *state)
        if released and ctx.matches is not None:
            for i, n in enumerate(names):
                nn_a, nn_b = out[1 + 2 * i], out[2 + 2 * i]
                ctx.matches.setdefault(n, []).extend(zip(nn_a, nn_b))
        return out[0]


class OpenVINOBackbone(Backbone):
    """A Backbone whose encode, decode, text encoder and UNet run as OpenVINO graphs (same interface)."""

    def runtime_setup_seconds(self) -> float:
        return self.ov.setup_seconds

    def encode_images(self, x):
        return self.ov.run("encode", Encode(self.torch_parts), x)[0]

    def decode_latents(self, z):
        return self.ov.run("decode", Decode(self.torch_parts), z)[0]

    @torch.inference_mode()
    def encode_prompt(self, prompt: str):
        if prompt not in self._prompt_cache:
            ids = self.tokenizer(prompt, padding="max_length", max_length=self.tokenizer.model_max_length,
                                 truncation=True, return_tensors="pt").input_ids
            self._prompt_cache[prompt] = self.ov.run("text", Text(self.text_encoder), ids)[0]
        return self._prompt_cache[prompt]


_CONVERTED: dict[tuple[int, str], OpenVINOBackbone] = {}


def openvino_backbone(bb: Backbone, runtime: str = "openvino") -> OpenVINOBackbone:
    """The backbone with its parts on OpenVINO, at the runtime's PRECISIONS (f32: "openvino"; the UNet in bfloat16:
    "openvino-bf16-unet"; all in bfloat16: "openvino-bf16"): once per loaded backbone, runtime and process; shared
    like the backbone."""
    reason = openvino_missing() or (None if bb.device.type == "cpu" else "the OpenVINO path is for CPUs")
    if not reason and needs_bf16(runtime):
        reason = bf16_missing()
    if reason:
        raise V2VError(f"OpenVINO cannot run here: {reason}.")
    key = (id(bb), runtime)
    if key not in _CONVERTED:
        compiler = _Compiler(weights_digest(bb.unet, bb.vae, bb.text_encoder), max(1, torch.get_num_threads()),
                             PRECISIONS[runtime])
        fields = {f: getattr(bb, f) for f in bb.__dataclass_fields__ if f != "_prompt_cache"}
        fields["unet"] = OpenVINOUNet(bb.unet, compiler)
        ov_bb = OpenVINOBackbone(**fields)
        ov_bb.ov, ov_bb.torch_parts = compiler, bb
        ov_bb.runtime = runtime
        _CONVERTED[key] = ov_bb
    return _CONVERTED[key]
