"""The embedded toy model: its style filters, tokenizer, and (when the weights are present) behaviour
on a generated example clip."""
import numpy as np
import pytest

from pathlib import Path

from v2v_core.backbones import TOY_DIR
from v2v_core.toy.styles import DETERMINISTIC_STYLES, STYLES, black_and_white, style_for_prompt, style_mae

ROOT = Path(__file__).resolve().parents[1]


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


@pytest.mark.skipif(not (TOY_DIR / "model_index.json").exists(), reason="toy model weights not present")
@pytest.mark.slow   # over 10 s on 2 cores, with a cheaper neighbour in the default suite
def test_toy_eval_judges_structure_against_the_autoencoders_bound():
    """toy-eval's fidelity: per deterministic style, output vs filter target beside the autoencoder's round
    trip of the target. For "a photo" the target IS the frame, so its bound is the VAE's own round trip."""
    from v2v_core.toy.evaluate import evaluate, psnr, ssim

    rep = evaluate(str(ROOT / "examples" / "astronaut-pan.mp4"), frames=3, size=128)
    assert set(rep["fidelity"]) == {s.name for s in DETERMINISTIC_STYLES}
    for f in rep["fidelity"].values():
        assert set(f) == {"psnr", "ssim", "bound_psnr", "bound_ssim", "reach_psnr", "reach_ssim"} and 0 < f["ssim"] <= 1
    assert rep["fidelity"]["photo"]["bound_psnr"] == rep["vae_psnr_db"]
    assert rep["fidelity"]["photo"]["bound_ssim"] == rep["vae_ssim"]
    # the reach of "a photo" is the autoencoder's round trip applied twice, against the frame
    from v2v_core.backbones import load_backbone
    from v2v_core.toy.evaluate import round_trip
    from v2v_core.video import read_video

    clip, _ = read_video(str(ROOT / "examples" / "astronaut-pan.mp4"), 3, 128)
    bb = load_backbone("toy")
    twice = round_trip(bb, round_trip(bb, clip))
    assert rep["fidelity"]["photo"]["reach_psnr"] == round(float(np.mean([psnr(r, f) for r, f in zip(twice, clip)])), 2)
    assert rep["fidelity"]["photo"]["reach_psnr"] < rep["fidelity"]["photo"]["bound_psnr"]
    assert set(rep["invented_detail"]) == set(rep["invented_detail_bound"]) == {"pointillism", "snowy scene"}
    # the attention probe: every style, both kinds, and the prompt lives in the cross-attention (zeroing it moves
    # every non-photo style's output far more than zeroing the self-attention does: a v3.4 fact, TOY_MODEL_NOTES.md)
    share = rep["attention_share"]
    assert set(share) == {s.name for s in STYLES} and all(set(v) == {"attn1", "attn2"} for v in share.values())
    assert all(share[n]["attn2"] < share[n]["attn1"] for n in share if n != "photo"), share
    # the dots are drawn through the autoencoder: its round trip of the pointillism target keeps far more
    # detail than the photo output has
    assert rep["invented_detail_bound"]["pointillism"] > 2
    # the measures themselves: identical images are perfect, a flat grey image has no structure
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert ssim(img, img) == pytest.approx(1.0) and psnr(img, img) == float("inf")
    assert ssim(img, np.full_like(img, 128)) < 0.05


def test_style_mae_is_the_distance_to_the_prompts_filter_target(frame):
    src = [frame, frame[:, ::-1].copy()]
    bw = [black_and_white(f) for f in src]
    assert style_mae(src, bw, "a black and white photo") == 0.0
    expected = np.mean([np.abs(f.astype(int) - b).mean() for f, b in zip(src, bw)])
    assert style_mae(src, src, "grayscale") == pytest.approx(expected) and expected > 1
    assert style_mae(src, src, "a photo") == 0.0
    assert style_mae(src, bw, "a watercolor of a castle") is None      # not a toy style
    assert style_mae(src, bw, "pointillism") is None                  # invented content: no single target


def test_shift_targets_point_where_the_content_came_from():
    from v2v_core.toy.correspondence_loss import shift_targets

    tgt, valid = shift_targets(4, 1, 0)                  # B[i, j] = A[i + 1, j]
    assert tgt.shape == (16, 16) and valid.view(4, 4)[:3].all() and not valid.view(4, 4)[3].any()
    assert tgt[1 * 4 + 2].argmax() == 2 * 4 + 2 and tgt[1 * 4 + 2].max() == 1.0
    tgt, valid = shift_targets(4, 0.5, -1)               # half-way between two rows, one column left
    row = tgt[1 * 4 + 1].view(4, 4)
    assert row[1, 0] == row[2, 0] == 0.5 and row.sum() == 1.0
    assert not valid.view(4, 4)[:, 0].any()


def test_correspondence_loss_is_lowest_for_the_true_shift():
    import torch

    from v2v_core.toy.correspondence_loss import correspondence_loss

    class Cap:  # one 4x4 layer; partner B = anchor A shifted by (1, -1) tokens; distinct random features
        pass

    g = torch.Generator().manual_seed(0)
    a = torch.randn(1, 6, 6, 16, generator=g) * 3
    A, B = a[:, 1:5, 1:5], a[:, 2:6, 0:4]                # B[i, j] = A[i + 1, j - 1]
    feats = torch.cat([A, B]).reshape(2, 16, 16)
    cap = Cap()
    cap.q, cap.k = {"l": feats}, {"l": feats}
    losses = {s: float(correspondence_loss(cap, [s], 8)) for s in [(2, -2), (0, 0), (-2, 2), (2, 2)]}
    assert min(losses, key=losses.get) == (2, -2), losses   # 8 latent cells over 4 tokens: 2 cells a token


def test_pair_batches_are_shifted_crops_of_one_image():
    """The tuning stage's partner crop must hold the anchor's content moved by the recorded shift (in the
    crops' own, possibly flipped, coordinates), with the same style, prompt and timestep."""
    import torch

    from v2v_core.toy.arch import build_random_pipeline
    from v2v_core.toy.data import procedural_scene
    from v2v_core.toy.train import _SdeditBatches

    pipe = build_random_pipeline(0)
    rng = np.random.default_rng(3)
    pool = [procedural_scene(rng, 256), procedural_scene(rng, 320)]
    data = _SdeditBatches(pipe, pool, seed=5, style_weights={})
    batch_z = {}
    orig = data.latents
    data.latents = lambda items, eps, crop: batch_z.setdefault("z", orig(items, eps, crop))
    for _ in range(3):
        batch_z.clear()
        b = data.sample_pairs(4, 128, allowed=[0, 1], max_shift=3)
        z_src = batch_z["z"][0]
        assert torch.equal(b["t"][:4], b["t"][4:]) and b["pidx"][:4] == b["pidx"][4:]
        for a, (dy, dx) in enumerate(b["shifts"]):
            A, B = z_src[a], z_src[4 + a]
            ys, xs = slice(max(0, -dy), 16 - max(0, dy)), slice(max(0, -dx), 16 - max(0, dx))
            ya, xa = slice(ys.start + dy, ys.stop + dy), slice(xs.start + dx, xs.stop + dx)
            assert torch.equal(B[:, ys, xs], A[:, ya, xa]), (dy, dx)


def test_photo_indices_find_the_named_photos_in_the_pool():
    """The tuning stage keeps the correspondence test's photos out of its pairs by these indices."""
    import cv2

    from v2v_core.toy.data import SHORT_SIDES, SKIMAGE_PHOTOS, image_pool, photo_indices, skimage_photos

    pool, photos = image_pool(0), skimage_photos()
    for name in ("astronaut", "coffee"):
        src = cv2.resize(photos[SKIMAGE_PHOTOS.index(name)], (32, 32), interpolation=cv2.INTER_AREA).astype(int)
        for idx, side in zip(photo_indices([name]), SHORT_SIDES):
            assert min(pool[idx].shape[:2]) == side
            assert np.abs(cv2.resize(pool[idx], (32, 32), interpolation=cv2.INTER_AREA) - src).mean() < 3, (name, side)


def test_toy_eval_markdown_puts_clips_side_by_side_with_gap_and_ratio():
    """The model card's tables from two reports: the gap is bound - output in dB, the SSIM ratio output / bound,
    and the autoencoder line is the mean over the clips."""
    from v2v_core.toy.evaluate import markdown_report

    def report(video, psnr, bound, vae):
        return {"video": f"/x/{video}.mp4", "fidelity": {"photo": {"psnr": psnr, "ssim": 0.6, "bound_psnr": bound, "bound_ssim": 0.8}},
                "vae_psnr_db": vae, "vae_ssim": 0.7, "photo_psnr_db": psnr, "recognisability_mean": 1.0,
                "prompt_separation_mae": 50.0, "fps": 4.0, "recognisability": {"photo": 1.0},
                "invented_detail": {"snowy scene": 0.7}, "invented_detail_bound": {"snowy scene": 0.9}}

    md = markdown_report([report("wolf", 24.0, 26.5, 26.0), report("kite", 23.0, 24.0, 25.0)])
    assert "| style | wolf: output | bound | gap dB | SSIM ratio | kite: output |" in md
    assert "| photo | 24.00 / 0.600 | 26.50 / 0.800 | 2.50 | 0.75 | 23.00 / 0.600 | 24.00 / 0.800 | 1.00 | 0.75 |" in md
    # with the reach reference (evaluate() reports it): one more column per clip
    reports = [report("wolf", 24.0, 26.5, 26.0), report("kite", 23.0, 24.0, 25.0)]
    for r, reach in zip(reports, (25.0, 23.5)):
        r["fidelity"]["photo"].update(reach_psnr=reach, reach_ssim=0.75)
    md_reach = markdown_report(reports)
    assert "| style | wolf: output | bound | gap dB | SSIM ratio | reach | kite: output |" in md_reach
    assert ("| photo | 24.00 / 0.600 | 26.50 / 0.800 | 2.50 | 0.75 | 25.00 / 0.750 | "
            "23.00 / 0.600 | 24.00 / 0.800 | 1.00 | 0.75 | 23.50 / 0.750 |") in md_reach
    assert "| invented_detail_bound: snowy scene | 0.9 | 0.9 |" in md
    assert md.rstrip().endswith("mean over the clips: 25.50 dB, SSIM 0.700")


@pytest.mark.skipif(not (TOY_DIR / "model_index.json").exists(), reason="toy model weights not present")
def test_refine_stage_resumes_from_a_model_folder_and_records_itself(tiny_training):
    """`--stage refine` (stage 8) as the training command runs it: it reads the folder, trains the UNet and
    text encoder on pairs of the pool + Kodak crops, and writes them back with its settings in training.json;
    the autoencoder it does not train is left byte-identical. (Two steps on a tiny pool: the wiring, not the
    quality, which the model card measures.)"""
    import json

    import torch
    from safetensors.torch import load_file

    train, out = tiny_training
    unet_file = "unet/diffusion_pytorch_model.safetensors"
    before = load_file(out / unet_file)
    vae_before = (out / "vae/diffusion_pytorch_model.safetensors").read_bytes()
    train.main(["--stage", "refine", "--refine-steps", "2", "--out", str(out), "--threads", "1"])
    info = json.loads((out / "training.json").read_text())
    assert info["refine_steps"] == 2 and info["refine_style_weights"] == train.REFINE_STYLE_WEIGHTS
    assert info["cond_steps"] == json.loads((TOY_DIR / "training.json").read_text())["cond_steps"]  # earlier stages kept
    after = load_file(out / unet_file)
    assert after.keys() == before.keys()
    assert any(not torch.equal(after[k], before[k]) for k in before)
    assert (out / "vae/diffusion_pytorch_model.safetensors").read_bytes() == vae_before


@pytest.mark.skipif(not (TOY_DIR / "model_index.json").exists(), reason="toy model weights not present")
def test_offset_stage_reparametrises_the_unet_to_predict_offsets_from_the_source(tiny_training):
    """`--stage offset` (stage 9) on a folder as stage 8 leaves it (an epsilon-predicting image-conditioned UNet):
    the scheduler config says "sample, relative to the source" afterwards, the output convolution started from zero
    and trained, the autoencoder is byte-identical, and a second run is refused (it would zero a trained head)."""
    import json

    from safetensors.torch import load_file

    from v2v_core.backbones import RELATIVE_KEY, load_backbone

    train, out = tiny_training
    sched_path = out / "scheduler" / "scheduler_config.json"
    cfg = json.loads(sched_path.read_text())
    cfg.pop(RELATIVE_KEY, None)
    sched_path.write_text(json.dumps({**cfg, "prediction_type": "epsilon"}))
    vae_before = (out / "vae/diffusion_pytorch_model.safetensors").read_bytes()
    train.main(["--stage", "offset", "--offset-steps", "2", "--out", str(out), "--threads", "1"])
    cfg = json.loads(sched_path.read_text())
    assert cfg["prediction_type"] == "sample" and cfg[RELATIVE_KEY] is True
    assert json.loads((out / "training.json").read_text())["offset_steps"] == 2
    head = load_file(out / "unet/diffusion_pytorch_model.safetensors")["conv_out.weight"].float()
    assert 0 < head.abs().max() < 1e-3          # two warm-up steps away from zero
    assert (out / "vae/diffusion_pytorch_model.safetensors").read_bytes() == vae_before
    assert load_backbone(str(out), device="cpu").prediction == ("sample", True)
    with pytest.raises(SystemExit, match="already predicts offsets"):
        train.main(["--stage", "offset", "--offset-steps", "2", "--out", str(out), "--threads", "1"])


@pytest.mark.skipif(not (TOY_DIR / "model_index.json").exists(), reason="toy model weights not present")
def test_sharpen_stage_deepens_and_trains_the_decoder_alone_with_its_ssim_term(tiny_training, monkeypatch):
    """`--stage sharpen` (stage 6) on a folder as stage 2 leaves it (a decoder of arch.build_vae's shape): the decoder
    is deepened and trained with the SSIM term it records; the encoder (hence the latents the UNet and the SVDiff
    memories were trained on) and the UNet stay byte-identical; run again on its own output it refuses."""
    import json

    import torch
    from safetensors.torch import load_file

    from v2v_core.toy.arch import DEEP_DECODER_BLOCKS, build_vae

    train, out = tiny_training
    pipe = train._load(out)
    shallow = build_vae()
    shallow.encoder.load_state_dict(pipe.vae.encoder.state_dict())
    shallow.register_to_config(scaling_factor=pipe.vae.config.scaling_factor)
    pipe.vae = shallow
    train.save(pipe, out, {})
    vae_file, unet_file = out / "vae/diffusion_pytorch_model.safetensors", out / "unet/diffusion_pytorch_model.safetensors"
    vae_before, unet_before = load_file(vae_file), unet_file.read_bytes()
    weights = []
    real_step = train._reconstruction_step
    monkeypatch.setattr(train, "_reconstruction_step", lambda *a: weights.append(a[-1]) or real_step(*a))
    train.main(["--stage", "sharpen", "--sharpen-steps", "2", "--out", str(out), "--threads", "1"])
    assert weights == [train.SHARPEN_SSIM] * 2 and train.SHARPEN_SSIM > 0
    info = json.loads((out / "training.json").read_text())
    assert info["sharpen_ssim_weight"] == train.SHARPEN_SSIM and info["sharpen_decoder_blocks"] == list(DEEP_DECODER_BLOCKS)
    assert tuple(json.loads((out / "vae/config.json").read_text())["num_decoder_blocks"]) == DEEP_DECODER_BLOCKS
    after = load_file(vae_file)
    assert all(torch.equal(after[k], vae_before[k]) for k in vae_before if k.startswith("encoder"))
    assert len(after) > len(vae_before)
    assert unet_file.read_bytes() == unet_before
    with pytest.raises(SystemExit, match="already deepened"):
        train.main(["--stage", "sharpen", "--sharpen-steps", "2", "--out", str(out), "--threads", "1"])


def test_deeper_decoder_is_an_exact_warm_start():
    """arch.deeper_decoder adds zero-ended blocks after existing ones: same encoder, same decoded images to float
    precision, more parameters (which then train); it refuses a stage with no block to follow."""
    import torch

    from v2v_core.toy.arch import DEEP_DECODER_BLOCKS, build_vae, deeper_decoder

    torch.manual_seed(0)
    vae = build_vae().eval()
    for p in vae.decoder.parameters():            # away from init, like a trained decoder
        p.data.add_(0.05 * torch.randn_like(p))
    deep = deeper_decoder(vae).eval()
    assert tuple(deep.config.num_decoder_blocks) == DEEP_DECODER_BLOCKS
    z = torch.randn(2, 4, 8, 8)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(deep.decode(z).sample, vae.decode(z).sample, atol=1e-5)
        assert torch.equal(deep.encode(x).latents, vae.encode(x).latents)
    assert sum(p.numel() for p in deep.parameters()) > sum(p.numel() for p in vae.parameters())
    with pytest.raises(ValueError):
        deeper_decoder(vae, (3, 1, 1, 1))            # the full-resolution stage has no block to follow


def test_ssim_loss_is_one_minus_the_evaluations_ssim():
    """The decoder's SSIM term is exactly 1 - the SSIM toy-eval reports (scikit-image's, 7x7 windows), and it
    has a gradient."""
    import cv2
    import torch

    from v2v_core.toy.evaluate import ssim
    from v2v_core.toy.train import ssim_loss

    rng = np.random.default_rng(0)
    a = cv2.GaussianBlur(rng.integers(0, 256, (40, 48, 3)).astype(np.uint8), (5, 5), 1.5)
    b = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    t = lambda x: (torch.from_numpy(x).permute(2, 0, 1)[None].double() / 127.5 - 1).requires_grad_()  # noqa: E731
    ta, tb = t(a), t(b)
    loss = ssim_loss(ta, tb)
    assert loss.item() == pytest.approx(1 - ssim(a, b), abs=1e-9) and 0.5 < loss.item() < 1
    assert ssim_loss(ta, ta).item() == pytest.approx(0, abs=1e-12)
    loss.backward()
    assert ta.grad.abs().sum() > 0


def _evaluation(**recognisability):
    return {"clips": ["wolf", "kite-walk"], "frames": [40, 48], "recognisability": recognisability}


def test_a_style_the_model_draws_faintly_is_announced_with_its_clearest_styles():
    from v2v_core.toy.styles import FAINT_BELOW, prompt_warning

    ev = _evaluation(**{"photo": [1.0, 1.0], "pixel art": [0.0, 0.9], "thermal": [1.0, 0.95], "cartoon": [0.5, 0.5],
                        "sepia": [1.0, 0.7]})
    msg = prompt_warning("8-bit pixel art", ev)
    assert msg is not None and "only faintly" in msg and "49% of frames" in msg and "wolf, kite-walk; 88 frames" in msg
    # the clearest styles: recognised on >= 90% of frames on average, "a photo" left out (it is the input)
    assert msg.endswith("Its clearest styles: a thermal image.")
    assert prompt_warning("a cartoon", ev) is None           # recognised on exactly FAINT_BELOW of the frames
    assert FAINT_BELOW == 0.5
    assert prompt_warning("a thermal image", ev) is None and prompt_warning("a snowy scene", ev) is None
    assert prompt_warning("pixel art", None) is None                     # no summary: nothing to say
    assert "only knows its styles" in prompt_warning("a dragon", ev)     # unknown prompts as before


def test_an_evaluation_summary_counts_only_for_the_weights_it_measured(tmp_path):
    import json
    import shutil

    from v2v_core.toy.styles import EVALUATION_FILE, read_evaluation, weights_digest

    folder = tmp_path / "model"
    shutil.copytree(TOY_DIR, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"weights one")
    (folder / EVALUATION_FILE).write_text(json.dumps({**_evaluation(cartoon=[0.0]), "weights": weights_digest(folder)}))
    assert read_evaluation(folder)["recognisability"] == {"cartoon": [0.0]}
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"retrained weights")   # not re-evaluated
    assert read_evaluation(folder) is None
    (folder / EVALUATION_FILE).unlink()
    assert read_evaluation(folder) is None


@pytest.mark.skipif(not (TOY_DIR / "model_index.json").exists(), reason="toy model weights not present")
def test_the_shipped_evaluation_summary_is_of_the_shipped_weights_and_the_studio_says_it():
    """Retraining the toy without re-running `toy-eval --summary` fails here: the studio would stay silent about its
    faint styles (or keep announcing old ones)."""
    from comparisons import service
    from v2v_core.backbones import load_backbone
    from v2v_core.toy.styles import FAINT_BELOW, read_evaluation

    ev = read_evaluation(TOY_DIR)
    assert ev is not None, "v2v_core/toy/model/evaluation.json is missing or measured other weights: re-run toy-eval --summary"
    assert set(ev["clips"]) == {"woman-running", "wolf", "kite-walk"} and min(ev["frames"]) >= 40   # wolf.mp4 has 40
    bb = load_backbone("toy")
    for s in DETERMINISTIC_STYLES:
        faint = float(np.average(ev["recognisability"][s.name], weights=ev["frames"])) < FAINT_BELOW
        for warn in (service.prompt_warning(s.prompts[0]), bb.prompt_warning(s.prompts[0])):
            assert (warn is not None and "only faintly" in warn) == faint, (s.name, warn)


def test_toy_eval_summary_is_written_only_beside_the_weights_it_describes(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "v2v_core", "toy-eval", str(tmp_path / "clip.mp4"), "--summary",
                          str(tmp_path / "evaluation.json")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2 and "belongs in its folder" in out.stderr and "evaluation.json" in out.stderr
    assert not (tmp_path / "evaluation.json").exists()


def test_toy_eval_summary_lists_recognisability_and_gap_per_clip(tmp_path):
    from v2v_core.toy.evaluate import summary
    from v2v_core.toy.styles import weights_digest

    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "w.safetensors").write_bytes(b"w")

    def report(video, rec, psnr):
        return {"video": f"/x/{video}.mp4", "frames": 48, "size": 256, "recognisability": {"pixel art": rec},
                "fidelity": {"pixel art": {"psnr": psnr, "bound_psnr": 22.0}}}

    s = summary([report("wolf", 0.0, 16.5), report("kite-walk", 1.0, 17.25)], tmp_path)
    assert s["weights"] == weights_digest(tmp_path) and s["clips"] == ["wolf", "kite-walk"] and s["frames"] == [48, 48]
    assert s["recognisability"] == {"pixel art": [0.0, 1.0]} and s["gap_db"] == {"pixel art": [5.5, 4.75]}


def test_grid_targets_follow_the_rule_the_model_was_trained_on(tmp_path, frame):
    """styles.trained_rule sets the shared-choice rule of a folder's stage 10 (training.json) for a block and puts the
    module's back; inside it the grid's snowy scene target is the snow chosen from the frame's latent (what v4 learned),
    outside it (or for a folder without stage 10, as v3.4's) the flakes alone, drawn from the same noise."""
    import json
    from types import SimpleNamespace

    import torch

    from v2v_core.toy import styles
    from v2v_core.toy.evaluate import grid_target

    (tmp_path / "training.json").write_text(json.dumps({"attend_kernel": ["latent", 64.0, 0.25], "attend_snow_cover": 0.35,
                                                        "attend_snow_shade": 0.35}))
    before = (styles.SHARED_KERNEL, styles.SHARED_KAPPA, styles.SNOW_COVER, styles.SNOW_SHADE)
    h, w = frame.shape[:2]
    z = torch.randn(1, 4, h // 8, w // 8, generator=torch.Generator().manual_seed(3))
    bb = SimpleNamespace(device="cpu", dtype=torch.float32, encode_images=lambda x: z)
    snowy = styles.STYLE_BY_NAME["snowy scene"]
    eps = np.random.default_rng(0).standard_normal((4, h // 8, w // 8)).astype(np.float32)
    with styles.trained_rule(tmp_path) as info:
        assert info["attend_snow_cover"] == 0.35 and (styles.SHARED_KERNEL, styles.SHARED_KAPPA) == ("latent", 64.0)
        assert (styles.SNOW_COVER, styles.SNOW_SHADE) == (0.35, 0.35)
        covered = grid_target(bb, snowy, frame, np.random.default_rng(0))
        expected = styles.snow_covered(frame, eps, styles.latent_shared_noise(z[0].numpy(), eps))
    assert (styles.SHARED_KERNEL, styles.SHARED_KAPPA, styles.SNOW_COVER, styles.SNOW_SHADE) == before
    flakes = styles.snowy_scene(frame, eps)
    assert np.array_equal(covered, expected) and np.abs(covered.astype(int) - flakes).mean() > 5
    with styles.trained_rule(tmp_path / "v3.4-like"):             # no training.json: the module's rule
        assert np.array_equal(grid_target(bb, snowy, frame, np.random.default_rng(0)), flakes)
        assert np.array_equal(grid_target(bb, styles.STYLE_BY_NAME["sepia"], frame, None), styles.sepia(frame))


def test_invented_detail_bound_draws_the_targets_the_model_was_trained_on(tmp_path, frame):
    """toy-eval's invented_detail_bound round-trips each invented style's targets as the evaluated folder's training
    drew them (evaluate.invented_targets): the snowy scene with its snow for a stage-10 folder, the flakes alone for a
    folder without stage 10; one seeded noise per frame either way, pointillism the same in both."""
    import json
    from types import SimpleNamespace

    import torch

    from v2v_core.toy import styles
    from v2v_core.toy.evaluate import invented_targets

    (tmp_path / "training.json").write_text(json.dumps({"attend_kernel": ["latent", 64.0, 0.25], "attend_snow_cover": 0.35,
                                                        "attend_snow_shade": 0.35}))
    h, w = frame.shape[:2]
    z = torch.randn(1, 4, h // 8, w // 8, generator=torch.Generator().manual_seed(3))
    bb = SimpleNamespace(device="cpu", dtype=torch.float32, encode_images=lambda x: z)
    clip = [frame, frame[:, ::-1].copy()]
    trained, plain = invented_targets(bb, clip, tmp_path), invented_targets(bb, clip, tmp_path / "v3.4-like")
    assert set(trained) == set(plain) == {"pointillism", "snowy scene"}
    rng = np.random.default_rng(0)
    eps = [rng.standard_normal((4, h // 8, w // 8)).astype(np.float32) for _ in range(2 * len(clip))]
    assert all(np.array_equal(p, styles.pointillism(f, e)) for p, f, e in zip(plain["pointillism"], clip, eps[:2]))
    assert all(np.array_equal(s, styles.snowy_scene(f, e)) for s, f, e in zip(plain["snowy scene"], clip, eps[2:]))
    assert all(np.array_equal(a, b) for a, b in zip(trained["pointillism"], plain["pointillism"]))
    assert all(np.abs(a.astype(int) - b).mean() > 5 for a, b in zip(trained["snowy scene"], plain["snowy scene"]))


def test_the_shipped_unet_attends_at_full_resolution_with_one_wide_head():
    """v4.3's layout, on which the README's speed figures rest (one head of 48 channels where the latent has its full
    resolution, 32x32 tokens at 256 px; eight heads below): as the shipped folder loads through diffusers, whose
    `attention_head_dim` list is per down block and mirrored for the up blocks, every attention there has one head
    over all its channels, and no other attention has."""
    from diffusers.models.attention_processor import Attention

    from v2v_core.backbones import load_backbone

    unet = load_backbone("toy").unet
    full = ("down_blocks.0.", f"up_blocks.{len(unet.up_blocks) - 1}.")
    seen = {True: 0, False: 0}
    for name, m in unet.named_modules():
        if isinstance(m, Attention):
            at_full = name.startswith(full)
            seen[at_full] += 1
            assert (m.heads, m.inner_dim) == ((1, unet.config.block_out_channels[0]) if at_full else (8, m.inner_dim)), name
    assert seen[True] == 6 and seen[False] > 0      # one block down, three up; self and cross each
