"""The streaming engine: schedule, the LCM step against diffusers' own scheduler, stream state,
stream batch, seeds."""
import copy

import numpy as np
import pytest
import torch

from v2v_core.engine import Stream, StreamSettings, t_index_list
from v2v_core.errors import V2VError


def test_t_index_list_matches_reference_rule():
    assert t_index_list(0.4, 4) == [30, 35, 40, 45]   # StreamV2V CLI defaults
    assert t_index_list(0.4, 2) == [30, 40]
    assert t_index_list(0.5, 2) == [25, 37]
    with pytest.raises(V2VError):
        t_index_list(0.05, 4)


def test_stream_timesteps(tiny_backbone):
    s = Stream(tiny_backbone, "a photo", StreamSettings(strength=0.4, steps=2))
    assert s.t_list == [399, 199]
    # the shared scheduler is not mutated by a stream
    assert tiny_backbone.scheduler.num_inference_steps is None


def test_one_step_equals_stock_lcm_scheduler(tiny_backbone, frames64):
    """Our denoise step == LCMScheduler.step's `denoised` for the same x_t and model output."""
    s = Stream(tiny_backbone, "a photo", StreamSettings(strength=0.4, steps=1, seed=3))
    bb = tiny_backbone
    with torch.inference_mode():
        from v2v_core.backbones import to_tensor

        z = bb.encode_images(to_tensor(frames64[0], bb.device, bb.dtype))
        s.noise = torch.randn(1, *z.shape[1:], generator=torch.Generator().manual_seed(3))
        ours = s._denoise(z, [0], [0])
        sched = copy.deepcopy(bb.scheduler)
        sched.set_timesteps(50)
        t = s.t_list[0]
        x_t = sched.add_noise(z, s.noise, torch.tensor([t]))
        eps = bb.unet(x_t, t, encoder_hidden_states=s.text).sample
        sched._step_index = list(sched.timesteps).index(t)
        ref = sched.step(eps, t, x_t).denoised
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("strength,steps", [(0.4, 2), (0.4, 4), (0.5, 2), (0.5, 4)])
def test_engine_equals_diffusers_img2img_with_lcm(tiny_backbone, frames64, strength, steps):
    """The whole per-frame path == diffusers' StableDiffusionImg2ImgPipeline + LCMScheduler (guidance 1)
    fed the same per-step noises: the first noises the encoded frame, the others re-noise LCM's
    `denoised` between steps (the reference's init_noise[i]). The pipeline's noise draws are replaced by
    the stream's own, in order."""
    from unittest import mock

    from diffusers import StableDiffusionImg2ImgPipeline
    from diffusers.pipelines.stable_diffusion import pipeline_stable_diffusion_img2img as img2img_mod
    from diffusers.schedulers import scheduling_lcm

    from v2v_core.backbones import to_tensor

    bb = tiny_backbone
    s = Stream(bb, "a photo", StreamSettings(strength=strength, steps=steps, seed=5))
    with torch.inference_mode():
        z = bb.encode_images(to_tensor(frames64[0], bb.device, bb.dtype))
        ours = s.denoise_latents(z, frame=0)
    assert s.noise.shape == (steps, *z.shape[1:])
    assert not torch.equal(s.noise[0], s.noise[1])                   # one noise PER STEP
    draws = iter(s.noise)
    fake = lambda shape, **kw: next(draws)[None].to(kw.get("dtype") or torch.float32)  # noqa: E731
    pipe = StableDiffusionImg2ImgPipeline(vae=bb.vae, text_encoder=bb.text_encoder, tokenizer=bb.tokenizer, unet=bb.unet,
                                          scheduler=copy.deepcopy(bb.scheduler), safety_checker=None,
                                          feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    # the pipeline slices int(n * strength) steps off the end of an n-step LCM schedule: n = steps / strength
    n = round(steps / strength)
    with mock.patch.object(img2img_mod, "randn_tensor", fake), mock.patch.object(scheduling_lcm, "randn_tensor", fake):
        ref = pipe(prompt="a photo", image=z, strength=strength, num_inference_steps=n, guidance_scale=1.0,
                   output_type="latent").images                      # a 4-channel image is taken as latents
    assert list(pipe.scheduler.timesteps[-steps:]) == s.t_list
    assert next(draws, None) is None                                  # every per-step noise was used, once
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def _run(bb, frames, **kw):
    s = Stream(bb, kw.pop("prompt", "a cartoon"), StreamSettings(**kw))
    return list(s.run(frames)), s


def test_same_seed_same_frames_other_seed_differs(tiny_backbone, frames64):
    a, _ = _run(tiny_backbone, frames64, seed=0)
    b, _ = _run(tiny_backbone, frames64, seed=0)
    c, _ = _run(tiny_backbone, frames64, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert np.mean([np.abs(x.astype(int) - y).mean() for x, y in zip(a, c)]) > 1.0


def test_interleaved_streams_equal_separate_runs(tiny_backbone, frames64):
    """Two streams on ONE backbone, interleaved frame by frame, give bit-identical outputs to each alone."""
    alone_a, _ = _run(tiny_backbone, frames64, seed=0, prompt="a cartoon")
    alone_b, _ = _run(tiny_backbone, frames64[::-1], seed=7, prompt="pixel art")
    sa = Stream(tiny_backbone, "a cartoon", StreamSettings(seed=0))
    sb = Stream(tiny_backbone, "pixel art", StreamSettings(seed=7))
    inter_a, inter_b = [], []
    for fa, fb in zip(frames64, frames64[::-1]):
        inter_a += sa.push(fa)
        inter_b += sb.push(fb)
    assert len(inter_a) == len(alone_a) == len(frames64)
    assert all(np.array_equal(x, y) for x, y in zip(inter_a, alone_a))
    assert all(np.array_equal(x, y) for x, y in zip(inter_b, alone_b))


def test_stream_batch_absorbs_lag_and_matches_sequential(tiny_backbone, frames64):
    seq, _ = _run(tiny_backbone, frames64, steps=3, seed=0)
    s = Stream(tiny_backbone, "a cartoon", StreamSettings(steps=3, seed=0, stream_batch=True))
    got = []
    counts = []
    for f in frames64:
        out = s.push(f)
        counts.append(len(out))
        got += out
    assert counts[:2] == [0, 0] and counts[2] == 1   # output lags k-1 frames while in flight ...
    got += s.flush()                                  # ... and flush drains the rest
    assert len(got) == len(frames64)
    # frame i out is the translation of frame i (batched float math differs by rounding only)
    diffs = [np.abs(x.astype(int) - y).max() for x, y in zip(got, seq)]
    assert max(diffs) <= 2, diffs
    # and the first frames are real translations, not filler: they differ from each other like the inputs do
    assert np.abs(got[0].astype(int) - got[1]).mean() > 0.5


def test_reset_replays_identically(tiny_backbone, frames64):
    s = Stream(tiny_backbone, "a cartoon", StreamSettings(seed=2))
    first = list(s.run(frames64[:3]))
    s.reset()
    again = list(s.run(frames64[:3]))
    assert all(np.array_equal(x, y) for x, y in zip(first, again))
    assert len(s.timings) == 3 and {"encode", "unet", "temporal", "decode", "total"} <= set(s.timings[0])


def test_bad_frames_are_refused(tiny_backbone):
    s = Stream(tiny_backbone, "x")
    with pytest.raises(V2VError, match="multiple"):
        s.push(np.zeros((50, 64, 3), np.uint8))
    with pytest.raises(V2VError, match="uint8"):
        s.push(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(V2VError, match="outside its range"):
        Stream(tiny_backbone, "x", StreamSettings(steps=20))


def test_a_live_stream_keeps_a_bounded_window_of_timings(tiny_backbone, frames64):
    s = Stream(tiny_backbone, "a photo", StreamSettings(seed=0), keep_timings=3)
    for f in frames64[:6]:
        s.push(f)
    assert len(s.timings) == 3 and s.frames_out == 6
    from v2v_core.engine import fps_after_warmup

    assert fps_after_warmup(s.timings, 1) > 0
    whole = Stream(tiny_backbone, "a photo", StreamSettings(seed=0))
    list(whole.run(frames64[:6]))
    assert len(whole.timings) == 6                    # a whole-clip run keeps what its report needs
