"""The OpenVINO runtime: the same outputs as PyTorch for every method it serves (the methods' state outside the
graph), one runtime per run, refusals that say why, graphs cached on disk by the weights' digest."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from v2v_core.engine import Stream, StreamSettings
from v2v_core.errors import V2VError
from v2v_core.streamv2v import WINDOW_ATTENTION, StreamV2V, StreamV2VConfig
from v2v_core.temporal_shift import TemporalShift

pytestmark = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")


def psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255 ** 2 / max(mse, 1e-12))


@pytest.fixture
def ov_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("V2V_OPENVINO_CACHE", str(tmp_path / "ov"))
    return tmp_path / "ov"


@pytest.mark.parametrize("make", [
    # 8 frames of the per-frame graph: the slow tier (the disk-cache test below checks 2 frames of it)
    pytest.param(lambda: None, id="per-frame", marks=pytest.mark.slow),
    pytest.param(lambda: StreamV2V(StreamV2VConfig(ff_threshold=0.9)), id="streamv2v-dyme"),
    # a growing bank converts one graph per length: slower, the slow tier
    pytest.param(lambda: StreamV2V(StreamV2VConfig(bank="queue", max_frames=3)), id="streamv2v-queue",
                 marks=pytest.mark.slow),
    pytest.param(lambda: StreamV2V(WINDOW_ATTENTION, name="window"), id="window", marks=pytest.mark.slow),
    pytest.param(lambda: TemporalShift(), id="temporal-shift")])
def test_openvino_gives_the_pytorch_frames_with_the_bank_outside_the_graph(tiny_backbone, frames64, ov_cache, make):
    """8 frames (DyMe merges at frame 4, a queue that grows to 3 frames; temporal shift's previous block inputs): every
    output frame within 40 dB of PyTorch's, and the state the method's own code updated from the graph's outputs (the
    bank from K/V/O, the shift's cache) the same size as PyTorch's."""
    from v2v_core.openvino_runtime import openvino_backbone

    ov = openvino_backbone(tiny_backbone)
    ref_stream = Stream(tiny_backbone, "a cartoon", StreamSettings(seed=0), make())
    ov_stream = Stream(ov, "a cartoon", StreamSettings(seed=0), make())
    ref, out = list(ref_stream.run(frames64)), list(ov_stream.run(frames64))
    assert min(psnr(a, b) for a, b in zip(ref, out)) >= 40
    if ref_stream.method_state is not None:
        assert ov_stream.method_state.accounting() == ref_stream.method_state.accounting()
    assert any(ov_cache.rglob("unet*.xml")) or any(ov_cache.rglob("v2v-*.xml")) or any(ov_cache.rglob("shift-*.xml"))


def test_one_runtime_per_run_and_refusals_say_why(tiny_backbone):
    import dataclasses

    from comparisons.registry import PRESETS, REGISTRY
    from comparisons.runner import pick_runtime

    two = [REGISTRY["StreamDiffusion"], REGISTRY["StreamV2V"]]
    bb, used, note = pick_runtime(tiny_backbone, two, "auto")
    assert used == "openvino" and note is None and bb is not tiny_backbone
    bb, used, note = pick_runtime(tiny_backbone, list(PRESETS), "auto")       # every registered method has a path,
    assert used == "openvino" and note is None                               # TokenFlow's passes included
    # a method without one (as the correspondence recorder is) makes the whole run PyTorch's, saying why
    with_other = two + [dataclasses.replace(REGISTRY["TokenFlow"], name="Recorder", core_method="recorder")]
    bb, used, note = pick_runtime(tiny_backbone, with_other, "auto")
    assert (bb, used) == (tiny_backbone, "torch") and "recorder has no OpenVINO path" in note
    with pytest.raises(V2VError, match="cannot use OpenVINO: recorder has no OpenVINO path"):
        pick_runtime(tiny_backbone, with_other, "openvino")
    assert pick_runtime(tiny_backbone, with_other, "torch") == (tiny_backbone, "torch", None)
    with pytest.raises(V2VError, match="cannot use OpenVINO: recorder has no OpenVINO path"):
        pick_runtime(tiny_backbone, with_other, "openvino-bf16")
    with pytest.raises(V2VError, match="Unknown runtime"):
        pick_runtime(tiny_backbone, two, "tensorrt")


@pytest.mark.parametrize("branch", ["released", pytest.param("stock", marks=pytest.mark.slow)])
def test_tokenflow_on_openvino_gives_the_pytorch_frames_and_matches(tiny_backbone, frames64, pan_clip, ov_cache, branch):
    """TokenFlow's passes as graphs (the joint keyframe pass; the propagation pass, its nearest-neighbour search and
    blend in the graph with the frames' keyframe slots and weights as inputs; source_branch="stock"'s source pass): 8
    frames in groups of 3 (a shorter last group) and chunks of 4, 2 steps: every frame within 40 dB of PyTorch's, and
    the correspondences the run makes, as match_accuracy scores them on the pan, PyTorch's."""
    from v2v_core.openvino_runtime import openvino_backbone
    from v2v_core.tokenflow import TokenFlowConfig, match_accuracy, tokenflow

    ov = openvino_backbone(tiny_backbone)
    cfg = TokenFlowConfig(keyframe_group=3, chunk=4, source_branch=branch)
    settings = StreamSettings(strength=0.5, steps=2, seed=5)
    ref, out = (tokenflow(bb, frames64, "a cartoon", settings, cfg) for bb in (tiny_backbone, ov))
    assert min(psnr(a, b) for a, b in zip(ref, out)) >= 40
    assert match_accuracy(ov, pan_clip, settings, cfg) == match_accuracy(tiny_backbone, pan_clip, settings, cfg)
    assert any(ov_cache.rglob("tokenflow-propagate-*.xml")) and any(ov_cache.rglob("tokenflow-joint*.xml"))


def test_fps_leaves_out_the_runtimes_one_off_conversion(tiny_backbone, frames64, ov_cache, monkeypatch, tmp_path):
    """A first OpenVINO run converts and compiles graphs inside the methods' time. A stream's frames carry what their
    calls spent on it (timing "setup", all of it), which fps_after_warmup leaves out; a comparison shows it on the
    method's progress bar while it happens, reports it per method (runtime_setup_seconds), keeps it in `seconds` and
    leaves it out of an offline method's fps; PyTorch has none."""
    from comparisons.runner import run_comparison
    from conftest import ROOT
    from v2v_core import openvino_runtime
    from v2v_core.engine import fps_after_warmup
    from v2v_core.openvino_runtime import openvino_backbone

    monkeypatch.setattr(openvino_runtime, "_CONVERTED", {})     # a first start: every graph converted here
    ov = openvino_backbone(tiny_backbone)
    s = Stream(ov, "a cartoon", StreamSettings(seed=0), StreamV2V())    # (the text encoder's conversion: no frame's)
    before = ov.runtime_setup_seconds()
    list(s.run(frames64[:4]))
    setup = [t["setup"] for t in s.timings]
    assert setup[0] > 0 and sum(setup) == pytest.approx(ov.runtime_setup_seconds() - before)
    steady = s.timings[1:]
    assert fps_after_warmup(s.timings, 1) == pytest.approx(len(steady) / sum(t["total"] - t["setup"] for t in steady))
    clip = ROOT / "examples" / "astronaut-pan.mp4"
    board = []          # the progress board says what the first start is doing (not a frozen bar), then no more
    tf = run_comparison(clip, "a cartoon", ["TokenFlow"], tmp_path / "ov", backbone=tiny_backbone, frames=6, size=64,
                        runtime="openvino", progress=lambda *a: board.append(a))["methods"]["TokenFlow"]
    stages = [stage for name, _, _, stage in board]
    assert "converting OpenVINO graph tokenflow-joint2i (a first start: kept on disk after)" in stages
    assert stages.index("converting OpenVINO graph tokenflow-joint2i (a first start: kept on disk after)") < \
        stages.index("denoising step 1/2: keyframes")
    assert openvino_runtime._ON_SETUP.get() is None
    assert 0 < tf["runtime_setup_seconds"] < tf["seconds"]
    assert tf["fps"] == pytest.approx(6 / (tf["seconds"] - tf["runtime_setup_seconds"]))
    tf = run_comparison(clip, "a cartoon", ["TokenFlow"], tmp_path / "pt", backbone=tiny_backbone, frames=6,
                        size=64)["methods"]["TokenFlow"]
    assert tf["runtime_setup_seconds"] == 0 and tf["fps"] == pytest.approx(6 / tf["seconds"])


def test_a_graph_on_disk_is_read_not_converted_again(tiny_backbone, frames64, ov_cache, monkeypatch):
    """A new compiler on the same cache folder (what a new process starts with) converts nothing it finds there."""
    from v2v_core import openvino_runtime
    from v2v_core.openvino_runtime import _Compiler, openvino_backbone

    monkeypatch.setattr(openvino_runtime, "_CONVERTED", {})     # converted here, into this test's cache folder
    ov = openvino_backbone(tiny_backbone)
    out = list(Stream(ov, "a cartoon", StreamSettings(seed=0)).run(frames64[:2]))      # the per-frame graph ...
    ref = list(Stream(tiny_backbone, "a cartoon", StreamSettings(seed=0)).run(frames64[:2]))
    assert min(psnr(a, b) for a, b in zip(ref, out)) >= 40                               # ... gives PyTorch's frames
    fresh = _Compiler(ov.ov.digest, 1)
    for (part, shapes), _ in list(ov.ov.compiled.items()):
        if part in ("encode", "decode", "unet"):
            fresh.get(part, None, tuple(torch.zeros(s, dtype=torch.int64 if (part, i) == ("unet", 1) else torch.float32)
                                        for i, s in enumerate(shapes)))
    assert fresh.convert_seconds == 0 and set(p for p, _ in fresh.compiled) == {"encode", "decode", "unet"}


@pytest.mark.slow
def test_the_second_start_converts_nothing(tiny_pipe_dir, frames64, tmp_path):
    """Two processes on one cache folder: the first converts, the second reads every graph from the disk cache."""
    import json
    import os
    import subprocess
    import sys

    from conftest import ROOT

    code = ("import json, sys; from v2v_core.backbones import load_backbone; from v2v_core.engine import Stream, "
            "StreamSettings; from v2v_core.streamv2v import StreamV2V; from v2v_core.openvino_runtime import "
            "openvino_backbone; from v2v_core.synthetic import make_clip; import numpy as np; "
            f"ov = openvino_backbone(load_backbone({str(tiny_pipe_dir)!r}, device='cpu')); "
            "f = [np.ascontiguousarray(x) for x in make_clip('pan', 6, 64).frames]; "
            "[list(Stream(ov, 'a cartoon', StreamSettings(), m).run(f)) for m in (None, StreamV2V())]; "
            "print(json.dumps({'convert_s': ov.ov.convert_seconds, 'graphs': len(ov.ov.compiled)}))")
    env = {**os.environ, "V2V_OPENVINO_CACHE": str(tmp_path / "cache")}
    runs = [json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                                      timeout=300).stdout.strip().splitlines()[-1]) for _ in range(2)]
    assert runs[0]["convert_s"] > 0 and runs[1]["convert_s"] == 0, runs
    assert runs[0]["graphs"] == runs[1]["graphs"] >= 6        # encode, decode, text, per-frame UNet, two StreamV2V


def test_without_openvino_auto_runs_on_pytorch_and_says_why(tiny_backbone, monkeypatch):
    from comparisons.registry import REGISTRY
    from comparisons.runner import pick_runtime
    from v2v_core import openvino_runtime

    monkeypatch.setattr(openvino_runtime, "openvino_missing", lambda: "the openvino package is not installed (pip "
                                                                      "install openvino)")
    bb, used, note = pick_runtime(tiny_backbone, [REGISTRY["StreamDiffusion"]], "auto")
    assert (bb, used) == (tiny_backbone, "torch") and note == ("auto chose PyTorch: the openvino package is not "
                                                               "installed (pip install openvino)")
    with pytest.raises(V2VError, match="cannot use OpenVINO: the openvino package is not installed"):
        pick_runtime(tiny_backbone, [REGISTRY["StreamDiffusion"]], "openvino")


def second_frame_calls(stream, frames, state_of):
    """Run the stream's first frame, copy its method state (state_of(method_state): a dict of tensors), then record
    every UNet call of the second frame: (copied state, [[sample, timestep, text, output] per call])."""
    unet = stream.backbone.unet
    run = stream.run(frames[:2])
    next(run)
    before = {k: v.clone() for k, v in state_of(stream.method_state).items()}
    calls = []
    pre = unet.register_forward_pre_hook(
        lambda m, a, kw: calls.append([a[0].clone(), a[1].clone(), kw["encoder_hidden_states"].clone()]), with_kwargs=True)
    post = unet.register_forward_hook(lambda m, a, kw, out: calls[-1].append(out.sample.clone()), with_kwargs=True)
    try:
        next(run)
    finally:
        pre.remove()
        post.remove()
    return before, calls


def test_the_shift_graph_is_the_pytorch_shift(tiny_backbone, frames64):
    """What OpenVINO converts for temporal shift (ShiftUNet), run in PyTorch on the stream's cached block inputs of the
    previous frame, gives the PyTorch stream's UNet output at every step of the next frame and returns the block inputs
    the stream then caches. (On the tiny model the shift moves the output less than OpenVINO's rounding does, 54 vs
    52 dB: the frame comparison above cannot tell a graph that ignores the previous frame; this can.)"""
    from diffusers.models.attention import BasicTransformerBlock

    from v2v_core.openvino_graphs import ShiftUNet

    bb = tiny_backbone
    method = TemporalShift()
    stream = Stream(bb, "a cartoon", StreamSettings(seed=0), method)
    before, calls = second_frame_calls(stream, frames64, lambda st: st.cache)
    blocks = [n for n, m in bb.unet.named_modules() if isinstance(m, BasicTransformerBlock)]
    assert len(calls) == 2 and blocks
    worst = 0.0
    with torch.inference_mode():
        for step, (x, t, text, ref) in enumerate(calls):
            t = t.to(torch.int64).reshape(-1).expand(x.shape[0])
            module = ShiftUNet(bb.unet, method.config.fraction, blocks, blocks)
            out = module(x, t, text, *[before[(b, step)] for b in blocks])
            worst = max(worst, float((out[0] - ref).abs().max()))
            for b, hs in zip(blocks, out[1:]):
                assert torch.allclose(hs, stream.method_state.cache[(b, step)], atol=1e-6)
            unshifted = ShiftUNet(bb.unet, 0.0, blocks, blocks)(x, t, text, *[before[(b, step)] for b in blocks])[0]
            assert float((unshifted - ref).abs().max()) > 100 * max(worst, 1e-7)    # the shift is there to see
    assert worst <= 1e-6, worst


def test_bfloat16_is_asked_for_by_name_and_refused_where_the_cpu_has_no_units(tiny_backbone, frames64, ov_cache):
    """openvino-bf16 (every part) and openvino-bf16-unet (the UNet only): each its own converted backbone, compiled at
    its precisions, named in what the run reports; auto never picks them; a CPU without bfloat16 units refuses both
    saying so. Their frames stay near PyTorch's (30 dB) but not as near as f32's (the reason neither is the default)."""
    from comparisons.registry import REGISTRY
    from comparisons.runner import pick_runtime
    from v2v_core.openvino_runtime import PRECISIONS, bf16_missing

    two = [REGISTRY["StreamDiffusion"], REGISTRY["StreamV2V"]]
    assert pick_runtime(tiny_backbone, two, "auto")[1] == "openvino"
    if bf16_missing():
        for runtime in ("openvino-bf16", "openvino-bf16-unet"):
            with pytest.raises(V2VError, match="no bfloat16 units"):
                pick_runtime(tiny_backbone, two, runtime)
        return
    f32, _, _ = pick_runtime(tiny_backbone, two, "openvino")
    runs = {"f32": f32}
    for runtime in ("openvino-bf16", "openvino-bf16-unet"):
        bb, used, note = pick_runtime(tiny_backbone, two, runtime)
        assert used == runtime and note is None and bb is not f32 and bb.runtime == runtime
        runs[runtime] = bb
    assert PRECISIONS["openvino-bf16"] == {"*": "bf16"}
    assert {runs["openvino-bf16"].ov.precision(p) for p in ("encode", "decode", "text", "unet")} == {"bf16"}
    assert {f32.ov.precision(p) for p in ("encode", "decode", "text", "unet")} == {"f32"}
    mixed = runs["openvino-bf16-unet"].ov
    assert [mixed.precision(p) for p in ("encode", "decode", "text", "unet", "v2v-0123456789")] == ["f32"] * 3 + ["bf16"] * 2
    ref = list(Stream(tiny_backbone, "a cartoon", StreamSettings(seed=0)).run(frames64[:2]))
    low = {name: min(psnr(a, b) for a, b in zip(ref, Stream(bb, "a cartoon", StreamSettings(seed=0)).run(frames64[:2])))
           for name, bb in runs.items()}
    assert low["openvino-bf16"] >= 30 and low["openvino-bf16-unet"] >= 30, low
    assert low["f32"] > max(low["openvino-bf16"], low["openvino-bf16-unet"]), low


def trained_looking_memory(bb, seed: int = 0):
    """An 8x8 SVDiff memory for the tiny backbone whose output projections are not zero (an untrained memory is an
    exact identity: nothing to compare)."""
    from v2v_core.svdiff import build_memory, transformer_blocks

    memory = build_memory(transformer_blocks(bb.unet), 8, seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in memory.values():
            block.proj_out.weight.copy_(torch.randn(block.proj_out.weight.shape, generator=gen) * 0.3)
    return memory.eval().requires_grad_(False)


def test_svdiff_on_openvino_keeps_its_memory_outside_the_graph(tiny_backbone, frames64, ov_cache):
    """SVDiff (a memory with non-zero output): 8 frames within 40 dB of PyTorch's and every block's memory as the
    stream keeps it close to PyTorch's; the converted module, run in PyTorch on the stream's memories, gives the stream's
    UNet output to 1e-5, while the memory's initial state in their place gives another output."""
    from v2v_core.openvino_graphs import MemoryUNet
    from v2v_core.openvino_runtime import openvino_backbone
    from v2v_core.svdiff import SVDiff, transformer_blocks

    memory = trained_looking_memory(tiny_backbone)
    ov = openvino_backbone(tiny_backbone)
    ref_stream = Stream(tiny_backbone, "a cartoon", StreamSettings(seed=0), SVDiff(memory=memory))
    ov_stream = Stream(ov, "a cartoon", StreamSettings(seed=0), SVDiff(memory=memory))
    base = list(Stream(tiny_backbone, "a cartoon", StreamSettings(seed=0)).run(frames64))
    ref, out = list(ref_stream.run(frames64)), list(ov_stream.run(frames64))
    assert min(psnr(a, b) for a, b in zip(ref, out)) >= 40
    assert max(psnr(a, b) for a, b in zip(ref, base)) < 35          # the memory changes what is drawn
    a, b = ref_stream.method_state.memory, ov_stream.method_state.memory
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-3) for k in a)
    assert any(ov_cache.rglob("svdiff-*.xml"))

    blocks = list(transformer_blocks(tiny_backbone.unet))
    stream = Stream(tiny_backbone, "a cartoon", StreamSettings(seed=0), SVDiff(memory=memory))
    before, calls = second_frame_calls(stream, frames64, lambda st: st.memory)
    with torch.inference_mode():
        for step, (x, t, text, want) in enumerate(calls):
            t = t.to(torch.int64).reshape(-1).expand(x.shape[0])
            mems = [before[(blk, step, "cond")] for blk in blocks]
            got = MemoryUNet(tiny_backbone.unet, memory, blocks)(x, t, text, *mems)
            assert float((got[0] - want).abs().max()) <= 1e-5
            for blk, m in zip(blocks, got[1:]):
                assert torch.allclose(m, stream.method_state.memory[(blk, step, "cond")], atol=1e-6)
            fresh = [memory[blk.replace(".", "-")].initial() for blk in blocks]
            assert float((MemoryUNet(tiny_backbone.unet, memory, blocks)(x, t, text, *fresh)[0] - want).abs().max()) > 1e-3
