"""Correspondence from diffusion features: on a clip translated by a known shift, the recovered point
moves by that shift (within one latent cell) on at least one layer. Needs the trained toy model:
random weights' queries and keys carry no correspondence (nor did the toy's before its tuning stage
trained them to: 28-120 px off on every layer)."""
import numpy as np
import pytest

from v2v_core.backbones import TOY_DIR, load_backbone
from v2v_core.correspondence import CorrespondenceRecorder, render_view, token_grid
from v2v_core.engine import Stream, StreamSettings
from v2v_core.methods import make_method
from v2v_core.synthetic import make_clip


def test_token_grid():
    assert token_grid(256, (256, 256)) == (16, 16)
    assert token_grid(96, (256, 384)) == (8, 12)


def _heldout_scene():
    """A procedural scene from a seed the toy's image pool never draws (the pool uses seed 0)."""
    from v2v_core.toy.data import procedural_scene

    return procedural_scene(np.random.default_rng(12345), 512)


@pytest.mark.skipif(not (TOY_DIR / "model_index.json").exists(), reason="toy model weights not present")
@pytest.mark.parametrize("image", ["astronaut", "held-out scene"])
def test_recovered_point_follows_a_known_shift(image):
    """astronaut is in the toy's diffusion data but never in the correspondence pairs of its tuning
    stage (CORR_HOLDOUT); the held-out scene is in no training data at all."""
    size, speed = 256, 8                      # 8 px a frame = one latent cell
    clip = make_clip("shift", 5, size, speed=speed, image=_heldout_scene() if image != "astronaut" else None)
    rec = CorrespondenceRecorder(keep=5)
    method = make_method("streamdiffusion", recorder_factory=lambda: rec)
    list(Stream(load_backbone("toy"), "a photo", StreamSettings(), method).run(list(clip.frames)))
    points = [(96, 96), (128, 128), (160, 112), (112, 160), (144, 144)]
    best = {}
    for layer in rec.recorded_layers():
        errs = []
        for x, y in points:
            for m in rec.match(layer, 4, x, y, (size, size)):
                ex = x + speed * (4 - m.frame)          # content moves left: the point was further right
                errs.append(max(abs(m.x - ex), abs(m.y - y)))
        best[layer] = float(np.median(errs))
    cell = {layer: size / token_grid(rec.data[layer][0][1].shape[0], (size, size))[0] for layer in best}
    ok = [layer for layer in best if best[layer] <= cell[layer]]
    assert ok, {k: (round(v, 1), cell[k]) for k, v in best.items()}
    frames = dict(enumerate(clip.frames))
    img = render_view(frames, 4, 128, 128, rec.match(ok[0], 4, 128, 128, (size, size)))
    assert img.shape == (size, 5 * size, 3)


@pytest.mark.skipif(not (TOY_DIR / "model_index.json").exists(), reason="toy model weights not present")
def test_correspondence_view_opens_on_a_layer_that_follows_the_motion(tmp_path):
    """The studio's Correspondence tab (service level): with no layer chosen, the view uses the
    backbone's default layer, and a click there lands where the content was."""
    from comparisons import service
    from v2v_core.backbones import TOY_CORRESPONDENCE_LAYER
    from v2v_core.video import write_video

    size, speed = 256, 8
    clip = make_clip("shift", 5, size, speed=speed, image=_heldout_scene())
    path = write_video(tmp_path / "shift.mp4", list(clip.frames))
    run = service.correspondence_run(str(path), "StreamDiffusion", frame=4, size=size)
    assert run["default_layer"] == TOY_CORRESPONDENCE_LAYER and run["frame"] == 4
    errs = []
    for x, y in [(96, 96), (128, 128), (160, 112), (112, 160), (144, 144)]:
        img, matches = service.correspondence_view(run, x, y)
        assert img.shape == (size, 5 * size, 3) and [m["frame"] for m in matches] == [3, 2, 1, 0]
        errs += [max(abs(m["x"] - (x + speed * (4 - m["frame"]))), abs(m["y"] - y)) for m in matches]
    assert np.median(errs) <= 16, errs                  # one 16 px token of that layer
