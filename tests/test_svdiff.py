"""SVDiff's temporal memory: identity at initialisation, exact removal, per-stream memories, the
trainer (loss goes down, checkpoints round-trip, mismatched backbones refused) and the CLI."""
from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch

from v2v_core.backbones import TOY_DIR, load_backbone
from v2v_core.engine import Stream, StreamSettings
from v2v_core.errors import V2VError
from v2v_core.svdiff import (
    MemoryState, SVDiff, SVDiffConfig, _Call, backbone_fingerprint, build_memory, install, load_checkpoint, read_header,
    remove, save_checkpoint, shipped_checkpoint, transformer_blocks,
)
from v2v_core.svdiff_train import eval_loss, synthetic_clips, train


_toy = functools.lru_cache(maxsize=1)(lambda: load_backbone("toy"))


def _perturbed(bb, size=4, seed=1):
    """A memory whose output projection is not zero (so it really changes the output)."""
    mem = build_memory(transformer_blocks(bb.unet), size)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for blk in mem.values():
            blk.proj_out.weight.copy_(torch.randn(blk.proj_out.weight.shape, generator=g) * 0.2)
    return mem.eval()


def _run(bb, frames, method=None, prompt="a photo"):
    return list(Stream(bb, prompt, StreamSettings(strength=0.5, steps=2, seed=3), method).run(frames))


def test_memory_blocks_follow_the_unet(tiny_backbone):
    widths = transformer_blocks(tiny_backbone.unet)
    assert widths == {"down_blocks.0.attentions.0": 32, "up_blocks.1.attentions.0": 32,
                      "up_blocks.1.attentions.1": 32, "mid_block.attentions.0": 64}


def test_initial_memory_is_w0_plus_ffn_of_grid_positions():
    mem = build_memory({"b": 8}, 2)
    blk = mem["b"]
    grid = torch.tensor([[-1.0, -1.0], [-1.0, 0.0], [0.0, -1.0], [0.0, 0.0]])   # [i - h/2, j - w/2], h = w = 2
    expected = blk.w0 + blk.pos[2](torch.nn.functional.silu(blk.pos[0](grid)))
    torch.testing.assert_close(blk.initial(), expected)
    assert blk.initial().shape == (4, 8)


def test_untrained_memory_is_an_exact_identity_and_removal_restores_the_baseline(tiny_backbone, frames64):
    remove(tiny_backbone.unet)
    base = _run(tiny_backbone, frames64[:4])
    untrained = SVDiff(SVDiffConfig(memory_size=4), memory=build_memory(transformer_blocks(tiny_backbone.unet), 4))
    out = _run(tiny_backbone, frames64[:4], untrained)
    assert all(np.array_equal(a, b) for a, b in zip(base, out))
    # the same machinery with a non-zero projection does change the frames (so the check above can fail)
    moved = _run(tiny_backbone, frames64[:4], SVDiff(SVDiffConfig(memory_size=4), memory=_perturbed(tiny_backbone)))
    assert max(np.abs(a.astype(int) - b).max() for a, b in zip(base, moved)) > 10
    remove(tiny_backbone.unet)
    assert all(np.array_equal(a, b) for a, b in zip(base, _run(tiny_backbone, frames64[:4])))


def test_memories_are_per_stream(tiny_backbone, frames64):
    method = SVDiff(SVDiffConfig(memory_size=4), memory=_perturbed(tiny_backbone))
    alone_a = _run(tiny_backbone, frames64[:4], method, "a photo")
    alone_b = _run(tiny_backbone, frames64[::-1][:4], method, "a cartoon")
    sa = Stream(tiny_backbone, "a photo", StreamSettings(strength=0.5, steps=2, seed=3), method)
    sb = Stream(tiny_backbone, "a cartoon", StreamSettings(strength=0.5, steps=2, seed=3), method)
    ia, ib = [], []
    for fa, fb in zip(frames64[:4], frames64[::-1][:4]):
        ia += sa.push(fa)
        ib += sb.push(fb)
    assert all(np.array_equal(x, y) for x, y in zip(alone_a, ia))
    assert all(np.array_equal(x, y) for x, y in zip(alone_b, ib))
    # the memory is carried: frame 1 of a stream differs from frame 1 run as the first frame
    fresh = _run(tiny_backbone, frames64[1:2], method, "a photo")[0]
    assert not np.array_equal(fresh, alone_a[1])
    # one memory per (block, step) and its size is reported
    acct = sa.method_state.accounting()
    assert acct["bank_tokens"] == 4 * 2 * 16 and acct["bank_bytes"] == 2 * 16 * (32 * 3 + 64) * 4


def test_guidance_branches_keep_separate_memories(tiny_backbone):
    mem = _perturbed(tiny_backbone)
    install(tiny_backbone.unet)
    state = MemoryState()
    x = torch.randn(2, 4, 8, 8)
    text = tiny_backbone.encode_prompt("a photo").expand(2, -1, -1)
    with torch.no_grad():
        tiny_backbone.unet(x, torch.tensor([500, 500]), encoder_hidden_states=text,
                           cross_attention_kwargs={"v2v": _Call(mem, state, [(0, "cond"), (0, "uncond")])})
    blocks = transformer_blocks(tiny_backbone.unet)
    assert set(state.memory) == {(b, 0, br) for b in blocks for br in ("cond", "uncond")}
    # different inputs (cond vs uncond batch items) leave different memories
    b0 = next(iter(blocks))
    assert not torch.equal(state.memory[(b0, 0, "cond")], state.memory[(b0, 0, "uncond")])


@pytest.mark.slow   # over 20 s on 2 cores (pytest.ini): `make test-slow` runs it
def test_short_training_lowers_the_loss(tiny_backbone):
    clips = synthetic_clips(2, 6, 64)
    widths = transformer_blocks(tiny_backbone.unet)
    before = eval_loss(tiny_backbone, build_memory(widths, 4), clips)
    assert before == pytest.approx(eval_loss(tiny_backbone, None, clips), abs=1e-6)   # identity at init
    res = train(tiny_backbone, clips, memory_size=4, steps=12, segment=3, batch=2, lr=3e-3, progress=False)
    after = eval_loss(tiny_backbone, res["memory"], clips)
    assert after < 0.9 * before, (before, after)


def test_checkpoint_round_trip_resume_and_refusals(tiny_backbone, frames64, tmp_path):
    clips = synthetic_clips(1, 4, 64)
    ckpt = tmp_path / "m.safetensors"
    res = train(tiny_backbone, clips, memory_size=4, steps=3, segment=2, batch=1, out=str(ckpt), progress=False)
    head = read_header(ckpt)
    assert head["memory_size"] == 4 and head["backbone"] == "tiny" and head["steps_trained"] == 3
    assert head["widths"] == transformer_blocks(tiny_backbone.unet)
    # loading gives the trained weights back: same frames as the in-memory method
    direct = _run(tiny_backbone, frames64[:3], SVDiff(SVDiffConfig(memory_size=4), memory=res["memory"]))
    loaded = _run(tiny_backbone, frames64[:3], SVDiff(SVDiffConfig(memory_size=4, memory_checkpoint=str(ckpt))))
    assert all(np.array_equal(a, b) for a, b in zip(direct, loaded))
    # resume continues from step 3 with the Adam moments
    res2 = train(tiny_backbone, clips, memory_size=4, steps=5, segment=2, batch=1, resume=str(ckpt), out=str(ckpt),
                 progress=False)
    assert len(res2["losses"]) == 2 and read_header(ckpt)["steps_trained"] == 5
    # refusals: another backbone's name, other widths, another memory size, a file that is not a checkpoint
    with pytest.raises(V2VError, match="trained for backbone 'tiny'"):
        load_checkpoint(ckpt, "toy", transformer_blocks(tiny_backbone.unet))
    with pytest.raises(V2VError, match="channel widths"):
        load_checkpoint(ckpt, "tiny", {"down_blocks.0.attentions.0": 48})
    # same name and widths but retrained weights: refused by the fingerprint
    assert head["backbone_fingerprint"] == backbone_fingerprint(tiny_backbone.unet)
    retrained = copy.deepcopy(tiny_backbone.unet)
    with torch.no_grad():
        next(p for n, p in retrained.named_parameters() if n.endswith("attn1.to_q.weight")).add_(0.01)
    with pytest.raises(V2VError, match="other weights of this backbone"):
        load_checkpoint(ckpt, "tiny", transformer_blocks(tiny_backbone.unet), backbone_fingerprint(retrained))
    with pytest.raises(V2VError, match="4x4 memory, not 8x8"):
        SVDiff(SVDiffConfig(memory_size=8, memory_checkpoint=str(ckpt))).install(tiny_backbone)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(V2VError, match="not a safetensors"):
        read_header(bad)


def test_half_checkpoint_is_small_and_loads(tiny_backbone, tmp_path):
    mem = _perturbed(tiny_backbone)
    full = save_checkpoint(tmp_path / "f.safetensors", mem, {"memory_size": 4, "backbone": "tiny",
                                                              "widths": transformer_blocks(tiny_backbone.unet)})
    half = save_checkpoint(tmp_path / "h.safetensors", mem, {"memory_size": 4, "backbone": "tiny",
                                                              "widths": transformer_blocks(tiny_backbone.unet)}, half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    state, _, _ = load_checkpoint(half, "tiny", transformer_blocks(tiny_backbone.unet))
    assert all(v.dtype == torch.float32 for v in state.values())


def test_a_real_backbone_needs_a_trained_memory(tiny_backbone):
    import dataclasses

    real = dataclasses.replace(tiny_backbone, name="not-shipped", makes_edits=True)
    with pytest.raises(V2VError, match="train-svdiff"):
        SVDiff(SVDiffConfig(memory_size=8)).install(real)


@pytest.mark.parametrize("size", [1, 8, 16])
def test_shipped_toy_checkpoints_exist_and_fit_the_toy(size):
    from v2v_core.toy.arch import build_unet

    path = shipped_checkpoint("toy", size)
    assert path.is_file(), f"missing shipped checkpoint {path}"
    assert path.stat().st_size < 8 * 2 ** 20
    head = read_header(path)
    assert head["memory_size"] == size and head["backbone"] == "toy" and head["steps_trained"] > 0
    if (TOY_DIR / "model_index.json").exists():   # trained against the toy weights shipped beside it, in their layout
        assert head["widths"] == transformer_blocks(_toy().unet)
        assert head["backbone_fingerprint"] == backbone_fingerprint(_toy().unet)
    else:                                          # no weights: a memory per transformer block of the toy's layout
        assert set(transformer_blocks(build_unet())) <= set(head["widths"])


def test_consistent_teacher_is_the_engines_own_run_smoothed_along_the_flow(tiny_backbone, frames64):
    from v2v_core.backbones import seeded_noise, to_tensor
    from v2v_core.svdiff_train import consistent_teacher

    frames = frames64[:4]
    settings = StreamSettings(strength=0.5, steps=2, seed=3)
    stream = Stream(tiny_backbone, "a photo", settings)
    outs = list(stream.run(frames))
    with torch.inference_mode():
        own = torch.cat([tiny_backbone.encode_images(to_tensor(o, tiny_backbone.device, tiny_backbone.dtype)) for o in outs])
        src = torch.cat([tiny_backbone.encode_images(to_tensor(f, tiny_backbone.device, tiny_backbone.dtype)) for f in frames])
    x, ts, z = consistent_teacher(tiny_backbone, frames, "a photo", 0.5, 2, 3, blend=0.0)
    assert x.shape == (4, 2, *src.shape[1:]) and ts == stream.t_list
    # step 0's input is the engine's: sqrt(abar) z_src + sqrt(1 - abar) eps_0, eps_0 the stream's first per-step noise
    abar = tiny_backbone.scheduler.alphas_cumprod[ts[0]].double()
    eps0 = stream.noise[0]
    assert torch.equal(eps0, seeded_noise((2, *src.shape[1:]), 3, src.device, src.dtype)[0])
    assert torch.allclose(x[:, 0], (abar.sqrt() * src + (1 - abar).sqrt() * eps0).float(), atol=1e-5)
    assert torch.equal(z, own)                                   # blend 0: the target is the backbone's own output
    _, _, zb = consistent_teacher(tiny_backbone, frames, "a photo", 0.5, 2, 3, blend=0.5)
    assert torch.equal(zb[0], own[0])                           # nothing to carry into the first frame
    assert (zb[1:] - own[1:]).abs().mean() > 1e-3               # later frames carry the warped past


def test_consistent_objective_trains_and_is_recorded(tiny_backbone, tmp_path):
    clips = synthetic_clips(1, 4, 64)
    ckpt = tmp_path / "c.safetensors"
    res = train(tiny_backbone, clips, memory_size=4, steps=3, segment=2, batch=1, out=str(ckpt), progress=False,
                objective="consistent", blend=0.5)
    head = read_header(ckpt)
    assert head["objective"] == "consistent" and head["teacher_blend"] == 0.5 and head["steps_trained"] == 3
    assert all(np.isfinite(res["losses"]))
    assert any(float(p.abs().max()) > 0 for k, p in res["memory"].state_dict().items() if "proj_out" in k)


def test_teacher_runs_are_cached_by_what_they_depend_on(tiny_backbone, tmp_path, monkeypatch):
    """The consistent objective's teacher runs are made once and read back from --teacher-cache by a run that shares
    the backbone, clips, prompts, seed and blend (the Makefile's three memory sizes); any of those changed makes them
    again. Of two memory sizes trained through one cache, only the first runs the engine."""
    import v2v_core.svdiff_train as st

    clips = synthetic_clips(2, 3, 64)
    cache, fp = tmp_path / "teachers.pt", backbone_fingerprint(tiny_backbone.unet)
    made = [st.teacher_runs(tiny_backbone, clips, ["a photo", "a sketch"], 0, 0.5, fp, None, progress=False)]
    calls = []
    real = st.consistent_teacher
    monkeypatch.setattr(st, "consistent_teacher", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    made.append(st.teacher_runs(tiny_backbone, clips, ["a photo", "a sketch"], 0, 0.5, fp, cache, progress=False))
    assert len(calls) == 2 and cache.exists()                     # made and kept
    made.append(st.teacher_runs(tiny_backbone, clips, ["a photo", "a sketch"], 0, 0.5, fp, cache, progress=False))
    assert len(calls) == 2                                        # read back: no engine run
    for a, b in zip(made[0], made[2]):
        assert torch.equal(a.x, b.x) and torch.equal(a.z, b.z) and a.t == b.t and a.prompt == b.prompt
    for change in ({"blend": 0.3}, {"seed": 1}, {"clips": synthetic_clips(2, 3, 64, seed=5)}):
        kw = {"clips": clips, "seed": 0, "blend": 0.5, **change}
        st.teacher_runs(tiny_backbone, kw["clips"], ["a photo", "a sketch"], kw["seed"], kw["blend"], fp, cache,
                        progress=False)
    assert len(calls) == 8                                        # each change: both clips run again
    for m in (1, 4):
        train(tiny_backbone, clips, memory_size=m, steps=1, segment=2, batch=1, progress=False, objective="consistent",
              teacher_cache=str(tmp_path / "t2.pt"))
    assert len(calls) == 8 + len(clips)                            # the second memory size reused the first's
