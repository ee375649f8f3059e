"""Correspondence from diffusion features: on a clip translated by a known shift, the recovered point
moves by that shift (within one latent cell) on at least one layer. Needs the trained toy model:
random weights' queries and keys carry no correspondence (nor did the toy's before its tuning stage
trained them to: 28-120 px off on every layer)."""
import numpy as np
import pytest

from v2v_core.backbones import TOY_DIR, load_backbone
from v2v_core.correspondence import SHIFT_POINTS, render_view, shift_errors, token_grid
from v2v_core.synthetic import make_clip
from v2v_core.toy.data import heldout_scene


def test_token_grid():
    assert token_grid(256, (256, 256)) == (16, 16)
    assert token_grid(96, (256, 384)) == (8, 12)


@pytest.mark.skipif(not (TOY_DIR / "model_index.json").exists(), reason="toy model weights not present")
@pytest.mark.parametrize("image", ["astronaut", "held-out scene"])
def test_recovered_point_follows_a_known_shift(image):
    """astronaut is in the toy's diffusion data but never in the correspondence pairs of its tuning
    stage (CORR_HOLDOUT); the held-out scene is in no training data at all. 8 px a frame = one latent cell."""
    errors, cells, rec, clip = shift_errors(load_backbone("toy"), image=heldout_scene() if image != "astronaut" else None)
    attn1 = [n for n in load_backbone("toy").unet.attn_processors if ".attn1." in n]
    assert len(errors) == len(attn1) >= 7                    # every self-attention layer was recorded (v3.4: 7, v4: 10)
    ok = [layer for layer in errors if errors[layer] <= cells[layer]]
    assert ok, {k: (v, cells[k]) for k, v in errors.items()}
    img = render_view(dict(enumerate(clip.frames)), 4, 128, 128, rec.match(ok[0], 4, 128, 128, (256, 256)))
    assert img.shape == (256, 5 * 256, 3)


@pytest.mark.skipif(not (TOY_DIR / "model_index.json").exists(), reason="toy model weights not present")
def test_correspondence_view_opens_on_a_layer_that_follows_the_motion(tmp_path):
    """The studio's Correspondence tab (service level): with no layer chosen, the view uses the
    backbone's default layer, and a click there lands where the content was."""
    from comparisons import service
    from v2v_core.backbones import TOY_CORRESPONDENCE_LAYER
    from v2v_core.video import write_video

    size, speed = 256, 8
    clip = make_clip("shift", 5, size, speed=speed, image=heldout_scene())
    path = write_video(tmp_path / "shift.mp4", list(clip.frames))
    run = service.correspondence_run(str(path), "StreamDiffusion", frame=4, size=size)
    assert run["default_layer"] == TOY_CORRESPONDENCE_LAYER and run["frame"] == 4
    errs = []
    for x, y in SHIFT_POINTS:
        img, matches = service.correspondence_view(run, x, y)
        assert img.shape == (size, 5 * size, 3) and [m["frame"] for m in matches] == [3, 2, 1, 0]
        # the listed figures are named and explained (CORRESPONDENCE_LEGEND), with no empty heat-map field
        assert all(set(m) == {"frame", "x", "y", "probability", "tokens", "times_uniform"} for m in matches)
        assert all(0 < m["probability"] <= 1 and abs(m["times_uniform"] - m["probability"] * m["tokens"]) < 0.1
                   for m in matches)
        errs += [max(abs(m["x"] - (x + speed * (4 - m["frame"]))), abs(m["y"] - y)) for m in matches]
    assert np.median(errs) <= 16, errs                  # one 16 px token of that layer
