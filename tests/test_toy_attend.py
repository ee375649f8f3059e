"""Stage 10 of the embedded toy's training (issue #30, experimental, not in the shipped weights): self-attention at
the latent's full resolution, the training-only psychedelic style whose detail is shared by similar tokens, its
losses, and the head built into the first full-resolution block (v2v_core.toy.shared_head)."""
import numpy as np
import pytest

from v2v_core.backbones import TOY_DIR


@pytest.mark.skipif(not (TOY_DIR / "model_index.json").exists(), reason="toy model weights not present")
def test_attend_stage_with_the_built_head_writes_a_loadable_model_whose_head_is_built(tiny_training):
    """`--stage attend --built-head W --self-target` (stage 10, experimental) as the training command runs it: the folder comes back
    with self-attention at the latent's full resolution, the built block's head 0 reads the colour features (its query
    weights the kernel's scale, sqrt(kappa sqrt(d) 2 / C), on the four feature channels, two steps of training
    later), and training.json records the weight and the style's kernel. (Two steps on a tiny pool: the wiring.)"""
    import json
    import math

    from v2v_core.backbones import load_backbone
    from v2v_core.toy import shared_head, styles

    train, out = tiny_training
    calls = []
    own = shared_head.own_head_targets
    shared_head.own_head_targets = lambda pipe, data, b, head: calls.append(own(pipe, data, b, head))
    try:
        train.main(["--stage", "attend", "--attend-steps", "2", "--built-head", "0.1", "--self-target", "--out", str(out),
                    "--threads", "1"])
    finally:
        shared_head.own_head_targets = own
    assert len(calls) == 2                                              # the self-target try re-renders every step
    info = json.loads((out / "training.json").read_text())
    assert info["attend_self_target"] is True and info["attend_built_head"] == 0.1 and info["attend_kernel"] == ["cosine", styles.SHARED_KAPPA, styles.SHARED_BETA]
    unet = load_backbone(str(out)).unet
    attn = dict(unet.named_modules())[shared_head.BUILT_BLOCK].transformer_blocks[0].attn1
    d, c = attn.inner_dim // attn.heads, attn.to_q.in_features
    a = math.sqrt(styles.SHARED_KAPPA * math.sqrt(d) * 2 / c)
    q = attn.to_q.weight[:d].detach()
    assert np.allclose(q[[0, 1, 2, 3], [0, 2, 4, 6]].numpy(), a, rtol=0.05)
    assert q[4:].abs().max() < 0.05 * a                                 # the head's unused dimensions stay near zero


def test_attention_everywhere_is_an_exact_warm_start_with_self_attention_at_full_resolution():
    """arch.attention_everywhere (stage 10): every down and up block gets a transformer block, the latent's full
    resolution included, and until it is trained the UNet computes exactly what it did."""
    import torch
    from diffusers import UNet2DConditionModel

    from v2v_core.toy.arch import attention_everywhere

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(16, 32), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=8,
                                attention_head_dim=4, norm_num_groups=8).eval()
    wide = attention_everywhere(unet).eval()
    full = [n for n, _ in wide.named_modules() if n.endswith("attn1") and n.startswith(("down_blocks.0.", "up_blocks.1."))]
    assert len(full) == 3 and not any(n.startswith(("down_blocks.0.", "up_blocks.1.")) for n, _ in unet.named_modules()
                                      if n.endswith("attn1"))
    x, e = torch.randn(2, 4, 16, 16), torch.randn(2, 5, 8)
    with torch.no_grad():
        assert torch.equal(unet(x, 300, e).sample, wide(x, 300, e).sample)
    assert attention_everywhere(wide) is wide                      # already everywhere: nothing to add


def test_the_built_head_computes_the_shared_choice_and_leaves_the_unet_as_it_was():
    """shared_head.build_shared_head: with features read exactly (a readout that picks the block's input channels),
    head 0 of the full-resolution self-attention returns what shared_head.perfect_head computes from the same colours
    and noise (softmax(style kernel) @ noise / |f|; the noise's own small share of each token's norm is the only
    difference); the UNet's output is unchanged until trained; head_losses is 0 for exact features and output."""
    import torch
    from diffusers import UNet2DConditionModel

    from v2v_core.toy import shared_head
    from v2v_core.toy.arch import attention_everywhere

    torch.manual_seed(0)
    unet = attention_everywhere(UNet2DConditionModel(
        sample_size=8, in_channels=8, out_channels=4, layers_per_block=1, block_out_channels=(48, 96),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=8, attention_head_dim=8, norm_num_groups=16)).eval()
    x, e = torch.randn(1, 8, 8, 8), torch.randn(1, 5, 8)
    with torch.no_grad():
        before = unet(x, 300, e).sample
        readout = torch.zeros(5, 49)
        readout[torch.arange(4), torch.arange(4)] = 1.0                  # colour = channels 0-2, noise = channel 3
        shared_head.build_shared_head(unet, readout)
        assert torch.equal(unet(x, 300, e).sample, before)
        blk = dict(unet.named_modules())[shared_head.BUILT_BLOCK]
        blk.norm = torch.nn.Identity()                                   # so the readout sees the channels as given
        n = 64
        cells = torch.rand(1, n, 3)
        cells[0, :20] = torch.tensor([0.9, 0.2, 0.2]) + 0.02 * torch.randn(20, 3)   # a red region, 20 tokens
        eps0 = torch.randn(1, n)
        h = torch.zeros(1, 48, 8, 8)
        h[0, :3] = cells[0].T.reshape(3, 8, 8)
        h[0, 3] = eps0.reshape(8, 8)
        cap = shared_head.HeadCapture(unet)
        blk(h, encoder_hidden_states=e)
        got = cap.store["out"][0, :, shared_head.OUT_CHANNEL]
        want = shared_head.perfect_head(cells, eps0)[0]
        assert (got - want).norm() < 0.1 * want.norm()
        assert np.corrcoef(got.numpy(), want.numpy())[0, 1] > 0.99
        red = want[:20]                                                  # the red region shares one mean noise
        assert red.std() < 0.1 * want.std() and torch.allclose(got[:20], red, rtol=0.1)
        assert float(shared_head.head_losses(cap, cells, eps0)) < 0.05
        cap.store["out"] = torch.zeros_like(cap.store["out"])
        assert float(shared_head.head_losses(cap, cells, eps0)) > 0.9       # a silent head scores about 1 on its term
        cap.remove()


def test_the_shared_choice_style_is_shared_by_similar_colours_and_moves_with_the_noise_under_them():
    """styles.psychedelic (stage 10's training-only style): two cells of one colour take the same turn wherever they
    are; changing the noise under cells of that colour changes the turn of every cell of that colour, and noise under
    a very different colour changes nothing (the choice is an attention over similar tokens, written out)."""
    from v2v_core.toy.styles import shared_noise

    img = np.zeros((64, 64, 3), np.uint8)
    img[:, :32] = (200, 40, 40)                                    # left half red, right half blue (8x8 cells)
    img[:, 32:] = (40, 40, 200)
    eps = np.random.default_rng(0).standard_normal((4, 8, 8)).astype(np.float32)
    m = shared_noise(img, eps)
    assert np.allclose(m[:, :4], m[0, 0]) and np.allclose(m[:, 4:], m[0, 4])
    assert np.isclose(m[0, 0], eps[0, :, :4].mean(), atol=1e-5)     # a uniform region: the mean noise under it
    moved = eps.copy()
    moved[0, 3, 1] += 8.0                                          # more noise under one red cell
    m2 = shared_noise(img, moved)
    assert np.allclose(m2[:, :4] - m[:, :4], 8.0 / 32, atol=1e-5) and np.allclose(m2[:, 4:], m[:, 4:], atol=1e-6)


def test_with_shared_texture_a_region_takes_the_noise_of_its_textured_cell(monkeypatch):
    """styles.SHARED_TEXTURE (stage 10's --shared-texture): the logits add G x each key cell's grey-level std, so a flat
    red region with one striped red cell takes (nearly) that cell's noise, the blue half keeps its plain mean, and
    with G = 0 the red region is back to its mean."""
    from v2v_core.toy import styles

    img = np.zeros((64, 64, 3), np.uint8)
    img[:, :32] = (200, 40, 40)
    img[:, 32:] = (40, 40, 200)
    img[24:32:2, 8:16] = (255, 60, 60)                             # cell (3, 1): red with bright stripes, std ~0.05
    tex = styles.cell_texture(img, 8, 8).reshape(8, 8)
    assert tex[3, 1] > 0.04 and np.delete(tex.reshape(-1), 3 * 8 + 1).max() < 1e-3       # float rounding of a flat cell
    eps = np.random.default_rng(0).standard_normal((4, 8, 8)).astype(np.float32)
    eps[0, 3, 1] = 2.0
    monkeypatch.setattr(styles, "SHARED_TEXTURE", 0.0)
    plain = styles.shared_noise(img, eps)
    monkeypatch.setattr(styles, "SHARED_TEXTURE", 400.0)
    m = styles.shared_noise(img, eps)
    assert abs(plain[0, 0]) < 0.5 and m[0, 0] > 1.8 and np.allclose(m[:, :4], m[0, 0], atol=0.05)
    assert np.allclose(m[:, 4:], eps[0, :, 4:].mean(), atol=1e-5)  # no texture in the blue half: its mean, as before


def test_shared_attention_loss_is_the_cross_entropy_by_hand():
    """correspondence_loss.shared_attention_loss: per head, -sum_j softmax(target)_ij log softmax(q_h k_h^T / sqrt(d))_ij,
    averaged; minimal (the target's entropy) when every head's logits equal the target's."""
    import math

    import torch

    from v2v_core.toy.correspondence_loss import shared_attention_loss

    class Cap:  # one layer, 2 heads of 1 channel, 3 tokens
        heads = {"l": 2}
        q = {"l": torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])}
        k = {"l": torch.tensor([[[2.0, 0.0], [0.0, 0.0], [0.0, -1.0]]])}

    target = torch.tensor([[[0.0, 1.0, 2.0], [1.0, 0.0, 0.0], [0.0, 0.0, 3.0]]])
    p = torch.softmax(target, -1)
    expected = []
    for h in range(2):
        qh, kh = Cap.q["l"][0][:, h:h + 1], Cap.k["l"][0][:, h:h + 1]
        expected.append(-(p[0] * torch.log_softmax(qh @ kh.T / math.sqrt(1), -1)).sum(-1).mean())
    assert torch.isclose(shared_attention_loss(Cap, target), torch.stack(expected).mean())
    entropy = -(p * p.log()).sum(-1).mean()
    assert shared_attention_loss(Cap, target) > entropy


def test_shared_mean_is_the_styles_rule_batched_and_the_probe_reads_the_attention_output():
    """correspondence_loss.shared_mean on a batch equals styles.shared_noise frame by frame; shared_output_loss is the
    MSE of each layer's probe of its self-attention output against the choice (by hand, a probe that sums the
    channels), average-pooled to the grid of a layer of fewer tokens; a layer whose tokens are no square grid is left out."""
    import torch
    from diffusers.models.attention_processor import Attention

    from v2v_core.toy.correspondence_loss import AttnOutCapture, pooled_choice, shared_mean, shared_output_loss
    from v2v_core.toy.styles import SHARED_KAPPA, cell_colours, shared_logits, shared_noise

    # the cosine kernel by hand: grey's features are (0, 0, 0, 1); grey against (0.9, 0.5, 0.5): beta / |(0.4, 0, 0, beta)|
    two = np.array([[0.5, 0.5, 0.5], [0.9, 0.5, 0.5]], np.float32)
    cross = SHARED_KAPPA * 0.25 / np.hypot(0.4, 0.25)
    assert np.allclose(shared_logits(two), [[SHARED_KAPPA, cross], [cross, SHARED_KAPPA]], atol=1e-4)
    rng = np.random.default_rng(0)
    img = np.repeat(np.repeat(rng.integers(0, 256, (4, 4, 3)), 16, 0), 16, 1).astype(np.uint8)   # 64 px, 4x4 patches
    eps = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    c = torch.from_numpy(np.stack([cell_colours(img, 8, 8)] * 2))
    logits = shared_logits(c)                                      # batched, on torch tensors
    m = shared_mean(logits, torch.from_numpy(eps[:, 0]).flatten(1))
    for b in range(2):
        assert np.allclose(m[b].view(8, 8).numpy(), shared_noise(img, eps[b]), atol=1e-5)

    unet = torch.nn.Module()
    unet.down_blocks = torch.nn.ModuleList([torch.nn.Module(), torch.nn.Module()])
    for blk in unet.down_blocks:
        blk.attn1 = Attention(query_dim=4, heads=1, dim_head=4)
    cap = AttnOutCapture(unet, prefixes=("down_blocks.",))
    assert set(cap.probes) == {"down_blocks_0_attn1", "down_blocks_1_attn1"}
    for probe in cap.probes.values():
        torch.nn.init.ones_(probe.weight)
        torch.nn.init.zeros_(probe.bias)
    full, coarse = torch.randn(2, 64, 4), torch.randn(2, 16, 4)
    out = unet.down_blocks[0].attn1(full)
    out_coarse = unet.down_blocks[1].attn1(coarse)           # 16 tokens: the choice's 64 average-pooled 2x2
    choice = torch.tanh(10 * m)
    pooled = choice.view(2, 4, 2, 4, 2).mean((2, 4)).flatten(1)
    expected = (((out.sum(-1) - choice) ** 2).mean() + ((out_coarse.sum(-1) - pooled) ** 2).mean()) / 2
    assert torch.isclose(shared_output_loss(cap, choice), expected)
    assert pooled_choice(torch.arange(16.0)[None], 4).tolist() == [[2.5, 4.5, 10.5, 12.5]]
    assert pooled_choice(choice, 12) is None                 # no square grid: the layer is left out
    cap.remove()
    unet.down_blocks[0].attn1(torch.randn(2, 64, 4))
    assert torch.equal(cap.out["down_blocks.0.attn1"], out)             # removed: no longer captured


@pytest.mark.skipif(not (TOY_DIR / "model_index.json").exists(), reason="toy model weights not present")
def test_attend_stage_from_scratch_with_the_models_own_softmax_trained_to_match(tiny_training, monkeypatch):
    """`--attend-from-scratch --corr-sharpen 1 --corr-layers ...` (stage 10's session-18 tries): the UNet of the
    attention-everywhere layout starts from a fresh initialisation, not v3.4's weights, while the autoencoder stays
    byte-identical; the correspondence loss's logit factor and layers are the ones given; training.json records them."""
    import json

    import torch
    from safetensors.torch import load_file

    from v2v_core.toy import correspondence_loss, styles

    for name in ("CORR_SHARPEN", "CORR_LAYERS"):                                           # put back afterwards
        monkeypatch.setattr(correspondence_loss, name, getattr(correspondence_loss, name))
    for name in ("SHARED_TEXTURE", "SHARED_GAIN", "SHARED_KERNEL", "SHARED_KAPPA", "SNOW_COVER", "SNOW_SHADE"):
        monkeypatch.setattr(styles, name, getattr(styles, name))
    from v2v_core.toy import batches
    monkeypatch.setattr(batches, "IN_STYLE_FRESH_NOISE", batches.IN_STYLE_FRESH_NOISE)
    train, out = tiny_training
    before_unet = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    before_vae = (out / "vae" / "diffusion_pytorch_model.safetensors").read_bytes()
    seeds, tune = [], train.tune_unet                   # the batch seed each run hands to the training loop
    monkeypatch.setattr(train, "tune_unet", lambda pipe, pool, steps, seed, **kw: (seeds.append(seed), tune(pipe, pool, steps, seed, **kw))[1])
    train.main(["--stage", "attend", "--attend-steps", "1", "--attend-from-scratch", "--corr-sharpen", "1",
                "--corr-layers", "down_blocks,up_blocks", "--shared-weight", "0", "--shared-out-weight", "0", "--out", str(out), "--threads", "1"])
    info = json.loads((out / "training.json").read_text())
    assert info["attend_from_scratch"] is True and info["attend_corr_sharpen"] == 1.0 and info["attend_lr"] == train.UNET_LR
    assert info["attend_corr_layers"] == ["down_blocks", "up_blocks"]
    assert correspondence_loss.CORR_SHARPEN == 1.0 and correspondence_loss.CORR_LAYERS == ("down_blocks", "up_blocks")
    after = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    w0, w1 = before_unet["conv_in.weight"].float(), after["conv_in.weight"].float()
    assert w0.shape == w1.shape and not torch.allclose(w0, w1, atol=0.05)       # one step from v3.4 would be within 1e-3
    assert "down_blocks.0.attentions.0.proj_in.weight" in after                # the layout: attention at full resolution
    assert (out / "vae" / "diffusion_pytorch_model.safetensors").read_bytes() == before_vae

    # Run again on that folder without --attend-from-scratch: it continues the same weights at the rate asked for
    # (--attend-lr), and training.json counts the steps of both runs and still says where they started; this run with
    # the winner-takes-all share (--commit) and the texture rule (--shared-texture) too.
    train.main(["--stage", "attend", "--attend-steps", "1", "--attend-lr", "2e-4", "--corr-sharpen", "1", "--commit", "0.8",
                "--shared-texture", "50", "--psychedelic-weight", "39", "--latent-kernel", "64",
                "--shared-weight", "0", "--shared-out-weight", "0", "--out", str(out), "--threads", "1"])
    info = json.loads((out / "training.json").read_text())
    assert info["attend_steps"] == 2 and info["attend_run_steps"] == 1 and info["attend_lr"] == 2e-4
    assert info["attend_commit"] == 0.8 and info["attend_shared_texture"] == 50 and info["attend_shared_gain"] == 1.0
    assert info["attend_kernel"][:2] == ["latent", 64] and info["attend_style_weights"]["psychedelic"] == 39 and info["attend_style_weights"]["cartoon"] == 2.0
    assert info["attend_from_scratch"] is True
    again = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    assert again.keys() == after.keys()
    assert torch.allclose(again["conv_in.weight"].float(), w1, atol=5e-3)     # continued, not re-initialised
    assert seeds[1] != seeds[0]                         # and on batches of its own, not the first run's replayed

    # The probe loss on the attention's output under the latent kernel (its target keyed on the source latents), after
    # the stem trained alone on that choice (--stem-first); the snowy scene snow-covered by that choice (--snow-cover).
    train.main(["--stage", "attend", "--attend-steps", "1", "--corr-sharpen", "1", "--latent-kernel", "64", "--stem-first", "2",
                "--shared-weight", "0", "--shared-out-weight", "0.5", "--probe-lr", "0.01", "--snow-cover", "0.6", "--snow-shade", "0.3",
                "--style-weight", "snowy scene=4", "--style-weight", "sepia=2", "--keep-fresh-noise", "--out", str(out), "--threads", "1"])
    info = json.loads((out / "training.json").read_text())
    assert info["attend_steps"] == 3 and info["attend_shared_out_weight"] == 0.5 and info["attend_kernel"][:2] == ["latent", 64]
    assert info["attend_snow_cover"] == 0.6 and info["attend_snow_shade"] == 0.3 and info["attend_style_weights"]["snowy scene"] == 4 and info["attend_keep_fresh_noise"]
    assert info["attend_style_weights"]["sepia"] == 2 and info["attend_style_weights"]["psychedelic"] == 3.0
    assert info["attend_stem_first"] == 2 and info["attend_stem_lr"] == 1e-3 and info["attend_stem_probe_relative_mse"] > 0
    assert len(set(seeds)) == 3

    # stem_first alone: the stem moves, nothing after the probed layer does, and every weight trains again afterwards.
    from v2v_core.toy import attend

    pipe = train._load(out)
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    attend.stem_first(pipe, train.image_pool(0), 2, 0, train)
    now = pipe.unet.state_dict()
    assert not torch.equal(now["conv_in.weight"], before["conv_in.weight"])
    assert not torch.equal(now["down_blocks.0.attentions.0.proj_in.weight"], before["down_blocks.0.attentions.0.proj_in.weight"])
    assert all(torch.equal(now[k], before[k]) for k in before if k.startswith(("mid_block", "up_blocks", "down_blocks.1")))
    assert all(p.requires_grad for p in pipe.unet.parameters())


def test_commit_loss_scores_either_choice_outright_and_not_their_mean():
    """The winner-takes-all share of stage 10's --commit: per latent cell the nearer of target and alternative, so
    drawing either choice scores 0 and drawing their mean scores the squared half-distance; with no alternative it is
    the x0 MSE itself. Cells choose independently: half the cells on each choice still scores 0."""
    import torch
    import torch.nn.functional as F

    from v2v_core.toy.train import commit_loss

    a, b = torch.zeros(2, 4, 3, 3), torch.full((2, 4, 3, 3), 2.0)
    assert commit_loss(a, a, b) == 0 and commit_loss(b, a, b) == 0
    assert commit_loss((a + b) / 2, a, b) == pytest.approx(1.0)            # ((2 - 0) / 2)^2
    mixed = torch.where(torch.arange(3)[None, None, :, None] % 2 == 0, a, b)
    assert commit_loss(mixed, a, b) == 0
    x = torch.randn(2, 4, 3, 3)
    assert torch.allclose(commit_loss(x, b, b), F.mse_loss(x, b))


def test_the_psychedelic_alternative_is_the_opposite_turn():
    """With alternatives=("psychedelic",) the batches carry, for a psychedelic sample, the encoding of the same crop
    rendered with every hue turn reversed (the shared noise is linear in eps, so -eps reverses it), and for any other
    style the target itself."""
    import torch

    from v2v_core.toy import styles
    from v2v_core.toy.arch import build_random_pipeline
    from v2v_core.toy.batches import _encode, _SdeditBatches
    from v2v_core.toy.data import procedural_scene

    rng = np.random.default_rng(4)
    img = procedural_scene(rng, 128)
    eps = rng.standard_normal((4, 16, 16)).astype(np.float32)
    m = styles.shared_noise(img, eps)
    assert np.abs(m).max() > 0.05
    assert np.array_equal(styles.psychedelic(img, -eps), styles.turned(img, -m))
    assert not np.array_equal(styles.psychedelic(img, eps), styles.psychedelic(img, -eps))

    pipe = build_random_pipeline(0)
    sty = styles.STYLES + (styles.PSYCHEDELIC,)
    data = _SdeditBatches(pipe, [img], seed=1, style_weights={}, styles=sty, alternatives=("psychedelic",))
    psy, sepia = sty.index(styles.PSYCHEDELIC), sty.index(styles.STYLE_BY_NAME["sepia"])
    e = torch.from_numpy(np.stack([eps, eps]))
    z_src, z_tgt, z_alt = data.latents([(0, 0, 0, False, psy), (0, 0, 0, False, sepia)], e, 128)
    with torch.no_grad():
        want = _encode(pipe.vae, [styles.psychedelic(img, -eps)])[0]
    assert torch.allclose(z_alt[0], want, atol=1e-5) and not torch.allclose(z_alt[0], z_tgt[0], atol=1e-2)
    assert torch.equal(z_alt[1], z_tgt[1])


def test_the_latent_kernel_keys_the_choice_on_the_source_latent(monkeypatch):
    """styles.latent_shared_noise (stage 10's --latent-kernel): cells whose source latents point the same way share one
    value, the mean noise under them; a cell of another direction keeps its own. Under that kernel the batches render
    the psychedelic target from the crop's source latent as the UNet gets it (flipped with the crop)."""
    import torch

    from v2v_core.toy import batches, styles

    z = np.zeros((4, 2, 2), np.float32)
    z[0] = 1.0                                                      # three cells along channel 0 ...
    z[:, 1, 1] = (0, 0, 0, 1)                                       # ... one along channel 3 (cos 0 with them)
    eps = np.arange(16, dtype=np.float32).reshape(4, 2, 2)
    monkeypatch.setattr(styles, "SHARED_KAPPA", 200.0)
    m = styles.latent_shared_noise(z, eps)
    assert np.allclose(m[[0, 0, 1], [0, 1, 0]], np.mean([0, 1, 2]), atol=1e-4) and np.isclose(m[1, 1], 3.0, atol=1e-4)

    # Batched on torch tensors (the probe loss's target, train.tune_unet): the same value sample by sample.
    from v2v_core.toy.correspondence_loss import shared_mean

    zz = np.stack([z, np.random.default_rng(1).standard_normal((4, 2, 2)).astype(np.float32)])
    ee = np.stack([eps, eps[::-1].copy()])
    mb = shared_mean(styles.latent_logits(torch.from_numpy(zz)), torch.from_numpy(ee[:, 0]).flatten(1))
    for k in range(2):
        assert np.allclose(mb[k].numpy().reshape(2, 2), styles.latent_shared_noise(zz[k], ee[k]), atol=1e-5)
    # Keys of other frames side by side (the oracle's bank): the frame's own block equals the frame alone.
    both = styles.latent_logits(z, np.concatenate([z, zz[1]], -2))
    assert both.shape == (4, 8) and np.allclose(both[:, :4], styles.latent_logits(z), atol=1e-5)

    monkeypatch.setattr(styles, "SHARED_KERNEL", "latent")
    img = np.full((16, 16, 3), 120, np.uint8)
    img[:, :, 0] = 200
    out = batches._render(styles.PSYCHEDELIC, img, eps, torch.from_numpy(z))
    assert np.array_equal(out, styles.turned(img, m))
    assert np.array_equal(batches._render(styles.STYLE_BY_NAME["pointillism"], img, eps, torch.from_numpy(z)),
                          styles.STYLE_BY_NAME["pointillism"].apply(img, eps=eps))


def test_snow_cover_whitens_where_the_shared_choice_is_positive_and_only_then(monkeypatch):
    """styles.snow_covered (stage 10's --snow-cover): the snowy scene, plus white where the shared noise m is positive
    (far from the edge: the full SNOW_COVER share), nothing where it is negative; the batches render it from the crop's
    source latent only when SNOW_COVER is set under the latent kernel."""
    import torch

    from v2v_core.toy import batches, styles

    monkeypatch.setattr(styles, "SNOW_COVER", 0.5)
    img = np.full((64, 64, 3), 100, np.uint8)
    eps = np.full((4, 8, 8), -3.0, np.float32)            # no flakes: channel 0 never above 1.4
    m = np.full((8, 8), -1.0, np.float32)
    m[:, 4:] = 1.0                                          # the right half snow-covered
    out, plain = styles.snow_covered(img, eps, m).astype(np.float32), styles.snowy_scene(img, eps).astype(np.float32)
    assert np.array_equal(out[:, :20], plain[:, :20])
    want = 0.5 * plain[:, 50:] + 0.5 * styles.SNOW_WHITE
    assert np.abs(out[:, 50:] - want).max() <= 1.0
    # --snow-shade: the bare side takes the cover's mirror image by its share (away from white), the snow side is as
    # it was; at equal shares the two choices average to the plain snowy scene
    monkeypatch.setattr(styles, "SNOW_SHADE", 0.25)
    shaded = styles.snow_covered(img, eps, m).astype(np.float32)
    assert np.abs(shaded[:, :20] - (1.25 * plain[:, :20] - 0.25 * styles.SNOW_WHITE)).max() <= 1.0
    assert np.abs(shaded[:, 50:] - want).max() <= 1.0
    assert shaded[:, :20].mean() < plain[:, :20].mean() - 5
    monkeypatch.setattr(styles, "SNOW_SHADE", 0.5)
    light = np.full((64, 64, 3), 160, np.uint8)            # bright enough that the shade side does not clip at 0
    both = styles.snow_covered(light, eps, m).astype(np.float32) + styles.snow_covered(light, eps, -m).astype(np.float32)
    far = np.r_[0:20, 44:64]                                 # away from the edge, where the cubic upsampling overshoots
    assert np.abs(both[:, far] / 2 - styles.snowy_scene(light, eps)[:, far]).max() <= 1.0
    monkeypatch.setattr(styles, "SNOW_SHADE", 0.0)

    rng = np.random.default_rng(2)
    z = rng.standard_normal((4, 8, 8)).astype(np.float32)
    eps[0] = rng.uniform(-1.0, 1.3, (8, 8))                 # a shared choice of both signs, still no flakes
    monkeypatch.setattr(styles, "SHARED_KERNEL", "latent")
    snowy = styles.STYLE_BY_NAME["snowy scene"]
    got = batches._render(snowy, img, eps, torch.from_numpy(z))
    assert np.array_equal(got, styles.snow_covered(img, eps, styles.latent_shared_noise(z, eps)))
    assert not np.array_equal(got, snowy.apply(img, eps=eps))
    # the commit loss's alternative: the opposite snow, the same flakes (not the rendering from -eps)
    opp = batches._render(snowy, img, eps, torch.from_numpy(z), opposite=True)
    assert np.array_equal(opp, styles.snow_covered(img, eps, -styles.latent_shared_noise(z, eps)))
    assert not np.array_equal(opp, got)
    assert batches.commit_alternatives() == ("psychedelic", "snowy scene")
    monkeypatch.setattr(styles, "SNOW_COVER", 0.0)
    assert np.array_equal(batches._render(snowy, img, eps, torch.from_numpy(z)), snowy.apply(img, eps=eps))
    assert batches.commit_alternatives() == ("psychedelic",)


def test_style_weight_items_name_styles_or_stop_the_run():
    import pytest

    from v2v_core.toy.attend import style_weights

    assert style_weights(["snowy scene=5", "sepia = 2", "psychedelic=1"]) == {"snowy scene": 5.0, "sepia": 2.0, "psychedelic": 1.0}
    with pytest.raises(SystemExit, match="sepai"):
        style_weights(["sepai=2"])


def test_fresh_noise_goes_to_the_in_style_samples_only_and_pairs_share_it_where_they_share_their_noise(monkeypatch):
    """batches.IN_STYLE_FRESH_NOISE (stage 10's --keep-fresh-noise): an in-style sample is its target noised with
    another noise than the one the target was drawn from; a source sample keeps its own; a pair that shares its
    rendering noise shares the fresh one too. Off (every earlier stage), nothing changes."""
    import torch

    from v2v_core.toy import batches, styles
    from v2v_core.toy.arch import build_random_pipeline
    from v2v_core.toy.data import procedural_scene

    pipe = build_random_pipeline(0)
    data = batches._SdeditBatches(pipe, [procedural_scene(np.random.default_rng(5), 160)], seed=2, style_weights={},
                                  styles=styles.STYLES)
    z_src, z_tgt, eps, fresh = (torch.randn(4, 4, 2, 2) for _ in range(4))
    keep, t = torch.tensor([True, False, True, False]), torch.full((4,), 300)
    x_t, a = data.noised(z_src, z_tgt, eps, keep, t, fresh)
    want = torch.stack([z_tgt[0], z_src[1], z_tgt[2], z_src[3]])
    noise = torch.stack([fresh[0], eps[1], fresh[2], eps[3]])
    assert torch.allclose(x_t, a.sqrt() * want + (1 - a).sqrt() * noise)
    plain, _ = data.noised(z_src, z_tgt, eps, keep, t)                        # without it: eps for every sample
    assert torch.allclose(plain, a.sqrt() * want + (1 - a).sqrt() * eps) and not torch.allclose(plain, x_t)

    monkeypatch.setattr(batches, "IN_STYLE_P", 1.0)
    monkeypatch.setattr(batches, "IN_STYLE_FRESH_NOISE", True)
    b = data.sample_pairs(6, 32, [0], 1)
    a = b["a"].sqrt()
    noise = (b["x_t"] - a * b["z_tgt"]) / (1 - b["a"]).sqrt()
    assert not torch.allclose(noise, b["eps"], atol=1e-3)                     # not the rendering noise
    shared = [k for k in range(6) if torch.equal(b["eps"][k], b["eps"][6 + k])]
    assert shared and all(torch.allclose(noise[k], noise[6 + k], atol=1e-4) for k in shared)


def test_unrolled_pairs_are_the_models_own_first_step_noised_again_at_the_streams_second_timestep():
    """train.unroll_second_step (stage 10's --unroll): a picked pair's input is the model's own x0 from its first
    input, noised at the 2-step schedule's second timestep (engine.t_index_list: 399 -> 199, 499 -> 259) with a new
    noise that the pair shares where it shares its first one; in-style pairs, the target and the rendering noise are
    left alone; share 0 changes nothing."""
    import torch

    from v2v_core.backbones import prediction_of, x0_from_output
    from v2v_core.toy import batches, styles, train
    from v2v_core.toy.arch import build_random_pipeline
    from v2v_core.toy.data import procedural_scene

    assert train.second_timestep(torch.tensor([399, 499, 299])).tolist() == [199, 259, 159]
    pipe = build_random_pipeline(0)
    data = batches._SdeditBatches(pipe, [procedural_scene(np.random.default_rng(5), 160)], seed=2, style_weights={},
                                  styles=styles.STYLES)
    b = data.sample_pairs(8, 32, [0], 1)
    before = {k: b[k].clone() for k in ("x_t", "a", "t", "z_tgt", "eps")}
    train.unroll_second_step(pipe, data, b, 0.0)
    assert all(torch.equal(b[k], v) for k, v in before.items())

    b["keep"][:] = torch.tensor([True, False] * 4).repeat(2)
    train.unroll_second_step(pipe, data, b, 1.0)
    moved = ~b["keep"]
    assert torch.equal(b["x_t"][~moved], before["x_t"][~moved]) and torch.equal(b["t"][~moved], before["t"][~moved])
    assert torch.equal(b["t"][moved], train.second_timestep(before["t"][moved]))
    assert torch.equal(b["z_tgt"], before["z_tgt"]) and torch.equal(b["eps"], before["eps"])
    with torch.no_grad():
        emb = pipe.text_encoder(data.ids[b["pidx"]])[0]
        a = before["a"]
        out = pipe.unet(before["x_t"], before["t"], encoder_hidden_states=emb).sample
        x0 = x0_from_output(*prediction_of(pipe.scheduler.config), before["x_t"], out, a.sqrt(), (1 - a).sqrt(), b["z_cond"])
    a2 = data.abar[b["t"]][:, None, None, None]
    assert torch.allclose(b["a"], a2)
    noise2 = (b["x_t"] - a2.sqrt() * x0) / (1 - a2).sqrt()
    assert torch.allclose(b["x_t"][moved], (a2.sqrt() * x0 + (1 - a2).sqrt() * noise2)[moved])
    assert not torch.allclose(noise2[moved], before["eps"][moved], atol=1e-2)          # a new noise, unit scale
    assert 0.7 < float(noise2[moved].std()) < 1.3
    shared = [k for k in range(8) if moved[k] and torch.equal(b["eps"][k], b["eps"][8 + k])]
    own = [k for k in range(8) if moved[k] and k not in shared]
    assert shared and own
    assert all(torch.allclose(noise2[k], noise2[8 + k], atol=1e-3) for k in shared)
    assert all(not torch.allclose(noise2[k], noise2[8 + k], atol=1e-2) for k in own)


def _tiny_everywhere_unet():
    """A two-level UNet of stage 10's layout (4 heads at each level; full resolution: down_blocks.0, up_blocks.1)."""
    from diffusers import UNet2DConditionModel

    from v2v_core.toy.arch import attention_everywhere

    return attention_everywhere(UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=8, attention_head_dim=4, norm_num_groups=8))


def test_attention_drop_skips_the_full_resolution_self_attention_of_the_drawn_samples_only_while_training():
    """attend.AttentionDrop (--drop-attention): with gradients on, the samples it draws (torch.rand >= p on its own
    generator) come out as the UNet with those layers' attention output weights zeroed computes them, the others as the
    untouched UNet; under no_grad, and after remove(), every sample is the untouched UNet's."""
    import copy

    import torch

    from v2v_core.toy.attend import AttentionDrop
    from v2v_core.toy.correspondence_loss import self_attention_under

    torch.manual_seed(0)
    unet = _tiny_everywhere_unet()
    for p in unet.parameters():                      # attention_everywhere's fresh blocks start as no-ops: wake them
        p.data += 0.05 * torch.randn_like(p)
    prefixes = ("down_blocks.0.", "up_blocks.1.")
    skipped = copy.deepcopy(unet)
    for _, m in self_attention_under(skipped, prefixes):
        m.to_out[0].weight.data.zero_()
        m.to_out[0].bias.data.zero_()
    x, e = torch.randn(8, 4, 16, 16), torch.randn(8, 5, 8)
    with torch.no_grad():
        whole, without = unet(x, 300, e).sample, skipped(x, 300, e).sample
    assert (whole - without).abs().amax(dim=(1, 2, 3)).min() > 1e-3        # the layers matter for every sample

    drop = AttentionDrop(unet, prefixes, 0.5, torch.Generator().manual_seed(7))
    out = unet(x, 300, e).sample.detach()
    dropped = torch.rand(8, generator=torch.Generator().manual_seed(7)) < 0.5
    assert 0 < int(dropped.sum()) < 8
    assert torch.allclose(out[dropped], without[dropped], atol=1e-5)
    assert torch.allclose(out[~dropped], whole[~dropped], atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(unet(x, 300, e).sample, whole, atol=1e-6)
    drop.remove()
    assert torch.allclose(unet(x, 300, e).sample.detach(), whole, atol=1e-6)
    with pytest.raises(SystemExit, match="no self-attention layer"):
        AttentionDrop(unet, ("nowhere.",), 0.5, torch.Generator())


def test_full_res_heads_regroup_the_full_resolution_attention_and_keep_every_weight(tmp_path):
    """arch.with_full_res_heads (--full-res-heads): the first down block's and the last up block's attention get the
    asked number of heads, the other levels keep theirs, every weight is kept, the config written with the model says
    so (a reload has them), and a one-head self-attention layer computes softmax(Q K^T / sqrt(C)) V by hand."""
    import torch
    from diffusers import UNet2DConditionModel

    from v2v_core.toy.arch import heads_of, with_full_res_heads

    torch.manual_seed(0)
    unet = _tiny_everywhere_unet()
    assert with_full_res_heads(unet, 4) is unet
    one = with_full_res_heads(unet, 1)
    heads = {n: m.heads for n, m in one.named_modules() if n.endswith(("attn1", "attn2"))}
    assert all(h == (1 if n.startswith(("down_blocks.0.", "up_blocks.1.")) else 4) for n, h in heads.items())
    assert sum(h == 1 for h in heads.values()) == 6 and heads_of(one.config) == (1, 4)
    a, b = unet.state_dict(), one.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    one.save_pretrained(tmp_path)
    assert heads_of(UNet2DConditionModel.from_pretrained(tmp_path).config) == (1, 4)

    attn = one.down_blocks[0].attentions[0].transformer_blocks[0].attn1
    x = torch.randn(2, 64, 16)
    q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)
    want = attn.to_out[0](torch.softmax(q @ k.transpose(1, 2) / 16 ** 0.5, -1) @ v)
    assert torch.allclose(attn(x), want, atol=1e-5)
