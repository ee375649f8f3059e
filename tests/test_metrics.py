"""Metrics: DIS flow against true flow, warp error behaviour, the paper-compatible arithmetic, CLIP."""
import numpy as np
import pytest

from conftest import shared_video
from v2v_core.__main__ import main as cli
from v2v_core.errors import V2VError
from v2v_core.flow import DISFlow, occlusion, source_flow, warp_backward
from v2v_core.metrics import evaluate_clip, warp_error, warp_error_pair
from v2v_core.synthetic import make_clip


@pytest.mark.parametrize("motion", ["pan", "zoom", "rotate", "object"])
def test_dis_flow_end_point_error_below_one_pixel(motion):
    clip = make_clip(motion, 6, 256)
    dis = DISFlow()
    epes = []
    for k in range(len(clip.flow)):
        f = dis(clip.frames[k], clip.frames[k + 1])
        ok = ~clip.occluded[k]
        ok[:8], ok[-8:], ok[:, :8], ok[:, -8:] = False, False, False, False   # borders: no data beyond the frame
        epes.append(np.linalg.norm(f - clip.flow[k], axis=-1)[ok].mean())
    assert np.mean(epes) < 1.0, epes


def test_warp_error_source_vs_itself_and_shuffled():
    clip = make_clip("pan", 12, 256)
    frames = list(clip.frames)
    sf = source_flow(frames)
    own, _ = warp_error(frames, sf)
    rng = np.random.default_rng(0)
    shuffled = [frames[i] for i in rng.permutation(len(frames))]
    shuf, _ = warp_error(shuffled, sf)
    assert own < 3.0            # only interpolation residue of a textured photo
    assert shuf > 5 * own


def test_flow_is_cached_per_source():
    frames = list(make_clip("zoom", 5, 128).frames)
    assert source_flow(frames) is source_flow(frames)


def test_paper_compatible_variant_wraps_around_like_uint8_subtraction():
    """Hand-made: frame i is all 3, frame i+1 all 5, no motion. True difference 2; uint8 3 - 5 = 254."""
    a = np.full((32, 32, 3), 3, np.uint8)
    b = np.full((32, 32, 3), 5, np.uint8)
    zero = np.zeros((32, 32, 2), np.float32)
    occ = np.zeros((32, 32), bool)
    assert warp_error_pair(a, b, zero, occ, occ) == pytest.approx(2.0)
    assert warp_error_pair(a, b, zero, occ, occ, paper_compatible=True) == pytest.approx(254.0)
    # the other direction does not wrap: 5 - 3 = 2 in both
    assert warp_error_pair(b, a, zero, occ, occ, paper_compatible=True) == pytest.approx(2.0)


def test_occlusion_marks_pixels_that_leave():
    clip = make_clip("shift", 2, 64, speed=4)
    dis = DISFlow()
    f, b = dis(clip.frames[0], clip.frames[1]), dis(clip.frames[1], clip.frames[0])
    occ_i, occ_j = occlusion(f, b)
    # content moves left by 4 px: the left border of frame i leaves, the right border of i+1 is new
    assert occ_i[:, :2].mean() > 0.5 and occ_i[:, 20:40].mean() < 0.1
    assert occ_j[:, -2:].mean() > 0.5
    w = warp_backward(clip.frames[0].astype(np.float32), b)
    assert np.abs(w - clip.frames[1])[~occ_j].mean() < 3


def _tiny_clip_dir(tmp_path):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from v2v_core.toy.arch import build_tokenizer

    tok = build_tokenizer()
    cfg = CLIPConfig(text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_attention_heads=4,
                                      num_hidden_layers=2, max_position_embeddings=32, bos_token_id=0, eos_token_id=1,
                                      pad_token_id=1),
                     vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37,
                                        num_attention_heads=4, num_hidden_layers=2), projection_dim=16)
    CLIPModel(cfg).save_pretrained(tmp_path)
    CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                  tokenizer=tok).save_pretrained(tmp_path)
    return str(tmp_path)


def test_clip_metrics_with_a_tiny_offline_clip(tmp_path):
    clip_dir = _tiny_clip_dir(tmp_path)
    frames = list(make_clip("pan", 4, 64).frames)
    still = [frames[0]] * 4
    r = evaluate_clip(still, still, prompt="a photo", clip_model=clip_dir)
    assert r["clip_consistency"] == pytest.approx(100.0, abs=1e-3)      # identical frames
    assert r["clip_text"] is not None and -100 <= r["clip_text"] <= 100
    assert r["clip_unavailable_reason"] is None
    r2 = evaluate_clip(frames, frames, prompt="a photo", clip_model=clip_dir)
    assert r2["clip_consistency"] < 100.0


def test_clip_unavailable_is_reported_not_zero(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    frames = list(make_clip("pan", 3, 64).frames)
    r = evaluate_clip(frames, frames, clip_model="openai/clip-vit-base-patch32")
    assert r["clip_consistency"] is None and r["clip_text"] is None
    assert "not reachable" in r["clip_unavailable_reason"]


def test_length_rules():
    frames = list(make_clip("pan", 6, 64).frames)
    r = evaluate_clip(frames, frames[:4], clip_model=None)
    assert r["frames"] == 4 and "shorter" in r["note"]
    with pytest.raises(V2VError, match="only 4"):
        evaluate_clip(frames[:4], frames, clip_model=None)


def test_metrics_cli_on_published_edit_pair(tmp_path, capsys):
    """SVDiff's published kite-walk edit (512 px, 18 fps) against its source (900 px, 10 fps)."""
    import json

    src, edit = shared_video("kite-walk.mp4"), shared_video("kite-walk-style.mp4")
    rc = cli(["metrics", "--source", str(src), "--edited", str(edit), "--size", "256", "--frames", "24",
              "--no-clip", "--json", str(tmp_path / "m.json")])
    assert rc == 0
    r = json.loads((tmp_path / "m.json").read_text())
    for k in ("warp_error", "warp_error_paper_compatible", "flow", "frames", "clip_consistency", "clip_text",
              "clip_unavailable_reason"):
        assert k in r
    assert r["frames"] == 24 and r["flow"] == "dis" and r["clip_consistency"] is None
    assert 0 < r["warp_error"] < r["warp_error_paper_compatible"]


def test_metrics_cli_measures_like_a_run_and_says_at_what(tmp_path, capsys):
    """--like-run takes a run's size and frame count from its report.json; every figure says the size and
    frames it was measured at (the JSON and a line on stderr)."""
    import json

    from conftest import ROOT

    run = tmp_path / "run"
    run.mkdir()
    (run / "report.json").write_text(json.dumps({"settings": {"size": 128, "frames": 5}}))
    clip = str(ROOT / "examples" / "coffee-zoom.mp4")
    assert cli(["metrics", "--source", clip, "--edited", clip, "--like-run", str(run), "--no-clip",
                "--json", str(tmp_path / "m.json")]) == 0
    r = json.loads((tmp_path / "m.json").read_text())
    assert r["measured_at"] == {"width": 128, "height": 128, "frames": 5, "source": "resized and cropped to 128 px"}
    assert r["warp_error"] < 3        # the clip against itself: only the flow's own error
    err = capsys.readouterr().err
    assert "measured at 128x128 px over 5 frames" in err and "measured like the run in run/" in err
    assert cli(["metrics", "--source", clip, "--edited", clip, "--like-run", str(tmp_path), "--no-clip"]) == 2
