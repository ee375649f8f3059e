"""Architecture of the embedded toy model, in diffusers' and transformers' own classes.

Sized for a 2-core CPU (measured there, 256 px frames, 32x32 latents, channels_last):
- VAE: ``AutoencoderTiny`` (f=8, 4 latent channels), 48 channels, no blocks at full resolution and
  the extra capacity at latent resolution: about 25 ms to encode + 36 ms to decode a 256 px frame (stage 6
  adds a decoder block at 1/4 and 1/2 resolution: deeper_decoder).
- UNet: ``UNet2DConditionModel`` (48, 96, 192), cross-attention transformer blocks at 1/2 and 1/4 of
  the latent resolution (16x16 and 8x8 tokens at 256 px), SD's block naming
  (down_blocks / mid_block / up_blocks): about 35 ms a step.
- Text: a 2-layer ``CLIPTextModel`` (width 64) over a character-level ``CLIPTokenizer`` whose
  vocabulary this module writes itself (no download).
- Scheduler: ``LCMScheduler`` with the toy's own gentler beta schedule (TOY_BETAS, below).
"""
from __future__ import annotations

import torch

# A key of the scheduler's config that diffusers keeps and ignores (leading underscore): the UNet's "sample"
# prediction is an offset from the clean encoded source frame (x0 = src + out), for image-conditioned UNets.
# (Defined here, below v2v_core.backbones, which reads it: the two modules import in one direction only.)
RELATIVE_KEY = "_sample_relative_to_source"

TEXT_WIDTH = 64
MAX_PROMPT_TOKENS = 32


def build_tokenizer():
    """A character-level CLIP tokenizer: every byte-level character (and its end-of-word form) is a
    token, no merges. 514 tokens."""
    from transformers import CLIPTokenizer

    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    chars = [chr(c) for c in cs]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for ch in chars:
            vocab.setdefault(ch + suffix, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=MAX_PROMPT_TOKENS)


def build_text_encoder(vocab_size: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(vocab_size=vocab_size, hidden_size=TEXT_WIDTH, intermediate_size=4 * TEXT_WIDTH,
                         num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=MAX_PROMPT_TOKENS,
                         bos_token_id=0, eos_token_id=1, pad_token_id=1)
    return CLIPTextModel(cfg)


def build_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(48, 96, 192),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_WIDTH, attention_head_dim=8, norm_num_groups=16,
    )


def build_vae():
    from diffusers import AutoencoderTiny

    return AutoencoderTiny(
        in_channels=3, out_channels=3, latent_channels=4,
        encoder_block_out_channels=(48, 48, 48, 48), decoder_block_out_channels=(48, 48, 48, 48),
        num_encoder_blocks=(0, 1, 1, 3), num_decoder_blocks=(3, 1, 1, 0),
        scaling_factor=1.0,  # set after VAE training to 1/std of the latents
    )


# Stage 6 (v3.3) deepens the decoder: one more block at 1/4 and at 1/2 of the frame's resolution (deeper_decoder).
DEEP_DECODER_BLOCKS = (3, 2, 2, 0)


def deeper_decoder(vae, blocks=DEEP_DECODER_BLOCKS):
    """The same AutoencoderTiny with more decoder blocks per stage (`blocks`: diffusers' num_decoder_blocks, each
    entry >= the current one). Every weight is copied; each added block follows an existing block of its stage and
    its last convolution is zero, so it returns relu(x) = x on that block's (non-negative) output and the result
    decodes exactly what `vae` does until it is trained (a warm start; the encoder, hence the latents, is untouched).
    The added blocks' other convolutions are drawn from torch's current random state (seed it for reproducibility)."""
    from diffusers import AutoencoderTiny
    from diffusers.models.unets.unet_2d_blocks import AutoencoderTinyBlock

    old = tuple(vae.config.num_decoder_blocks)
    if len(blocks) != len(old) or any(b < o or (b > o and o == 0) for b, o in zip(blocks, old)):
        raise ValueError(f"deeper_decoder: {blocks} must add blocks only after existing ones of {old}")
    cfg = {k: v for k, v in vae.config.items() if not k.startswith("_") and k != "block_out_channels"}
    deep = AutoencoderTiny.from_config({**cfg, "num_decoder_blocks": tuple(blocks)})
    deep.encoder.load_state_dict(vae.encoder.state_dict())
    src = iter(vae.decoder.layers)
    pending = next(src)
    for layer in deep.decoder.layers:
        if type(layer) is type(pending):
            layer.load_state_dict(pending.state_dict())
            pending = next(src, None)
        else:                                   # an added block, right after its stage's last existing block
            assert isinstance(layer, AutoencoderTinyBlock)
            torch.nn.init.zeros_(layer.conv[-1].weight)
            torch.nn.init.zeros_(layer.conv[-1].bias)
    assert pending is None
    return deep.to(dtype=vae.dtype)


SD15_BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
# The toy's own, gentler noise schedule: alphas_cumprod is 0.75 at t=499 and 0.91 at t=259 (SD-1.5: 0.28 and
# 0.66). A small model trained with MSE returns the posterior mean, a blur, when little signal survives; SD's
# LCM escapes that by consistency distillation, which a 2-core CPU cannot afford. With this schedule the
# structure of the input survives strength 0.5 and the styles still have real noise to invent from.
TOY_BETAS = dict(beta_start=0.0001, beta_end=0.002, beta_schedule="linear")


def build_scheduler(betas: dict = SD15_BETAS):
    from diffusers import LCMScheduler

    return LCMScheduler(**betas, num_train_timesteps=1000, original_inference_steps=50, timestep_spacing="leading",
                        steps_offset=1, prediction_type="epsilon", clip_sample=False, set_alpha_to_one=True)


def build_random_pipeline(seed: int = 0):
    """The toy architecture with seeded random weights (the fallback before weights exist, and the
    starting point of training). Its output is coloured noise, never an edit."""
    from diffusers import StableDiffusionPipeline

    torch.manual_seed(seed)
    tok = build_tokenizer()
    return StableDiffusionPipeline(
        vae=build_vae(), text_encoder=build_text_encoder(len(tok)), tokenizer=tok, unet=build_unet(),
        scheduler=build_scheduler(TOY_BETAS), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def image_conditioned(unet):
    """The same UNet taking the clean encoded source frame as extra input channels, InstructPix2Pix's
    layout: ``in_channels`` = 2 x latent channels, the noisy latent first. Every weight is copied and the
    new channels' ``conv_in`` weights are zero, so the result computes exactly what `unet` does until it
    is trained (a warm start)."""
    from diffusers import UNet2DConditionModel

    cfg = dict(unet.config)
    c = cfg["in_channels"]
    cfg["in_channels"] = 2 * c
    wide = UNet2DConditionModel.from_config(cfg)
    state = unet.state_dict()
    w = state["conv_in.weight"]                                   # (C_out, c, 3, 3)
    state["conv_in.weight"] = torch.cat([w, torch.zeros_like(w)], 1)
    wide.load_state_dict(state)
    return wide.to(dtype=unet.dtype)


def source_relative(unet, scheduler):
    """An image-conditioned UNet re-parametrised to predict the clean latent as an offset from the encoded
    source frame (x0 = src + out; diffusers' prediction_type "sample" plus backbones.RELATIVE_KEY in the
    scheduler config). Its output convolution starts at zero, so step 0 returns the source itself ("a photo"
    exactly); the body keeps its trained features. Returns (unet, scheduler), the scheduler a new object."""
    from diffusers import LCMScheduler

    if unet.config.in_channels != 2 * unet.config.out_channels:
        raise ValueError("source_relative needs an image-conditioned UNet (arch.image_conditioned)")
    torch.nn.init.zeros_(unet.conv_out.weight)
    torch.nn.init.zeros_(unet.conv_out.bias)
    cfg = dict(scheduler.config)
    cfg.update(prediction_type="sample", **{RELATIVE_KEY: True})
    return unet, LCMScheduler.from_config(cfg)


def everywhere_config(config) -> dict:
    """A UNet config with a cross-attention transformer block in every down and up block (attention_everywhere's
    layout), for a UNet built from it: warm-started by attention_everywhere, or freshly initialised."""
    cfg = dict(config)
    cfg["down_block_types"] = tuple("CrossAttnDownBlock2D" for _ in cfg["down_block_types"])
    cfg["up_block_types"] = tuple("CrossAttnUpBlock2D" for _ in cfg["up_block_types"])
    return cfg


def has_everywhere_layout(config) -> bool:
    """Whether a UNet config already has attention_everywhere's layout."""
    cfg = everywhere_config(config)
    return tuple(cfg["down_block_types"]) == tuple(config["down_block_types"]) and \
        tuple(cfg["up_block_types"]) == tuple(config["up_block_types"])


def attention_everywhere(unet):
    """The same UNet with a cross-attention transformer block in every down and up block, the latent's full
    resolution included, as SD-1.5 lays them out (SD has 5 of its 16 self-attention layers at full resolution; the
    toy had none there, and its self-attention carried almost nothing: TOY_MODEL_NOTES.md). Every existing weight is
    copied; each added transformer block's output projection is zero, so it returns its input (diffusers'
    Transformer2DModel adds its residual) and the result computes exactly what `unet` does until it is trained."""
    from diffusers import UNet2DConditionModel

    if has_everywhere_layout(unet.config):
        return unet
    cfg = everywhere_config(unet.config)
    wide = UNet2DConditionModel.from_config(cfg)
    missing, unexpected = wide.load_state_dict(unet.state_dict(), strict=False)
    assert not unexpected, unexpected
    added = {k.split(".attentions.")[0] + ".attentions." + k.split(".attentions.")[1].split(".")[0] for k in missing}
    assert all(".attentions." in k for k in missing), missing
    modules = dict(wide.named_modules())
    for name in added:
        torch.nn.init.zeros_(modules[name].proj_out.weight)
        torch.nn.init.zeros_(modules[name].proj_out.bias)
    return wide.to(dtype=unet.dtype)


def heads_of(config) -> tuple:
    """The attention heads of each down block (diffusers' UNet2DConditionModel reads its `attention_head_dim` as the
    NUMBER of heads, SD-1.5's 8; the up blocks mirror them and the mid block takes the last)."""
    heads = config.get("num_attention_heads") or config["attention_head_dim"]
    n = len(config["down_block_types"])
    return tuple(heads) if isinstance(heads, (list, tuple)) else (heads,) * n


def with_full_res_heads(unet, heads: int):
    """The same UNet, every weight kept, with `heads` attention heads at the latent's full resolution (the first
    down block and the last up block, their self- and cross-attention) instead of the config's. Not the same
    function: the heads regroup the same query, key and value channels, so it is trained after (stage 10's
    --full-res-heads). Why: the toy's full-resolution attention had 8 heads of 6 channels (SD-1.5's have 40), so its
    1024 x 1024 score matrices, one per head, cost 4x what one head of 48 channels costs, and StreamV2V's extended
    attention doubles them (model card, session 32). Returns `unet` itself when it already has them."""
    from diffusers import UNet2DConditionModel

    old = heads_of(unet.config)
    if old[0] == heads:
        return unet
    cfg = dict(unet.config)
    cfg["attention_head_dim"], cfg["num_attention_heads"] = (heads, *old[1:]), None
    new = UNet2DConditionModel.from_config(cfg)
    new.load_state_dict(unet.state_dict())
    return new.to(dtype=unet.dtype)
