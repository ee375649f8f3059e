"""TokenFlow: propagation of identical tokens is an identity, chunking changes nothing, and the
memory check refuses an oversized request before anything is read or allocated."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from v2v_core.engine import Stream, StreamSettings
from v2v_core.errors import V2VError
from v2v_core.tokenflow import (
    TokenFlow, TokenFlowConfig, blend_pairs, check_memory, estimate_peak_bytes, keyframes_for_step, match_accuracy,
    neighbours, released_pair, tokenflow,
)

SETTINGS = StreamSettings(strength=0.5, steps=2, seed=5)


def test_keyframes_one_per_group_seeded():
    g = torch.Generator().manual_seed(0)
    keys = keyframes_for_step(19, 8, g)
    assert len(keys) == 3 and 0 <= keys[0] < 8 <= keys[1] < 16 <= keys[2] < 19
    assert keys == keyframes_for_step(19, 8, torch.Generator().manual_seed(0))
    draws = {tuple(keyframes_for_step(19, 8, g)) for _ in range(10)}
    assert len(draws) > 1                       # a new draw each step


def _released_formula(n_frames_per_batch: int, batch_idx: int) -> torch.Tensor:
    """The released code's weights, written as it computes them (tokenflow_utils.py, batch b > 0)."""
    s = torch.arange(0, n_frames_per_batch) + batch_idx * n_frames_per_batch
    p1 = batch_idx * n_frames_per_batch + n_frames_per_batch // 2
    p2 = (batch_idx - 1) * n_frames_per_batch + n_frames_per_batch // 2
    d1, d2 = torch.abs(s - p1), torch.abs(s - p2)
    return torch.sigmoid(d2 / (d1 + d2))


def test_released_propagation_weights_on_three_groups():
    """12 frames in 3 groups of 4: group 0 takes its own keyframe only; a frame of group g > 0 blends its
    own group's keyframe (slot g, weight sigmoid(d2 / (d1 + d2)) from the group centres) with the previous
    group's (slot g - 1): the released formula, keyframes included."""
    keys = [1, 6, 8]
    pairs = blend_pairs(12, keys, TokenFlowConfig(keyframe_group=4))
    assert pairs[:4] == [(0, 0, 1.0)] * 4
    for g in (1, 2):
        ref = _released_formula(4, g)
        for j in range(4):
            a, b, w = pairs[4 * g + j]
            assert (a, b) == (g, g - 1)
            assert w == pytest.approx(float(ref[j]), abs=1e-7)
    assert pairs[6][2] == pytest.approx(0.7310586, abs=1e-6)      # keyframe 6 is its group's centre: sigmoid(1)
    assert pairs[4][2] == pytest.approx(0.6224593, abs=1e-6)      # d1 = d2 = 2: sigmoid(0.5)
    assert all(0.62 < w < 0.74 for _, _, w in pairs[4:])
    assert released_pair(13, 3, 4) == released_pair(13, 3, 4) and released_pair(13, 3, 4)[:2] == (2, 1)  # tail
    # the paper's rule stays available
    assert blend_pairs(12, keys, TokenFlowConfig(keyframe_group=4, propagation="paper"))[3] == neighbours(3, keys)


def test_source_matches_follow_the_true_motion_of_a_pan():
    """On a generated pan clip (true motion known), the nearest neighbours of the source tokens in their
    keyframes land within one token cell of where the content is, on at least one layer (the embedded
    model: a random tiny UNet's features do not carry correspondence)."""
    from v2v_core.backbones import load_backbone
    from v2v_core.synthetic import make_clip

    toy = load_backbone("toy", device="cpu")
    clip = make_clip("pan", 8, 128, speed=4.0)
    acc = match_accuracy(toy, clip, StreamSettings(strength=0.4, steps=2, seed=0), TokenFlowConfig(keyframe_group=4))
    assert max(acc.values()) >= 0.9, acc
    # the contracting path's first layer below the latent's resolution (8x8 tokens here), which the correspondence
    # stages trained (v3.4's finest); v4's full-resolution layers, never trained for it, land within their finer cell
    # on 46-68% of the tokens (chance: about 4%)
    assert acc["down_blocks.1.attentions.0.transformer_blocks.0.attn1"] >= 0.8, acc
    assert all(v >= 0.3 for v in acc.values()), acc


def test_neighbour_weights_fall_linearly():
    keys = [2, 6, 10]
    assert neighbours(0, keys) == (0, 0, 1.0)         # before the first keyframe: that keyframe
    assert neighbours(2, keys) == (0, 0, 1.0)         # a keyframe is its own neighbour
    assert neighbours(3, keys) == (0, 1, 0.75)
    assert neighbours(5, keys) == (0, 1, 0.25)
    assert neighbours(8, keys) == (1, 2, 0.5)
    assert neighbours(12, keys) == (2, 2, 1.0)        # after the last keyframe: that keyframe


def test_identical_frames_give_the_per_frame_output(tiny_backbone, frames64):
    frames = [frames64[0]] * 6
    out = tokenflow(tiny_backbone, frames, "a photo", SETTINGS, TokenFlowConfig(keyframe_group=6, chunk=3))
    per_frame = list(Stream(tiny_backbone, "a photo", SETTINGS).run(frames[:1]))[0]
    for o in out:
        assert np.abs(o.astype(int) - per_frame).max() <= 1


def test_propagation_really_replaces_attention(tiny_backbone, frames64):
    """On a moving clip, TokenFlow's latents differ from each frame translated alone (so the test above
    can fail). The tiny random UNet's attention moves latents only by ~1e-2; float noise is ~1e-6."""
    _, z = tokenflow(tiny_backbone, frames64[:4], "a photo", SETTINGS, TokenFlowConfig(keyframe_group=4),
                     return_latents=True)
    alone = torch.cat([tokenflow(tiny_backbone, [f], "a photo", SETTINGS, return_latents=True)[1] for f in frames64[:4]])
    assert (z - alone).abs().max() > 1e-3


def test_chunked_equals_unchunked(tiny_backbone, frames64):
    frames = frames64[:7]
    _, z_one = tokenflow(tiny_backbone, frames, "a photo", SETTINGS, TokenFlowConfig(keyframe_group=3, chunk=7),
                         return_latents=True)
    events = []
    _, z_chunked = tokenflow(tiny_backbone, frames, "a photo", SETTINGS, TokenFlowConfig(keyframe_group=3, chunk=2),
                             progress=events.append, return_latents=True)
    # the same result up to nearest-neighbour TIES (flat regions of clean source latents have identical
    # tokens; batched float rounding breaks such ties differently): a real seam moves latents by ~1e-2
    d = (z_chunked - z_one).abs()
    assert d.mean() < 1e-4 and (d > 1e-4).float().mean() < 0.05, (d.mean(), (d > 1e-4).float().mean())
    stages = [(e["stage"], e["step"]) for e in events]
    assert ("propagate", 1) in stages and ("propagate", 2) in stages and ("keyframes", 2) in stages
    assert events[-1] == {"stage": "decode", "step": 2, "steps": 2, "done": 7, "total": 7}


def test_estimate_grows_with_the_clip_and_the_refusal_says_what_to_do(tiny_backbone):
    cfg = TokenFlowConfig(keyframe_group=8, memory_limit_gb=1.0)
    # (the tiny test model's VAE downsamples only 2x: 64 px frames are 32x32 latents, like 256 px on SD)
    small = estimate_peak_bytes(tiny_backbone, 48, 64, 64, cfg)["total"]
    assert estimate_peak_bytes(tiny_backbone, 480, 64, 64, cfg)["total"] > 3 * small
    assert estimate_peak_bytes(tiny_backbone, 480, 64, 64, TokenFlowConfig(keyframe_group=32))["total"] < \
        estimate_peak_bytes(tiny_backbone, 480, 64, 64, cfg)["total"]
    check_memory(tiny_backbone, 48, 64, 64, cfg)                           # fits
    with pytest.raises(V2VError, match=r"limit 1\.0 GB.*--keyframe-group.*--frames|limit 1\.0 GB.*fewer frames"):
        check_memory(tiny_backbone, 9000, 1024, 1024, cfg)


def test_oversized_request_is_refused_before_reading_frames(tiny_backbone, tmp_path, monkeypatch, pan_clip):
    from v2v_core import translate as tr
    from v2v_core.video import write_video

    src = write_video(tmp_path / "in.mp4", pan_clip.frames, 10)

    def no_read(*a, **k):
        raise AssertionError("frames were read before the memory check")

    monkeypatch.setattr(tr, "iter_frames", no_read)
    with pytest.raises(V2VError, match="TokenFlow would need"):
        tr.translate_video(tiny_backbone, src, "a photo", tmp_path / "out.mp4", SETTINGS, size=64,
                           method=TokenFlow(TokenFlowConfig(memory_limit_gb=1e-6)), method_name="tokenflow")
    assert not (tmp_path / "out.mp4").exists()


def test_cli_tokenflow(tiny_pipe_dir, tmp_path, pan_clip):
    import json

    from v2v_core.__main__ import main
    from v2v_core.video import read_video, write_video

    src = write_video(tmp_path / "in.mp4", pan_clip.frames, 10)
    rc = main(["translate", str(src), "--prompt", "a photo", "--out", str(tmp_path / "o.mp4"), "--backbone",
               str(tiny_pipe_dir), "--method", "tokenflow", "--keyframe-group", "4", "--size", "64",
               "--report", str(tmp_path / "r.json")])
    assert rc == 0
    frames, _ = read_video(tmp_path / "o.mp4")
    assert len(frames) == len(pan_clip.frames)
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["settings"]["method"] == "tokenflow" and rep["settings"]["method_config"]["keyframe_group"] == 4
    assert rep["memory_estimate_bytes"]["total"] > 0
