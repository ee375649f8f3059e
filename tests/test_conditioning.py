"""Image-conditioned backbones (InstructPix2Pix's layout: the UNet takes the encoded source frame as extra
input channels): every path passes the source, and a warm-started conditioned UNet computes exactly what
the plain one does."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from v2v_core.backbones import Backbone
from v2v_core.engine import Stream, StreamSettings
from v2v_core.errors import V2VError
from v2v_core.methods import make_method
from v2v_core.toy.arch import image_conditioned
from v2v_core.tokenflow import TokenFlowConfig, tokenflow

SETTINGS = StreamSettings(strength=0.5, steps=2, seed=1)


def _conditioned(bb: Backbone, perturb: bool) -> Backbone:
    unet = image_conditioned(copy.deepcopy(bb.unet))
    if perturb:                                        # make the source channels matter
        with torch.no_grad():
            unet.conv_in.weight[:, 4:] = 0.3 * torch.randn(unet.conv_in.weight[:, 4:].shape,
                                                           generator=torch.Generator().manual_seed(0))
    unet.requires_grad_(False).eval()
    return Backbone("tiny-cond", unet, bb.vae, bb.text_encoder, bb.tokenizer, bb.scheduler, bb.device, bb.dtype, False)


@pytest.fixture(scope="module")
def cond_pair(tiny_backbone):
    torch.manual_seed(0)
    return _conditioned(tiny_backbone, False), _conditioned(tiny_backbone, True)


def _run(bb, frames, method=None, **kw):
    s = Stream(bb, "a photo", StreamSettings(**{**SETTINGS.__dict__, **kw}),
               make_method(method) if method else None)
    return list(s.run(frames))


@pytest.mark.parametrize("method,kw", [(None, {}), (None, {"stream_batch": True}), ("streamv2v", {}),
                                       ("svdiff", {}), ("temporal-shift", {})])
def test_warm_started_conditioning_is_exact_and_the_source_reaches_every_online_path(tiny_backbone, cond_pair,
                                                                                      frames64, method, kw):
    warm, live = cond_pair
    assert warm.image_conditioned and live.image_conditioned and not tiny_backbone.image_conditioned
    frames = frames64[:4]
    try:
        plain = _run(tiny_backbone, frames, method, **kw)
    except V2VError:
        pytest.skip(f"{method} has no memory for the tiny backbone")
    same = _run(warm, frames, method, **kw)
    assert all(np.abs(a.astype(int) - b).max() <= 1 for a, b in zip(plain, same))
    moved = _run(live, frames, method, **kw)
    assert np.mean([np.abs(a.astype(int) - b).mean() for a, b in zip(plain, moved)]) > 0.5


def test_correspondence_recorder_sees_the_conditioned_run(cond_pair, frames64):
    from v2v_core.correspondence import CorrespondenceRecorder

    _, live = cond_pair
    rec = CorrespondenceRecorder(keep=3)
    list(Stream(live, "a photo", SETTINGS, make_method("streamdiffusion", recorder_factory=lambda: rec)).run(frames64[:3]))
    assert rec.recorded_layers() and len(rec.frames(rec.recorded_layers()[0])) == 3


def test_tokenflow_passes_the_source(tiny_backbone, cond_pair, frames64):
    warm, live = cond_pair
    cfg = TokenFlowConfig(keyframe_group=2)
    _, z = tokenflow(tiny_backbone, frames64[:4], "a photo", SETTINGS, cfg, return_latents=True)
    _, zw = tokenflow(warm, frames64[:4], "a photo", SETTINGS, cfg, return_latents=True)
    _, zl = tokenflow(live, frames64[:4], "a photo", SETTINGS, cfg, return_latents=True)
    torch.testing.assert_close(zw, z, atol=1e-4, rtol=1e-4)
    assert (zl - z).abs().mean() > 1e-3


def test_svdiff_teacher_and_training_run_on_a_conditioned_backbone(cond_pair, frames64):
    from v2v_core.svdiff_train import consistent_teacher, train

    _, live = cond_pair
    x, ts, z = consistent_teacher(live, frames64[:3], "a photo", 0.5, 2, 3, blend=0.5)
    assert x.shape[2] == 8 and z.shape[1] == 4       # the captured UNet inputs carry the source channels
    res = train(live, [np.stack(frames64[:4])], memory_size=1, steps=1, segment=2, batch=1, progress=False,
                objective="consistent")
    assert np.isfinite(res["losses"][0])


def test_a_path_without_the_source_is_refused(cond_pair):
    _, live = cond_pair
    with pytest.raises(V2VError, match="image-conditioned"):
        live.unet_input(torch.zeros(1, 4, 8, 8), None)
