"""One loader, several sources, the same components after loading.

    load_backbone("toy")            the embedded model trained by this project (offline default)
    load_backbone("sd15")           SD-1.5 from the hub + LCM-LoRA fused (+ optional TAESD decoder)
    load_backbone("sd-turbo")       SD-turbo from the hub (adversarially distilled: 1-4 steps, no LoRA)
    load_backbone("/path/to/sd")    any local diffusers SD-1.x folder (same code path as the hub)
    load_backbone("sd15-random")    SD-1.5's architecture with seeded random weights: same FLOPs and
                                    memory as the real model, for speed/memory benchmarks only

Hub loading checks the local cache first, then whether the hub is reachable at all (a 3 s socket
probe), and fails at once with V2VError naming the offline alternatives instead of hanging.
"""
from __future__ import annotations

import functools
import os
import socket
import warnings
from dataclasses import dataclass, field
from types import SimpleNamespace
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch

from .errors import V2VError
from .toy import MODEL_DIR
from .toy.arch import RELATIVE_KEY  # noqa: F401  (re-exported: the engine's name for it)

SD15_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"
LCM_LORA_ID = "latent-consistency/lcm-lora-sdv1-5"
TAESD_ID = "madebyollin/taesd"
SDTURBO_ID = "stabilityai/sd-turbo"
TOY_DIR = MODEL_DIR
BACKBONES = ("toy", "sd15", "sd-turbo", "sd15-random")
HUB_IDS = {"sd15": SD15_ID, "sd-turbo": SDTURBO_ID}     # the named backbones that come from the model hub
OFFLINE_HINT = ("Use --backbone toy (the embedded model, works offline) or --backbone sd15-random (SD-1.5's "
                "architecture with random weights, for speed and memory benchmarks), or pass a local diffusers folder.")


@dataclass
class Backbone:
    """The loaded components. Shared by every stream that uses it; holds no per-stream state."""
    name: str
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler: object
    device: torch.device
    dtype: torch.dtype
    makes_edits: bool = True     # False for random weights: their output is noise, never an edit
    # The self-attention layer the correspondence view opens on (None: the last one recorded). The toy's
    # tuning stage trained its contracting path to match content across frames; its expanding path does not.
    correspondence_layer: str | None = None
    # The prompts the backbone understands, when it has a closed vocabulary (the toy's styles and their
    # phrasings); None for open-vocabulary text encoders such as SD's CLIP.
    known_prompts: tuple[str, ...] | None = None
    # The toy's evaluation summary (toy.styles.read_evaluation): which of its styles it draws faintly.
    evaluation: dict | None = None
    _prompt_cache: dict = field(default_factory=dict, repr=False)

    def prompt_warning(self, prompt: str) -> str | None:
        """A warning naming what the backbone knows, for a prompt outside its vocabulary, or saying that it draws a
        known style faintly (its evaluation summary); else None."""
        if self.known_prompts is None:
            return None
        from .toy.styles import prompt_warning

        return prompt_warning(prompt, self.evaluation, f"the {self.name} backbone")

    @property
    def latent_scale(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def vae_factor(self) -> int:
        cfg = self.vae.config
        n = len(getattr(cfg, "block_out_channels", None) or getattr(cfg, "encoder_block_out_channels"))
        return 2 ** (n - 1)

    @torch.inference_mode()
    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """(1, L, D) text embeddings, cached per prompt (the backbone is read-only, so this is safe
        to share between streams)."""
        if prompt not in self._prompt_cache:
            tok = self.tokenizer(prompt, padding="max_length", max_length=self.tokenizer.model_max_length,
                                 truncation=True, return_tensors="pt")
            emb = self.text_encoder(tok.input_ids.to(self.device))[0]
            self._prompt_cache[prompt] = emb.to(self.dtype)
        return self._prompt_cache[prompt]

    @property
    def image_conditioned(self) -> bool:
        """True for a UNet that also takes the clean encoded source frame as input channels
        (InstructPix2Pix's layout: in_channels = 2 x latent channels, the noisy latent first)."""
        cfg = self.unet.config
        return cfg.in_channels == 2 * cfg.out_channels

    def unet_input(self, x: torch.Tensor, src: torch.Tensor | None) -> torch.Tensor:
        """The UNet's input for noisy latents x (B, 4, h, w): x itself, or [x ; src] along the channels for
        an image-conditioned UNet (src: the encoded source frames, (B, 4, h, w))."""
        if not self.image_conditioned:
            return x
        if src is None:
            raise V2VError(f"The backbone '{self.name}' is image-conditioned: its UNet needs the encoded source "
                           "frame beside the noisy latent, and this code path did not pass one.")
        return torch.cat([x, src.to(x.dtype).expand_as(x)], 1)

    @functools.cached_property
    def prediction(self) -> tuple[str, bool]:
        """What the UNet predicts: (prediction type, relative to the source), see prediction_of. Read once: the
        scheduler of a backbone never changes, and every denoising step asks."""
        return prediction_of(self.scheduler.config)

    def predicted_x0(self, x: torch.Tensor, out: torch.Tensor, a, b, src: torch.Tensor | None = None) -> torch.Tensor:
        """The clean-latent estimate from the UNet's output `out` at noisy latents x = a z + b eps
        (a = sqrt(abar_t), b = sqrt(1 - abar_t)); src: the encoded source frames (read by a UNet whose
        prediction is relative to the source)."""
        return x0_from_output(*self.prediction, x, out, a, b, src)

    def predicted_eps(self, x: torch.Tensor, out: torch.Tensor, a, b, src: torch.Tensor | None = None) -> torch.Tensor:
        """The noise estimate from the UNet's output (the output itself for an epsilon-predicting UNet)."""
        if self.prediction[0] == "epsilon":
            return out
        return (x - a * self.predicted_x0(x, out, a, b, src)) / b

    def runtime_setup_seconds(self) -> float:
        """Seconds this backbone has spent so far on one-off runtime setup (converting and compiling graphs): none on
        PyTorch. Timings subtract what a frame or a run spent on it, so that a runtime's first start is not its speed."""
        return 0.0

    def encode_images(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> scaled latents (B, 4, H/f, W/f)."""
        out = self.vae.encode(x)
        lat = out.latents if hasattr(out, "latents") else out.latent_dist.mean
        return lat * self.latent_scale

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images in [-1, 1]."""
        return self.vae.decode(z / self.latent_scale).sample.clamp(-1, 1)


PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


def prediction_of(config) -> tuple[str, bool]:
    """(prediction type, relative to the source) of a scheduler config: diffusers' `prediction_type`
    (epsilon, sample or v_prediction) and RELATIVE_KEY."""
    kind = config.get("prediction_type", "epsilon") or "epsilon"
    relative = bool(config.get(RELATIVE_KEY, False))
    if kind not in PREDICTION_TYPES:
        raise V2VError(f"The scheduler's prediction_type '{kind}' is not supported: use one of {', '.join(PREDICTION_TYPES)}.")
    if relative and kind != "sample":
        raise V2VError(f"{RELATIVE_KEY} needs prediction_type 'sample' (the offset is added to a clean latent); "
                       f"this scheduler says '{kind}'.")
    return kind, relative


def x0_from_output(kind: str, relative: bool, x: torch.Tensor, out: torch.Tensor, a, b,
                   src: torch.Tensor | None = None) -> torch.Tensor:
    """x0 from a UNet output `out` at x = a z + b eps: epsilon (x - b out) / a; v_prediction a x - b out
    (v = a eps - b z); sample out, or src + out when the prediction is relative to the source latent."""
    if kind == "epsilon":
        return (x - b * out) / a
    if kind == "v_prediction":
        return a * x - b * out
    if not relative:
        return out
    if src is None:
        raise V2VError("This UNet predicts the clean latent as an offset from the encoded source frame, and this "
                       "code path did not pass the source.")
    return src.to(out.dtype).expand_as(out) + out


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def hub_id(source: str) -> str | None:
    """The hub repository a backbone's weights come from (None: shipped, random, or a local folder)."""
    return HUB_IDS.get(source) or (source if _is_hub_id(source) else None)


def weights_missing(source: str) -> str | None:
    """Why `source` cannot load on this machine, found without loading it (None: it can, as far as files go):
    a folder that is not there or not a diffusers folder, a hub model neither in the local cache nor reachable.
    The hub probe is done at most once per process (3 s when the network is down)."""
    if source in ("toy", "sd15-random"):
        return None
    repo = hub_id(source)
    if repo is None:
        folder = Path(source).expanduser()
        if not folder.is_dir():
            return f"the folder {source} does not exist on this machine"
        return None if (folder / "model_index.json").exists() else f"{source} is not a diffusers folder (no model_index.json)"
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo, "model_index.json"), str):
        return None
    if not _hub_reachable_once():
        return f"'{repo}' is not in this machine's model cache and the model hub is not reachable"
    return None


@functools.lru_cache(maxsize=1)
def _hub_reachable_once() -> bool:
    return _hub_reachable()


def _hub_load(loader, repo_id: str, what: str, hint: str = OFFLINE_HINT, **kw):
    """Load from the local cache, else from the hub if it answers, else fail fast and clearly."""
    try:
        with warnings.catch_warnings():       # diffusers passes huggingface_hub an argument it now deprecates: not ours
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
            return loader(repo_id, local_files_only=True, **kw)
    except Exception:
        pass
    if not _hub_reachable():
        raise V2VError(f"Cannot load {what} '{repo_id}': it is not in the local cache and the model hub is not "
                       f"reachable from this machine. {hint}")
    try:
        return loader(repo_id, **kw)
    except Exception as e:
        raise V2VError(f"Downloading {what} '{repo_id}' failed: {e}. {hint}") from None


def _is_hub_id(s: str) -> bool:
    return s.count("/") == 1 and not Path(s).exists() and not s.startswith((".", "/", "~"))


def _sd15_random(seed: int, taesd: bool):
    """SD-1.5's published architecture (UNet, VAE, CLIP ViT-L/14 text tower) with seeded random weights."""
    from diffusers import AutoencoderKL, AutoencoderTiny, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from .toy.arch import build_scheduler, build_tokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8, layers_per_block=2,
                                block_out_channels=(320, 640, 1280, 1280))
    vae = AutoencoderTiny() if taesd else AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4, sample_size=512,
        scaling_factor=0.18215)
    tok = build_tokenizer()
    tok.model_max_length = 77
    te = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                      num_hidden_layers=12, max_position_embeddings=77, hidden_act="quick_gelu",
                                      bos_token_id=0, eos_token_id=1, pad_token_id=1))
    return StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=build_scheduler(),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def _from_folder(path: str, dtype: torch.dtype, **kw) -> SimpleNamespace:
    """The components of a diffusers SD-1.x pipeline folder (or hub id), each loaded by its own class:
    UNet, VAE (AutoencoderKL or AutoencoderTiny, as its config names it), CLIP text encoder and tokenizer,
    scheduler. No pipeline class is built, so no image processor, safety checker or pipeline type check
    is loaded that the studio does not use."""
    import diffusers
    from diffusers import LCMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from transformers.utils import logging as tf_logging

    vae_cfg = diffusers.AutoencoderKL.load_config(path, subfolder="vae", **kw)
    vae_cls = getattr(diffusers, vae_cfg.get("_class_name", "AutoencoderKL"))
    bar = tf_logging.is_progress_bar_enabled()
    tf_logging.disable_progress_bar()        # a per-load "Loading weights" bar on stderr; restored below
    try:
        text_encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", dtype=dtype, **kw)
    finally:
        if bar:
            tf_logging.enable_progress_bar()
    return SimpleNamespace(
        unet=UNet2DConditionModel.from_pretrained(path, subfolder="unet", dtype=dtype, **kw),
        vae=vae_cls.from_pretrained(path, subfolder="vae", dtype=dtype, **kw),
        text_encoder=text_encoder,
        tokenizer=CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", **kw),
        scheduler=LCMScheduler.from_pretrained(path, subfolder="scheduler", **kw),
    )


TOY_CORRESPONDENCE_LAYER = "down_blocks.1.attentions.0.transformer_blocks.0.attn1"


def load_backbone(source: str = "toy", device: str | torch.device | None = None, dtype: torch.dtype | str | None = None,
                  lora: str | None = None, taesd: bool | str = False, seed: int = 0) -> Backbone:
    """Return a ready backbone (UNet, VAE or TAESD decoder, text encoder + tokenizer, LCM scheduler).

    source: "toy" | "sd15" | "sd15-random" | a local diffusers SD-1.x folder | a hub id.
    lora:   a LoRA (hub id, folder or .safetensors file) loaded and fused through diffusers' own
            API; "sd15" uses the LCM-LoRA unless lora="" is given.
    taesd:  True to decode (and encode) with TAESD (hub id madebyollin/taesd), or a path/id.
    """
    from diffusers import AutoencoderTiny, LCMScheduler

    device = torch.device(device) if device is not None else default_device()
    if isinstance(dtype, str):
        dtype = {"float16": torch.float16, "fp16": torch.float16, "bfloat16": torch.bfloat16,
                 "float32": torch.float32, "fp32": torch.float32}[dtype]
    dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
    makes_edits = True

    if source == "toy":
        if (TOY_DIR / "model_index.json").exists():
            pipe = _from_folder(str(TOY_DIR), torch.float32)
        else:
            from .toy.arch import build_random_pipeline

            warnings.warn("The embedded toy model's weights are missing: using random weights of the same "
                          "architecture. Its output is coloured noise, not an edit. Train it with "
                          "`python -m v2v_core.toy.train`.", stacklevel=2)
            pipe = build_random_pipeline(seed)
            makes_edits = False
    elif source == "sd15-random":
        pipe = _sd15_random(seed, bool(taesd))
        taesd, makes_edits = False, False
    elif source in HUB_IDS or _is_hub_id(source):
        repo = hub_id(source)
        pipe = _hub_load(lambda r, **kw: _from_folder(r, dtype, **kw), repo, "the diffusion model")
        if source == "sd15" and lora is None:
            lora = LCM_LORA_ID
    elif Path(source).expanduser().is_dir():
        if not (Path(source).expanduser() / "model_index.json").exists():
            raise V2VError(f"{source} is not a diffusers pipeline folder (no model_index.json). "
                           "Save one with pipe.save_pretrained(folder).")
        pipe = _from_folder(str(Path(source).expanduser()), dtype)
    else:
        raise V2VError(f"Unknown backbone '{source}'. Choose one of {', '.join(BACKBONES)}, a local diffusers "
                       "folder, or a hub id like org/model.")

    if lora:
        _fuse_lora(pipe, lora)
    if taesd:
        tid = TAESD_ID if taesd is True else str(taesd)
        loader = lambda r, **kw: AutoencoderTiny.from_pretrained(r, dtype=dtype, **kw)  # noqa: E731
        pipe.vae = loader(tid) if Path(tid).exists() else _hub_load(loader, tid, "the TAESD decoder")
    if not isinstance(pipe.scheduler, LCMScheduler):
        pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)

    mods = (pipe.unet, pipe.vae, pipe.text_encoder)
    for m in mods:
        m.requires_grad_(False).eval().to(device=device)
        if m.dtype != dtype:
            m.to(dtype=dtype)
    if device.type == "cpu":  # oneDNN convolutions are markedly faster in channels_last on CPU
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    name = source if source in BACKBONES else str(source)
    corr = TOY_CORRESPONDENCE_LAYER if source == "toy" and makes_edits else None
    known, evaluation = None, None
    if source == "toy":
        from .toy.styles import STYLES, read_evaluation

        known = tuple(p for s in STYLES for p in s.prompts)
        evaluation = read_evaluation(TOY_DIR) if makes_edits else None
    bb = Backbone(name, pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler, device, dtype,
                  makes_edits, correspondence_layer=corr, known_prompts=known, evaluation=evaluation)
    if bb.prediction[1] and not bb.image_conditioned:
        raise V2VError(f"The backbone '{source}' predicts offsets from the source frame ({RELATIVE_KEY} in its scheduler "
                       "config), but its UNet does not take the source frame (in_channels is not twice the latent "
                       "channels). Remove the key or use an image-conditioned UNet.")
    return bb


def _fuse_lora(parts, lora: str):
    """Load a LoRA through diffusers' API and fuse it into the UNet weights (then drop the adapters).
    diffusers' LoRA loading lives on the pipeline class, so one is built around the components here."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer,
                                   unet=parts.unet, scheduler=parts.scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    p = Path(lora).expanduser()
    try:
        if p.exists():
            if p.is_file():
                pipe.load_lora_weights(str(p.parent), weight_name=p.name)
            else:
                pipe.load_lora_weights(str(p))
        else:
            _hub_load(lambda r, **kw: pipe.load_lora_weights(r, **kw), lora, "the LoRA")
    except V2VError:
        raise
    except Exception as e:
        raise V2VError(f"Could not load the LoRA '{lora}': {e}") from None
    pipe.fuse_lora()
    pipe.unload_lora_weights()


def seeded_noise(shape, seed: int, device, dtype) -> torch.Tensor:
    """Gaussian noise from a private CPU generator (identical on every device for a seed)."""
    g = torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn(shape, generator=g).to(device=device, dtype=dtype)


def to_tensor(frame: np.ndarray, device, dtype) -> torch.Tensor:
    """uint8 (H, W, 3) -> (1, 3, H, W) in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    return x.to(device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)


def to_uint8(x: torch.Tensor) -> list[np.ndarray]:
    """(B, 3, H, W) in [-1, 1] -> list of uint8 (H, W, 3)."""
    a = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [np.ascontiguousarray(f) for f in a]
