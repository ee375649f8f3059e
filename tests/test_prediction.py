"""What the UNet predicts (the scheduler config's prediction_type, and predictions relative to the source
frame): every parametrisation recovers the clean latent, and a source-relative UNet reaches every path."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from v2v_core.backbones import RELATIVE_KEY, Backbone, load_backbone, prediction_of, to_tensor, x0_from_output
from v2v_core.engine import Stream, StreamSettings
from v2v_core.errors import V2VError
from v2v_core.methods import make_method
from v2v_core.toy.arch import image_conditioned, source_relative
from v2v_core.toy.evaluate import round_trip
from v2v_core.tokenflow import TokenFlowConfig, tokenflow

SETTINGS = StreamSettings(strength=0.5, steps=2, seed=1)


def test_every_parametrisation_recovers_the_clean_latent():
    g = torch.Generator().manual_seed(0)
    z, eps, src = (torch.randn(2, 4, 3, 3, generator=g) for _ in range(3))
    a, b = torch.tensor(0.8), torch.tensor(0.6)                 # a^2 + b^2 = 1
    x = a * z + b * eps
    outputs = {("epsilon", False): eps, ("sample", False): z, ("v_prediction", False): a * eps - b * z,
               ("sample", True): z - src}
    for (kind, relative), out in outputs.items():
        torch.testing.assert_close(x0_from_output(kind, relative, x, out, a, b, src), z, atol=1e-6, rtol=0)
    with pytest.raises(V2VError, match="did not pass the source"):
        x0_from_output("sample", True, x, z - src, a, b, None)


def test_predicted_eps_is_the_output_itself_for_epsilon_and_inverts_the_others(tiny_backbone):
    g = torch.Generator().manual_seed(1)
    z, eps, src = (torch.randn(1, 4, 3, 3, generator=g) for _ in range(3))
    a, b = torch.tensor(0.9), torch.tensor(0.19 ** 0.5)
    x = a * z + b * eps
    assert tiny_backbone.prediction == ("epsilon", False)
    assert tiny_backbone.predicted_eps(x, eps, a, b) is eps
    rel = _relative(tiny_backbone)
    torch.testing.assert_close(rel.predicted_eps(x, z - src, a, b, src), eps, atol=1e-5, rtol=0)


def test_unknown_and_inconsistent_predictions_are_refused():
    assert prediction_of({}) == ("epsilon", False)
    with pytest.raises(V2VError, match="not supported"):
        prediction_of({"prediction_type": "flow"})
    with pytest.raises(V2VError, match="needs prediction_type 'sample'"):
        prediction_of({"prediction_type": "epsilon", RELATIVE_KEY: True})


def _relative(bb: Backbone, perturb: bool = False) -> Backbone:
    """The tiny backbone made image-conditioned and source-relative (zero output convolution), or with a
    random output convolution when perturb."""
    unet, sched = source_relative(image_conditioned(copy.deepcopy(bb.unet)), bb.scheduler)
    if perturb:
        with torch.no_grad():
            g = torch.Generator().manual_seed(2)
            unet.conv_out.weight.copy_(0.05 * torch.randn(unet.conv_out.weight.shape, generator=g))
    unet.requires_grad_(False).eval()
    return Backbone("tiny-rel", unet, bb.vae, bb.text_encoder, bb.tokenizer, sched, bb.device, bb.dtype, False)


@pytest.mark.parametrize("method,kw", [(None, {}), (None, {"stream_batch": True}), ("streamv2v", {}),
                                       ("temporal-shift", {})])
def test_a_zero_offset_returns_the_source_on_every_online_path(tiny_backbone, frames64, method, kw):
    """x0 = source + 0: whatever the noise and the method, every frame comes out as the autoencoder's round
    trip of its input (an epsilon-predicting UNet with zero output would return x / sqrt(abar) instead)."""
    rel = _relative(tiny_backbone)
    frames = frames64[:4]
    settings = StreamSettings(**{**SETTINGS.__dict__, **kw})
    out = list(Stream(rel, "a photo", settings, make_method(method) if method else None).run(frames))
    for got, want in zip(out, round_trip(rel, frames), strict=True):
        assert np.abs(got.astype(int) - want).max() <= 1


def test_tokenflow_and_one_engine_step_add_the_offset_to_the_source(tiny_backbone, frames64):
    rel, live = _relative(tiny_backbone), _relative(tiny_backbone, perturb=True)
    _, z0 = tokenflow(rel, frames64[:4], "a photo", SETTINGS, TokenFlowConfig(keyframe_group=2), return_latents=True)
    with torch.inference_mode():
        src = torch.cat([rel.encode_images(to_tensor(f, rel.device, rel.dtype)) for f in frames64[:4]])
    torch.testing.assert_close(z0, src, atol=1e-4, rtol=0)
    # one LCM step by hand: x = a src + b noise, x0 = src + unet([x ; src]), z = c_out x0 + c_skip x
    s = Stream(live, "a photo", StreamSettings(strength=0.5, steps=1, seed=1))
    with torch.inference_mode():
        got = s.denoise_latents(src[:1])
        x = s._sqrt_a[0] * src[:1] + s._sqrt_1ma[0] * s.noise[0]
        out = live.unet(torch.cat([x, src[:1]], 1), s._timesteps[:1], encoder_hidden_states=s.text).sample
    assert out.abs().mean() > 1e-3
    torch.testing.assert_close(got, s._c_out[0] * (src[:1] + out) + s._c_skip[0] * x, atol=1e-5, rtol=0)


def test_a_relative_prediction_without_an_image_conditioned_unet_is_refused(tiny_pipe_dir, tmp_path):
    import shutil

    d = tmp_path / "pipe"
    shutil.copytree(tiny_pipe_dir, d)
    cfg_path = d / "scheduler" / "scheduler_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(prediction_type="sample", **{RELATIVE_KEY: True})
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(V2VError, match="does not take the source frame"):
        load_backbone(str(d), device="cpu")
