"""Shared fixtures: a tiny backbone built in code (fast, deterministic, random weights: for engine
math, never for claims about edits), generated clips, and the shared real clips (skip when absent)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED_VIDEOS = ROOT.parent / "shared" / "data" / "videos"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")   # Debian's; None: the browser tests skip


@pytest.fixture(scope="session", autouse=True)
def _runs_in_a_test_folder(tmp_path_factory):
    """The UI's run folders (comparisons.service.work_root) of this session go under pytest's own temp folder, which
    pytest rotates, not into the machine's temp directory; apps started by start_app inherit it."""
    os.environ["V2V_WORK_DIR"] = str(tmp_path_factory.mktemp("runs"))


def shared_video(name: str) -> Path:
    p = SHARED_VIDEOS / name
    if not p.exists():
        pytest.skip(f"shared clip {name} not present (../shared/data/videos)")
    return p


def free_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def launch_chromium(playwright):
    """Debian's Chromium, headless, with Chromium's fake camera granted and autoplay allowed (the browser
    tests and benchmarks/live.py)."""
    return playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
            "--autoplay-policy=no-user-gesture-required"])


def start_app(env_extra: dict, **popen_kw):
    """`python app.py` on a free port (env: os.environ + GRADIO_ANALYTICS_ENABLED=False + env_extra), returned
    once it accepts connections: (process, url). Fails the test with the app's output if it dies first."""
    import socket
    import subprocess
    import sys
    import time

    port = free_port()
    env = {**os.environ, "V2V_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False", **env_extra}
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, **popen_kw)
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"the app exited with {proc.returncode} before serving")
            time.sleep(0.5)
    return proc, f"http://127.0.0.1:{port}"


def build_tiny_pipeline(seed: int = 0, sd15_layout: bool = False):
    """The API notes' tiny SD pipeline: UNet (32, 64), 2-block AutoencoderKL (f=2), 2-layer CLIP. sd15_layout: the
    UNet laid out as SD-1.5's (4 levels, 2 layers per block: 16 self-attention layers, the same names), tiny widths."""
    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel

    from v2v_core.toy.arch import build_scheduler, build_tokenizer

    torch.manual_seed(seed)
    from transformers import CLIPTextConfig, CLIPTextModel

    tok = build_tokenizer()
    te = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_attention_heads=4,
                                      num_hidden_layers=2, max_position_embeddings=32, bos_token_id=0, eos_token_id=1,
                                      pad_token_id=1)).eval()
    layout = (dict(layers_per_block=2, block_out_channels=(32, 32, 64, 64),
                   down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                   up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3) if sd15_layout else
              dict(layers_per_block=1, block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                   up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")))
    unet = UNet2DConditionModel(sample_size=32, in_channels=4, out_channels=4, cross_attention_dim=32,
                                attention_head_dim=8, **layout)
    vae = AutoencoderKL(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, sample_size=64)
    return StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=build_scheduler(),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def backbone_from_pipeline(pipe, name="tiny"):
    import torch

    from v2v_core.backbones import Backbone

    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.requires_grad_(False).eval()
    return Backbone(name, pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler,
                    torch.device("cpu"), torch.float32, makes_edits=False)


@pytest.fixture(scope="session")
def tiny_pipe_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_pipe")
    build_tiny_pipeline().save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def tiny_backbone():
    return backbone_from_pipeline(build_tiny_pipeline())


@pytest.fixture(scope="session")
def tiny_sd15_backbone():
    """Random weights in SD-1.5's UNet layout (16 self-attention layers): for whole-UNet-step fidelity tests."""
    return backbone_from_pipeline(build_tiny_pipeline(sd15_layout=True), name="tiny-sd15-layout")


@pytest.fixture(scope="session")
def pan_clip():
    from v2v_core.synthetic import make_clip

    return make_clip("pan", 8, 64)


@pytest.fixture
def frames64(pan_clip):
    return [np.ascontiguousarray(f) for f in pan_clip.frames]


@pytest.fixture
def tiny_training(tmp_path, monkeypatch):
    """A copy of the shipped model folder and the training module with a tiny pool (three procedural scenes,
    one "Kodak" scene; the held-out photos: the first one), for running a stage as the training command does."""
    from v2v_core.backbones import TOY_DIR
    from v2v_core.toy import train
    from v2v_core.toy.data import procedural_scene

    out = tmp_path / "model"
    shutil.copytree(TOY_DIR, out)
    rng = np.random.default_rng(1)
    monkeypatch.setattr(train, "image_pool", lambda seed: [procedural_scene(rng, 192) for _ in range(3)])
    monkeypatch.setattr(train, "kodak_images", lambda: [procedural_scene(rng, 256)])
    monkeypatch.setattr(train, "photo_indices", lambda names: [0])
    return train, out
