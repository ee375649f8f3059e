"""Backbone loading: offline failure is fast and helpful, local folders load, LoRA fuses through
diffusers' API, sd15-random has SD-1.5's architecture."""
import time

import pytest
import torch

from v2v_core.backbones import load_backbone
from v2v_core.errors import V2VError


@pytest.mark.parametrize("source", ["sd15", "sd-turbo"])
@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}])
def test_hub_model_offline_fails_fast_naming_alternatives(monkeypatch, tmp_path, env, source):
    monkeypatch.setenv("HF_HOME", str(tmp_path))          # an empty cache
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    t = time.perf_counter()
    with pytest.raises(V2VError) as e:
        load_backbone(source, device="cpu")
    assert time.perf_counter() - t < 15
    assert "toy" in str(e.value) and "sd15-random" in str(e.value)
    assert {"sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5", "sd-turbo": "stabilityai/sd-turbo"}[source] in str(e.value)


def test_unknown_source_is_refused():
    with pytest.raises(V2VError, match="Unknown backbone"):
        load_backbone("no-such-thing", device="cpu")


def test_local_folder_loads(tiny_pipe_dir):
    bb = load_backbone(str(tiny_pipe_dir), device="cpu")
    assert bb.unet.config.block_out_channels == [32, 64] or tuple(bb.unet.config.block_out_channels) == (32, 64)
    assert type(bb.scheduler).__name__ == "LCMScheduler"
    assert bb.vae_factor == 2


def test_lora_is_loaded_and_fused_through_diffusers(tiny_pipe_dir, tmp_path):
    """A LoRA file the test makes: after fusing, W = W0 + B @ A on a targeted layer (alpha = r:
    the plain LoRA file format carries no alpha)."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, get_peft_model_state_dict

    pipe = StableDiffusionPipeline.from_pretrained(tiny_pipe_dir)
    unet = pipe.unet
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                init_lora_weights=False))
    StableDiffusionPipeline.save_lora_weights(tmp_path, unet_lora_layers=get_peft_model_state_dict(unet))
    lora_file = next(tmp_path.glob("*.safetensors"))
    name = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    layer = unet.get_submodule(name)
    a, b = layer.lora_A["default"].weight.detach(), layer.lora_B["default"].weight.detach()
    w0 = layer.base_layer.weight.detach().clone()

    plain = load_backbone(str(tiny_pipe_dir), device="cpu")
    fused = load_backbone(str(tiny_pipe_dir), device="cpu", lora=str(lora_file))
    torch.testing.assert_close(plain.unet.get_submodule(name).weight, w0)
    torch.testing.assert_close(fused.unet.get_submodule(name).weight, w0 + b @ a, rtol=1e-4, atol=1e-5)
    assert not any("lora" in n for n, _ in fused.unet.named_modules())   # adapters dropped after fusing


@pytest.mark.slow
def test_sd15_random_has_sd15_architecture():
    bb = load_backbone("sd15-random", device="cpu")
    cfg = bb.unet.config
    assert tuple(cfg.block_out_channels) == (320, 640, 1280, 1280) and cfg.cross_attention_dim == 768
    n = sum(p.numel() for p in bb.unet.parameters())
    assert 855e6 < n < 865e6          # SD-1.5's UNet: 859.5 M parameters
    assert bb.latent_scale == pytest.approx(0.18215) and not bb.makes_edits
