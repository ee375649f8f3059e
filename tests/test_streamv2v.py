"""StreamV2V: EA/FF/DyMe against hand-checkable tensors and diffusers' stock processor; bank sizes;
stream isolation."""
import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from v2v_core import attention
from v2v_core.engine import Stream, StreamSettings
from v2v_core.streamv2v import (WINDOW_ATTENTION, FeatureBankState, StreamV2V, StreamV2VConfig, _Call,
                                dynamic_merge, feature_fusion, ff_prefixes)

LAYER = "down_blocks.0.attentions.0.transformer_blocks.0.attn1"


@pytest.fixture
def attn_layer(tiny_backbone):
    return tiny_backbone.unet.get_submodule(LAYER)


def _call(cfg, state, frame=5, step=0):
    return _Call(cfg, state, [frame], [step], ff_prefixes(cfg))


def test_ea_with_empty_bank_equals_stock_attention(attn_layer):
    torch.manual_seed(0)
    h = torch.randn(1, 256, 32)
    stock = AttnProcessor2_0()(attn_layer, h)
    st = FeatureBankState(StreamV2VConfig(feature_fusion=False))
    with torch.no_grad():
        ours = _call(st.config, st).self_attention(LAYER, attn_layer, h, None)
    torch.testing.assert_close(ours, stock, rtol=1e-5, atol=1e-6)


def test_ea_with_bank_equal_to_own_tokens_equals_stock_attention(attn_layer):
    """Duplicated keys and values leave softmax weighting unchanged."""
    torch.manual_seed(1)
    h = torch.randn(1, 256, 32)
    stock = AttnProcessor2_0()(attn_layer, h)
    cfg = StreamV2VConfig(feature_fusion=False)
    st = FeatureBankState(cfg)
    with torch.no_grad():
        p = attention.project(attn_layer, h)
        st.update((LAYER, 0), p.k[0], p.v[0], stock[0], frame=0)    # bank = this frame's own K, V, O
        ours = _call(cfg, st, frame=1).self_attention(LAYER, attn_layer, h, None)
    assert st.banks[(LAYER, 0)].tokens == 256
    torch.testing.assert_close(ours, stock, rtol=1e-5, atol=1e-6)
    # and a bank of OTHER tokens does change the output
    st2 = FeatureBankState(cfg)
    with torch.no_grad():
        p2 = attention.project(attn_layer, torch.randn(1, 256, 32))
        st2.update((LAYER, 0), p2.k[0], p2.v[0], stock[0], frame=0)
        other = _call(cfg, st2, frame=1).self_attention(LAYER, attn_layer, h, None)
    assert (other - stock).abs().max() > 1e-3


def test_feature_fusion_moves_only_tokens_above_threshold_by_exactly_the_strength():
    o = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    bank = torch.tensor([[2.0, 0.1], [-1.0, 0.0]])
    # cos(o0, b0) = 0.9988 >= 0.98 ; o1's best is b0 with cos 0.05 ; o2's best is b0 with cos 0.74
    out = feature_fusion(o, bank, strength=0.8, threshold=0.98)
    torch.testing.assert_close(out[0], 0.2 * o[0] + 0.8 * bank[0])
    assert torch.equal(out[1], o[1]) and torch.equal(out[2], o[2])   # bit-identical below the threshold
    assert torch.equal(feature_fusion(o, bank, 0.8, 0.9995), o)       # nothing reaches a higher threshold


def test_bank_keeps_the_unfused_output(attn_layer):
    """After a frame whose tokens fusion changed, the bank holds the layer's output BEFORE fusion (the
    reference clones it first), while the frame itself gets the fused output."""
    name = "mid_block.attentions.0.transformer_blocks.0.attn1"                 # an FF layer
    cfg = StreamV2VConfig(extended_attention=False, feature_fusion=True, ff_strength=1.0, ff_threshold=-1.0,
                          bank="queue", interval=1, max_frames=2)
    st = FeatureBankState(cfg)
    torch.manual_seed(2)
    h0, h1 = torch.randn(1, 16, 32), torch.randn(1, 16, 32)
    with torch.no_grad():
        stock0, stock1 = AttnProcessor2_0()(attn_layer, h0), AttnProcessor2_0()(attn_layer, h1)
        out0 = _call(cfg, st, frame=0).self_attention(name, attn_layer, h0, None)   # bank start: frame 0
        out1 = _call(cfg, st, frame=1).self_attention(name, attn_layer, h1, None)
    torch.testing.assert_close(out0, stock0, rtol=1e-5, atol=1e-6)             # empty bank: nothing to fuse
    # strength 1 and threshold -1: every token of frame 1 became its best match among frame 0's outputs
    cos = torch.nn.functional.normalize(stock1[0], dim=-1) @ torch.nn.functional.normalize(stock0[0], dim=-1).T
    torch.testing.assert_close(out1[0], stock0[0][cos.argmax(-1)], rtol=1e-5, atol=1e-6)
    assert (out1 - stock1).abs().max() > 1e-2                                  # fusion did change the tokens
    bank = st.banks[(name, 0)]
    assert bank.tokens == 32
    torch.testing.assert_close(bank.o[:16], stock0[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bank.o[16:], stock1[0], rtol=1e-5, atol=1e-6)   # unfused, not out1


def test_dyme_hand_checked_groups():
    # keys: tokens 0,1 are near direction x, tokens 2,3 near y. Values/outputs are arbitrary.
    k = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    v = torch.tensor([[10.0], [20.0], [30.0], [40.0]])
    o = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(4, generator=torch.Generator().manual_seed(0))
    a, b = perm[:2].tolist(), perm[2:].tolist()
    mk, mv, mo = dynamic_merge(k, v, o, 0.5, g)
    assert mk.shape == (2, 2) and mv.shape == (2, 1) and mo.shape == (2, 1)     # 4 - int(0.5 * 4)
    # expected: each A token joins the B token with the most similar KEY; B tokens become group means
    groups = {j: [j] for j in b}
    for i in a:
        j = max(b, key=lambda j: float(torch.nn.functional.cosine_similarity(k[i], k[j], dim=0)))
        groups[j].append(i)
    for row, j in enumerate(b):
        idx = groups[j]
        torch.testing.assert_close(mv[row], v[idx].mean(0))    # the same assignment for V ...
        torch.testing.assert_close(mo[row], o[idx].mean(0))    # ... and for O
        torch.testing.assert_close(mk[row], k[idx].mean(0))


def test_dyme_keys_decide_the_matching_not_values():
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.05], [0.05, 1.0]])
    v1 = torch.randn(4, 3)
    v2 = torch.randn(4, 3) * 100
    o = torch.randn(4, 3)
    r1 = dynamic_merge(k, v1, o, 0.5, torch.Generator().manual_seed(3))
    r2 = dynamic_merge(k, v2, o, 0.5, torch.Generator().manual_seed(3))
    torch.testing.assert_close(r1[0], r2[0])
    torch.testing.assert_close(r1[2], r2[2])     # O follows the key-based assignment whatever V is


def test_dyme_same_seed_same_result_other_seed_differs():
    torch.manual_seed(0)
    k, v, o = torch.randn(64, 8), torch.randn(64, 8), torch.randn(64, 8)
    r1 = dynamic_merge(k, v, o, 0.5, torch.Generator().manual_seed(5))
    r2 = dynamic_merge(k, v, o, 0.5, torch.Generator().manual_seed(5))
    r3 = dynamic_merge(k, v, o, 0.5, torch.Generator().manual_seed(6))
    assert all(torch.equal(x, y) for x, y in zip(r1, r2))
    assert not torch.equal(r1[1], r3[1])
    assert r1[0].shape == (32, 8) and dynamic_merge(k[:63], v[:63], o[:63], 0.5)[0].shape == (63 - 31, 8)


@pytest.mark.parametrize("bank,max_frames", [("dyme", 4), ("queue", 3), ("queue", 16), ("none", 4)])
def test_bank_sizes_over_200_updates(bank, max_frames):
    n, c = 64, 8
    st = FeatureBankState(StreamV2VConfig(bank=bank, interval=1, max_frames=max_frames), seed=0)
    sizes = []
    for f in range(200):
        st.update(("l", 0), torch.randn(n, c), torch.randn(n, c), torch.randn(n, c), f)
        sizes.append(st.accounting()["bank_tokens"])
    if bank == "dyme":
        assert set(sizes) == {n}
    elif bank == "queue":
        assert sizes == [min(f + 1, max_frames) * n for f in range(200)]
    else:
        assert set(sizes) == {0} and st.accounting()["bank_bytes"] == 0


def test_a_bank_nothing_reads_is_not_kept(tiny_backbone, frames64):
    """EA and FF off: the bank would never be read, so the stream holds none (the ablation's 'EA off, FF off'
    row reports 0 bytes, not a bank it never used), and the output is the per-frame baseline."""
    base, _ = _run(tiny_backbone, frames64, None)
    off, s = _run(tiny_backbone, frames64, StreamV2V(StreamV2VConfig(extended_attention=False, feature_fusion=False,
                                                                     interval=1)))
    assert all(np.array_equal(a, b) for a, b in zip(base, off))
    assert {t["bank_bytes"] for t in s.timings} == {0}
    _, ea_only = _run(tiny_backbone, frames64, StreamV2V(StreamV2VConfig(feature_fusion=False, interval=1)))
    assert ea_only.timings[-1]["bank_bytes"] > 0


def test_interval_controls_updates():
    st = FeatureBankState(StreamV2VConfig(bank="queue", interval=4, max_frames=16))
    for f in range(9):
        st.update(("l", 0), torch.randn(4, 2), torch.randn(4, 2), torch.randn(4, 2), f)
    assert st.accounting()["bank_tokens"] == 3 * 4      # frames 0 (start), 4 and 8


def banked_frames(schedule: str, steps: int, frames: int = 12) -> dict[int, list[int]]:
    """Per denoising step, the input frames a queue bank holds after `frames` frames (each frame's tokens carry its
    number), under a bank schedule."""
    st = FeatureBankState(StreamV2VConfig(bank="queue", interval=4, max_frames=16, bank_schedule=schedule), steps=steps)
    for f in range(frames):
        for s in range(steps):
            t = torch.full((1, 2), float(f))
            st.update(("l", s), t, t, t, f)
    return {s: [int(x) for x in st.banks[("l", s)].k[:, 0]] for s in range(steps)}


def test_bank_schedules_by_hand():
    """input-frame: frames 0, 4, 8 at every step. reference (the released code's one counter per UNet call, warm-up
    calls included): at k steps, step s banks frames f with (f + k + s) % 4 == 0, after the start frame 0."""
    assert banked_frames("input-frame", 2) == {0: [0, 4, 8], 1: [0, 4, 8]}
    assert banked_frames("reference", 2) == {0: [0, 2, 6, 10], 1: [0, 1, 5, 9]}
    assert banked_frames("reference", 1) == {0: [0, 3, 7, 11]}
    assert banked_frames("reference", 3) == {0: [0, 1, 5, 9], 1: [0, 4, 8], 2: [0, 3, 7, 11]}


def _run(bb, frames, method, seed=0, prompt="a cartoon"):
    s = Stream(bb, prompt, StreamSettings(seed=seed), method)
    return list(s.run(frames)), s


def test_streamv2v_changes_output_and_none_restores_baseline(tiny_backbone, frames64):
    base, _ = _run(tiny_backbone, frames64, None)
    v2v, s = _run(tiny_backbone, frames64, StreamV2V())
    none, _ = _run(tiny_backbone, frames64, StreamV2V(StreamV2VConfig(bank="none")))
    assert all(np.array_equal(a, b) for a, b in zip(base, none))
    assert np.array_equal(base[0], v2v[0])                   # frame 0 attends to itself: unchanged
    assert max(np.abs(a.astype(int) - b).max() for a, b in zip(base[1:], v2v[1:])) > 0
    assert s.timings[-1]["bank_tokens"] > 0


def test_interleaved_streamv2v_streams_do_not_share_banks(tiny_backbone, frames64):
    m1, m2 = StreamV2V(), StreamV2V(WINDOW_ATTENTION, name="window")
    alone1, _ = _run(tiny_backbone, frames64, m1, seed=0)
    alone2, _ = _run(tiny_backbone, frames64[::-1], m2, seed=4, prompt="pixel art")
    s1 = Stream(tiny_backbone, "a cartoon", StreamSettings(seed=0), m1)
    s2 = Stream(tiny_backbone, "pixel art", StreamSettings(seed=4), m2)
    o1, o2 = [], []
    for a, b in zip(frames64, frames64[::-1]):
        o1 += s1.push(a)
        o2 += s2.push(b)
    assert all(np.array_equal(x, y) for x, y in zip(o1, alone1))
    assert all(np.array_equal(x, y) for x, y in zip(o2, alone2))


def test_processors_are_installed_once_and_removable(tiny_pipe_dir, frames64):
    from v2v_core.backbones import load_backbone

    bb = load_backbone(str(tiny_pipe_dir), device="cpu")
    base, _ = _run(bb, frames64[:3], None)
    _run(bb, frames64[:3], StreamV2V())
    _run(bb, frames64[:3], StreamV2V())                  # applying twice is safe
    assert all(isinstance(p, attention.RoutedAttnProcessor) for p in bb.unet.attn_processors.values())
    routed_plain, _ = _run(bb, frames64[:3], None)        # no context: stock math on routed processors
    attention.remove(bb.unet)
    after, _ = _run(bb, frames64[:3], None)
    assert all(np.array_equal(a, b) for a, b in zip(base, routed_plain))
    assert all(np.array_equal(a, b) for a, b in zip(base, after))
    assert all(isinstance(p, AttnProcessor2_0) for p in bb.unet.attn_processors.values())


def test_temporal_shift_takes_channels_from_previous_frame_and_is_removable(tiny_pipe_dir, frames64):
    from v2v_core import temporal_shift as ts
    from v2v_core.backbones import load_backbone

    bb = load_backbone(str(tiny_pipe_dir), device="cpu")
    base, _ = _run(bb, frames64[:4], None)
    shifted, s = _run(bb, frames64[:4], ts.TemporalShift())
    assert np.array_equal(base[0], shifted[0])           # nothing cached before frame 0
    assert np.abs(base[2].astype(int) - shifted[2]).max() > 0
    assert s.timings[-1]["bank_tokens"] > 0
    zero, _ = _run(bb, frames64[:4], ts.TemporalShift(ts.TemporalShiftConfig(fraction=0.0)))
    assert all(np.array_equal(a, b) for a, b in zip(base, zero))
    ts.remove(bb.unet)
    after, _ = _run(bb, frames64[:4], None)
    assert all(np.array_equal(a, b) for a, b in zip(base, after))


def test_shift_call_hand_checked():
    from v2v_core.temporal_shift import TemporalShiftConfig, TemporalShiftState
    from v2v_core.temporal_shift import _Call as ShiftCall

    st = TemporalShiftState()
    a = torch.arange(16.0).view(1, 2, 8)
    b = -torch.arange(16.0).view(1, 2, 8)
    ShiftCall(TemporalShiftConfig(0.25), st, [0], [0]).shift("blk", a)
    out = ShiftCall(TemporalShiftConfig(0.25), st, [1], [0]).shift("blk", b)
    assert torch.equal(out[0, :, :2], a[0, :, :2]) and torch.equal(out[0, :, 2:], b[0, :, 2:])
