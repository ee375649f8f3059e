"""The embedded toy model: its style filters, tokenizer, and (when the weights are present) behaviour
on a generated example clip."""
import numpy as np
import pytest

from v2v_core.backbones import TOY_DIR
from v2v_core.toy.styles import DETERMINISTIC_STYLES, STYLES, black_and_white, style_for_prompt, style_mae


@pytest.fixture(scope="module")
def frame():
    from v2v_core.synthetic import make_clip

    return make_clip("pan", 2, 256).frames[0]


def test_styles_are_deterministic_distinct_and_shaped(frame):
    outs = {}
    for s in DETERMINISTIC_STYLES:
        a, b = s.apply(frame), s.apply(frame)
        assert a.shape == frame.shape and a.dtype == np.uint8 and np.array_equal(a, b)
        outs[s.name] = a.astype(int)
    assert np.array_equal(outs["photo"], frame)
    names = list(outs)
    for i, x in enumerate(names):
        for y in names[i + 1:]:
            assert np.abs(outs[x] - outs[y]).mean() > 8, (x, y)      # every pair clearly different
    bw = outs["black and white"]
    assert np.array_equal(bw[..., 0], bw[..., 1])
    px = outs["pixel art"]
    assert np.array_equal(px[::8, ::8].repeat(8, 0).repeat(8, 1), px)   # 8 px blocks


def test_random_styles_place_content_from_the_noise(frame):
    rng = np.random.default_rng(0)
    eps = rng.standard_normal((4, 32, 32)).astype(np.float32)
    for s in STYLES:
        if s.deterministic:
            continue
        a, b = s.apply(frame, eps=eps), s.apply(frame, eps=eps)
        c = s.apply(frame, eps=-eps)
        assert np.array_equal(a, b) and not np.array_equal(a, c), s.name


def test_prompts_map_to_styles():
    assert style_for_prompt("A Pencil Sketch").name == "pencil sketch"
    assert style_for_prompt("8-bit pixel art").name == "pixel art"
    assert style_for_prompt("a dragon") is None


@pytest.mark.skipif(not (TOY_DIR / "model_index.json").exists(), reason="toy model weights not present")
def test_trained_toy_makes_prompt_dependent_edits(frame):
    from v2v_core.backbones import load_backbone
    from v2v_core.engine import Stream, StreamSettings

    bb = load_backbone("toy")
    assert bb.makes_edits

    def run(prompt):
        return list(Stream(bb, prompt, StreamSettings(strength=0.5, steps=2)).run([frame]))[0].astype(int)

    out = {s.name: run(s.prompts[0]) for s in DETERMINISTIC_STYLES}
    d = lambda a, b: float(np.abs(a - b).mean())  # noqa: E731
    # "a photo" resembles the input more than any style's output does
    assert all(d(out["photo"], frame) < d(out[n], frame) for n in out if n != "photo")
    # the colour styles land closest to their own filter targets
    for name in ("black and white", "sepia", "thermal"):
        s = next(s for s in DETERMINISTIC_STYLES if s.name == name)
        tgt = {t.name: t.apply(frame).astype(int) for t in DETERMINISTIC_STYLES}
        assert min(tgt, key=lambda n: d(out[name], tgt[n])) == name


def test_style_mae_is_the_distance_to_the_prompts_filter_target(frame):
    src = [frame, frame[:, ::-1].copy()]
    bw = [black_and_white(f) for f in src]
    assert style_mae(src, bw, "a black and white photo") == 0.0
    expected = np.mean([np.abs(f.astype(int) - b).mean() for f, b in zip(src, bw)])
    assert style_mae(src, src, "grayscale") == pytest.approx(expected) and expected > 1
    assert style_mae(src, src, "a photo") == 0.0
    assert style_mae(src, bw, "a watercolor of a castle") is None      # not a toy style
    assert style_mae(src, bw, "pointillism") is None                  # invented content: no single target
