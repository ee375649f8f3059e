"""The toy model's styles: deterministic image filters that define what each prompt means.

Every style is a pure function ``uint8 RGB (H, W, 3) -> uint8 RGB (H, W, 3)``. Deterministic styles
depend on the image alone, so "recognisability" (is the output closer to this style's target than to
every other style's?) is well defined. Two styles invent content (pointillism dots, snowflakes): their
content is placed from the diffusion noise of the training sample, so the model learns to invent it
from noise as a real diffusion model invents detail (and, like one, can flicker where it does).

Filters are applied at the resolution the model sees (256 px frames in evaluation, the same scale in
training) because their look (edge width, pixel-art block size) is defined in pixels.
"""
from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

PIXEL_BLOCK = 8  # pixel-art block in pixels: one latent cell of an f=8 VAE


def photo(img: np.ndarray) -> np.ndarray:
    """'a photo' is the input itself: the model must reproduce it (a fidelity check)."""
    return img.copy()


def black_and_white(img: np.ndarray) -> np.ndarray:
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    return np.repeat(gray[..., None], 3, axis=2)


_SEPIA = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], np.float32)


def sepia(img: np.ndarray) -> np.ndarray:
    out = img.astype(np.float32) @ _SEPIA.T  # rows of _SEPIA give output R, G, B
    return np.clip(out, 0, 255).astype(np.uint8)


def pencil_sketch(img: np.ndarray) -> np.ndarray:
    """Colour-dodge sketch: grey divided by its blurred negative; white paper, dark strokes."""
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    blur = cv2.GaussianBlur(255.0 - gray, (0, 0), sigmaX=6.0)
    sketch = np.clip(gray * 255.0 / np.maximum(255.0 - blur, 1.0), 0, 255)
    # darken the strokes so they survive an f=8 autoencoder
    sketch = 255.0 * (sketch / 255.0) ** 2.2
    return np.repeat(sketch.astype(np.uint8)[..., None], 3, axis=2)


def cartoon(img: np.ndarray) -> np.ndarray:
    """Flat colours (smoothed, posterised to 4 levels per channel) with thick black outlines."""
    smooth = cv2.bilateralFilter(img, d=9, sigmaColor=60, sigmaSpace=9)
    smooth = cv2.medianBlur(smooth, 7)
    poster = (smooth.astype(np.int32) // 64) * 64 + 32
    gray = cv2.medianBlur(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), 7)
    edges = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 9, 4)
    edges = cv2.erode(edges, np.ones((2, 2), np.uint8))
    out = np.where(edges[..., None] > 0, poster, 0)
    return out.astype(np.uint8)


def pixel_art(img: np.ndarray) -> np.ndarray:
    """Blocks of PIXEL_BLOCK px, each one colour from a 27-colour palette (3 levels per channel)."""
    h, w = img.shape[:2]
    small = cv2.resize(img, (max(1, w // PIXEL_BLOCK), max(1, h // PIXEL_BLOCK)), interpolation=cv2.INTER_AREA)
    small = (np.round(small.astype(np.float32) / 127.5) * 127.5).clip(0, 255).astype(np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def thermal(img: np.ndarray) -> np.ndarray:
    """A thermal-camera look: brightness mapped through the inferno colour map."""
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    return cv2.cvtColor(cv2.applyColorMap(gray, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)


def _cells(eps: np.ndarray, h: int, w: int):
    """Latent-cell grid of a noise tensor eps (4, h/8, w/8): yields (channel values, cell x0, cell y0)."""
    gh, gw = min(eps.shape[1], h // 8), min(eps.shape[2], w // 8)
    for i in range(gh):
        for j in range(gw):
            yield eps[:, i, j], 8 * j, 8 * i


POINTILLISM_PAPER = (245, 238, 220)      # pointillism's cream paper (RGB)


def saturated(img: np.ndarray) -> np.ndarray:
    """pointillism's colours: the image with its HSV saturation raised by half (uint8 RGB)."""
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    hsv[..., 1] = np.clip(hsv[..., 1].astype(np.int32) * 3 // 2, 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def pointillism(img: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """Dots on cream paper, each the (saturated) colour of the image where it falls. Dot k of a
    latent cell sits in quadrant k and exists where noise channel k is positive: the model invents
    the dots from the diffusion noise, as a real model invents texture."""
    h, w = img.shape[:2]
    out = np.full_like(img, POINTILLISM_PAPER)
    vivid = saturated(img)
    for e, x0, y0 in _cells(eps, h, w):
        for k in range(4):
            if e[k] > 0:
                x, y = x0 + 2 + 4 * (k % 2), y0 + 2 + 4 * (k // 2)
                cv2.circle(out, (x, y), 2, tuple(int(c) for c in vivid[y, x]), -1)
    return out


def snowy_scene(img: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """A cold, bluish, darker scene with white snowflakes where noise channel 0 is high (about 8% of
    latent cells), jittered and sized by the other channels."""
    cold = img.astype(np.float32) * np.array([0.75, 0.85, 1.0], np.float32) + np.array([10, 20, 45], np.float32)
    out = np.clip(cold * 0.85, 0, 255).astype(np.uint8)
    h, w = img.shape[:2]
    for e, x0, y0 in _cells(eps, h, w):
        if e[0] > 1.4:
            x = x0 + 4 + int(np.clip(e[1], -1.5, 1.5) * 2)
            y = y0 + 4 + int(np.clip(e[2], -1.5, 1.5) * 2)
            cv2.circle(out, (x, y), 1 + int(e[3] > 0) + int(e[3] > 1), (255, 255, 255), -1)
    return out


# Psychedelic: each region's hue turns by an angle chosen from the noise SHARED by the frame's tokens of similar colour,
# the way SD's self-attention lets similar tokens agree on an invented detail. A token (one latent cell) weighs every
# token of the frame by a colour kernel and takes the weighted mean of noise channel 0; its hue turns by
# SHARED_TURN * tanh(SHARED_GAIN * mean) degrees. A moved frame puts the same content over other noise, so the choice
# flickers (the per-frame baseline's flicker); a method that lets the frame attend to past frames' similar tokens
# averages their noise in, and the choice holds.
# The kernel (SHARED_KERNEL): "cosine" (since session 17): exp(SHARED_KAPPA * cos(f_p, f_j)), f = (c - grey, SHARED_BETA),
# the similarity a dot-product attention over layer-normalised tokens can express at a fixed scale; "gauss" (sessions
# 15-16): exp(-|c_p - c_j|^2 / 2 SHARED_SIGMA^2) in RGB, whose key term |c_j|^2 no dot product of linear features gives.
# c: the cell's mean RGB in 0..1.
SHARED_GAIN, SHARED_TURN = 10.0, 45.0
SHARED_KERNEL, SHARED_KAPPA, SHARED_BETA = "cosine", 32.0, 0.25
SHARED_SIGMA = 0.05                     # the "gauss" kernel's width
# SHARED_TEXTURE (session 20, `--shared-texture`; 0 = the mean above): the logits add SHARED_TEXTURE x each key cell's
# texture (the std of its grey level, 0..0.5), so a region takes the noise of its most textured cells, a value of size
# ~0.4 instead of a mean over ~100 cells of size ~0.05 (which no trained model estimated: the model card, sessions
# 17-18); its turn is then SHARED_TURN * tanh(m) (SHARED_GAIN 1).
SHARED_TEXTURE = 0.0


def cell_colours(img: np.ndarray, gh: int, gw: int) -> np.ndarray:
    """(gh * gw, 3): each latent cell's mean RGB in 0..1 (the top-left gh x gw cells of 8 px)."""
    return cv2.resize(img[:gh * 8, :gw * 8], (gw, gh), interpolation=cv2.INTER_AREA).reshape(-1, 3).astype(np.float32) / 255.0


def cell_texture(img: np.ndarray, gh: int, gw: int) -> np.ndarray:
    """(gh * gw,): each latent cell's texture, the standard deviation of its grey level in 0..1."""
    g = cv2.cvtColor(img[:gh * 8, :gw * 8], cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    m = cv2.resize(g, (gw, gh), interpolation=cv2.INTER_AREA)
    m2 = cv2.resize(g * g, (gw, gh), interpolation=cv2.INTER_AREA)
    return np.sqrt(np.clip(m2 - m * m, 0, None)).reshape(-1)


def colour_vectors(c):
    """(..., 4): (c - grey, SHARED_BETA) for colours c (..., 3) in 0..1, the cosine kernel's features before they are
    made unit vectors. Numpy arrays or torch tensors."""
    if isinstance(c, np.ndarray):
        return np.concatenate([c - 0.5, np.full_like(c[..., :1], SHARED_BETA)], -1)
    import torch

    return torch.cat([c - 0.5, torch.full_like(c[..., :1], SHARED_BETA)], -1)


def colour_features(c):
    """(..., 4) unit vectors of colour_vectors(c)."""
    f = colour_vectors(c)
    return f / (f * f).sum(-1, keepdims=True) ** 0.5


def shared_logits(c, keys=None):
    """(..., N, K) logits of the colour-similarity attention of cells of colours c (..., N, 3) over cells of colours
    `keys` (..., K, 3; default c), numpy or torch (batched): SHARED_KAPPA cos(f_p, f_j) ("cosine") or
    -|c_p - c_j|^2 / 2 SHARED_SIGMA^2 ("gauss")."""
    keys = c if keys is None else keys
    if SHARED_KERNEL == "gauss":
        d2 = (c * c).sum(-1)[..., :, None] + (keys * keys).sum(-1)[..., None, :] - 2 * c @ keys.swapaxes(-1, -2)
        return -d2.clip(0) / (2 * SHARED_SIGMA ** 2)
    return SHARED_KAPPA * (colour_features(c) @ colour_features(keys).swapaxes(-1, -2))


def _unit_cells(z):
    """(..., N, C): the latent cells of z (..., C, h, w) as unit vectors (numpy float32 or torch)."""
    u = z.reshape(*z.shape[:-3], z.shape[-3], -1).swapaxes(-1, -2)
    if isinstance(u, np.ndarray):
        u = u.astype(np.float32)
        return u / np.linalg.norm(u, axis=-1, keepdims=True).clip(1e-6)
    return u / u.norm(dim=-1, keepdim=True).clamp_min(1e-6)


def latent_logits(z, keys=None):
    """(..., N, K) logits SHARED_KAPPA cos(z_p, z_j) between the latent cells of source latents z (..., C, h, w), N = h w,
    and those of `keys` (..., C, h', w', K = h' w'; default z; several frames' latents stacked along h keep each frame's cells together);
    numpy or torch (batched): the latent kernel's similarity."""
    u = _unit_cells(z)
    return SHARED_KAPPA * u @ (u if keys is None else _unit_cells(keys)).swapaxes(-1, -2)


def latent_shared_noise(z: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """(g, g): the mean rule keyed on the source latents z (4, g, g) instead of the cells' colours (SHARED_KERNEL
    "latent", session 20): softmax(SHARED_KAPPA cos(z_p, z_j)) @ noise channel 0, a kernel the UNet's own input gives
    exactly (benchmarks/shared_choice_learnability.py --rule latent). Only the training batches render it (they hold
    each crop's latent); styles.psychedelic on an image alone keeps the colour kernel."""
    g = z.shape[1:]
    return softmax_mean(latent_logits(z), eps[0, :g[0], :g[1]].reshape(-1).astype(np.float32)).reshape(g)


def softmax_mean(logits: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(N,): softmax(logits (N, K)) @ values (K,), the attention's weighted mean (numpy)."""
    w = np.exp(logits - logits.max(1, keepdims=True))
    return (w / w.sum(1, keepdims=True)) @ values


def shared_noise(img: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """(H/8, W/8): per latent cell, the colour-similarity-weighted mean of noise channel 0 over every cell of the
    image (a softmax attention over the frame, written out); with SHARED_TEXTURE, weighted towards textured cells."""
    h, w = img.shape[:2]
    gh, gw = min(eps.shape[1], h // 8), min(eps.shape[2], w // 8)
    c = cell_colours(img, gh, gw)
    logits = shared_logits(c)
    if SHARED_TEXTURE:
        logits = logits + SHARED_TEXTURE * cell_texture(img, gh, gw)[None]
    return softmax_mean(logits, eps[0, :gh, :gw].reshape(-1).astype(np.float32)).reshape(gh, gw)


def psychedelic(img: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """Vivid colours whose hue turns by up to SHARED_TURN degrees per region, the turn chosen from the noise shared
    by similar colours (shared_noise), interpolated smoothly between latent cells."""
    return turned(img, shared_noise(img, eps))


def turned(img: np.ndarray, m: np.ndarray) -> np.ndarray:
    """The psychedelic rendering of a shared noise m (H/8, W/8): vivid colours, each cell's hue turned by
    SHARED_TURN * tanh(SHARED_GAIN * m) degrees."""
    h, w = img.shape[:2]
    turn = SHARED_TURN * np.tanh(SHARED_GAIN * m)
    turn = cv2.resize(turn.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV_FULL).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + turn * 256.0 / 360.0) % 256.0
    hsv[..., 1] = np.clip(hsv[..., 1] * 1.6 + 40.0, 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB_FULL)


# SNOW_COVER (session 22, stage 10's `--snow-cover`; 0 = off, the shipped rule): the snowy scene's regions also take
# snow, up to this share of white, where the same shared choice m is positive, so that the snowy scene, like the
# psychedelic style, has a detail that depends on the noise AND the content through the frame's other tokens (issue
# #30). Only the training batches render it (they hold each crop's latent, the latent kernel's keys); snowy_scene on an
# image alone stays the flakes only.
SNOW_COVER = 0.0
SNOW_WHITE = np.array([240, 245, 255], np.float32)
SNOW_BLUR_CELLS = 0.375                 # the cover's edge, a Gaussian of this many latent cells (3 px at f = 8)
# SNOW_SHADE (stage 10's `--snow-shade`; 0 = off): where m is negative the regions take the cover's mirror image, up
# to this share (pushed away from the snow's white: a deep cold shade), so that at equal shares the mean of the two
# choices, which a model unsure of the choice draws under an x0 loss, is the snowy scene itself (up to clipping)
# rather than a half-white haze (why: the model card, session 24).
SNOW_SHADE = 0.0


@contextmanager
def trained_rule(folder):
    """The shared-choice rule that a model folder's stage 10 trained (its training.json: attend_kernel ("latent", KAPPA),
    attend_snow_cover, attend_snow_shade), set on this module while the block runs and put back after, so that a
    target drawn inside it is the one that model learned (v4's snowy scene: snow chosen per region); a folder without
    stage 10 (v3.4) leaves the module's rule as it is."""
    path = Path(folder) / "training.json" if folder else None
    info = json.loads(path.read_text()) if path and path.exists() else {}
    g, names = globals(), ("SHARED_KERNEL", "SHARED_KAPPA", "SNOW_COVER", "SNOW_SHADE")
    saved = {n: g[n] for n in names}
    kernel = info.get("attend_kernel") or []
    try:
        if kernel and kernel[0] == "latent":
            g["SHARED_KERNEL"], g["SHARED_KAPPA"] = "latent", float(kernel[1])
        g["SNOW_COVER"] = info.get("attend_snow_cover") or SNOW_COVER
        g["SNOW_SHADE"] = info.get("attend_snow_shade") or SNOW_SHADE
        yield info
    finally:
        g.update(saved)


def snow_covered(img: np.ndarray, eps: np.ndarray, m: np.ndarray) -> np.ndarray:
    """The snowy scene (flakes from each cell's own noise) moved towards the snow's white by s = SNOW_COVER *
    max(tanh(SHARED_GAIN * m), 0) where the shared noise m (H/8, W/8) is positive, and away from it by SNOW_SHADE *
    max(-tanh(SHARED_GAIN * m), 0) where it is negative: base + (s_cover - s_shade) (white - base), s upsampled
    smoothly."""
    h, w = img.shape[:2]
    turn = np.tanh(SHARED_GAIN * m).astype(np.float32)
    s = SNOW_COVER * np.clip(turn, 0, 1) - SNOW_SHADE * np.clip(-turn, 0, 1)
    s = cv2.GaussianBlur(cv2.resize(s, (w, h), interpolation=cv2.INTER_CUBIC), (0, 0), 8 * SNOW_BLUR_CELLS)
    s = np.clip(s, -SNOW_SHADE, 1)[..., None]      # no shade side at all when it is off (the rule of sessions 22-23)
    return np.clip(snowy_scene(img, eps) * (1 - s) + SNOW_WHITE * s, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Style:
    name: str
    prompts: tuple[str, ...]          # the first is the canonical prompt
    fn: Callable = field(repr=False)
    deterministic: bool = True

    def apply(self, img: np.ndarray, eps: np.ndarray | None = None, rng: np.random.Generator | None = None) -> np.ndarray:
        """Filter an image. Random styles place their content from `eps` (4, H/8, W/8), the
        diffusion noise of the sample; without it, from noise drawn with `rng`."""
        if self.deterministic:
            return self.fn(img)
        if eps is None:
            h, w = img.shape[:2]
            eps = (rng or np.random.default_rng(0)).standard_normal((4, h // 8, w // 8)).astype(np.float32)
        return self.fn(img, eps)


STYLES: tuple[Style, ...] = (
    Style("photo", ("a photo", "a photograph", "a realistic photo", "photo"), photo),
    Style("black and white", ("a black and white photo", "black and white", "a monochrome photo", "grayscale"), black_and_white),
    Style("sepia", ("a sepia photo", "sepia", "an old sepia photograph", "vintage sepia"), sepia),
    Style("pencil sketch", ("a pencil sketch", "pencil drawing", "a sketch", "a graphite sketch"), pencil_sketch),
    Style("cartoon", ("a cartoon", "cartoon style", "a comic drawing", "an animated cartoon"), cartoon),
    Style("pixel art", ("pixel art", "a pixel art image", "8-bit pixel art", "retro pixel art"), pixel_art),
    Style("thermal", ("a thermal image", "thermal camera", "an infrared heat map", "thermal vision"), thermal),
    Style("pointillism", ("pointillism", "a pointillist painting", "painted with dots", "a dotted painting"), pointillism, False),
    Style("snowy scene", ("a snowy scene", "snowing", "a winter scene with snow", "falling snow"), snowy_scene, False),
)
# Styles a training stage may add before the shipped weights know them (the UI lists STYLES only).
PSYCHEDELIC = Style("psychedelic", ("a psychedelic painting", "psychedelic", "psychedelic colours", "a psychedelic poster"),
                    psychedelic, False)
STYLE_BY_NAME = {s.name: s for s in STYLES}
SHARED_CHOICE_STYLES = (PSYCHEDELIC.name, "snowy scene")   # drawn from a shared choice m (snowy: with SNOW_COVER)


def shared_rendering(name: str, img: np.ndarray, eps: np.ndarray, m: np.ndarray) -> np.ndarray:
    """A SHARED_CHOICE_STYLES style's rendering of img under a given shared choice m (H/8, W/8), whatever kernel made m:
    the psychedelic turn, or the snowy scene's flakes from eps with its snow (snow_covered)."""
    if name == PSYCHEDELIC.name:
        return turned(img, m)
    if name == "snowy scene":
        return snow_covered(img, eps, m)
    raise ValueError(f"{name!r} is not drawn from a shared choice: one of {SHARED_CHOICE_STYLES}")


DETERMINISTIC_STYLES = tuple(s for s in STYLES if s.deterministic)


def style_for_prompt(prompt: str) -> Style | None:
    """The style whose phrasing matches the prompt (case-insensitive), or None."""
    p = prompt.strip().lower()
    for s in STYLES:
        if p in (q.lower() for q in s.prompts):
            return s
    return None


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def unknown_prompt_warning(prompt: str, who: str = "the embedded toy model") -> str | None:
    """The warning for a prompt the toy does not know (None for a known one): names its styles."""
    if style_for_prompt(prompt) is not None:
        return None
    return (f"{_capitalised(who)} only knows its styles, so \"{prompt}\" will not give a meaningful edit. Use one "
            f"of: {', '.join(s.prompts[0] for s in STYLES)} (or a listed phrasing of them).")


# The evaluation summary that `python -m v2v_core toy-eval ... --summary FOLDER/evaluation.json` writes beside a model's
# weights: per style, how often its output was recognised on clips the model never saw. A style recognised on fewer
# than FAINT_BELOW of those frames is announced as faint when someone asks for it, so a soft output is not mistaken for
# a broken studio. The summary names the digest of the weights it measured and is ignored for any other weights.
EVALUATION_FILE = "evaluation.json"
FAINT_BELOW = 0.5
CLEAR_FROM = 0.9


def weights_digest(folder) -> str:
    """A short SHA-256 of every weight file of a model folder (names and bytes): what an evaluation summary was
    measured on. Reads files only (no torch), so the UI can check it without loading the model."""
    h = hashlib.sha256()
    for f in sorted(Path(folder).glob("*/*.safetensors")):
        h.update(f"{f.parent.name}/{f.name}".encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


@lru_cache(maxsize=8)
def _read_evaluation(path: str, state: tuple) -> dict | None:
    """`state` (the folder's files' mtimes and sizes) is only the cache key: a changed file reads again."""
    d = json.loads(Path(path).read_text())
    return d if d.get("weights") == weights_digest(Path(path).parent) else None


def read_evaluation(folder) -> dict | None:
    """The folder's evaluation summary, or None when it has none or the summary was measured on other weights
    (read once per state of the folder's files: the UI asks on every run)."""
    f = Path(folder) / EVALUATION_FILE
    if not f.exists():
        return None
    stats = [(g, g.stat()) for g in [f, *sorted(Path(folder).glob("*/*.safetensors"))]]
    return _read_evaluation(str(f), tuple((str(g), st.st_mtime_ns, st.st_size) for g, st in stats))


def faint_style_warning(prompt: str, evaluation: dict | None, who: str = "the embedded toy model") -> str | None:
    """A notice for a known style that the evaluated model draws faintly (recognised on fewer than FAINT_BELOW of the
    evaluation frames), naming its clearest styles; None for other prompts or without a matching evaluation."""
    style = style_for_prompt(prompt)
    rec = (evaluation or {}).get("recognisability", {})
    if style is None or style.name not in rec:
        return None

    def share(name):   # of all the evaluation's frames (the clips' lengths differ)
        return float(np.average(rec[name], weights=evaluation.get("frames")))

    if share(style.name) >= FAINT_BELOW:
        return None
    clear = [s.prompts[0] for s in DETERMINISTIC_STYLES if s.name != "photo" and s.name in rec and share(s.name) >= CLEAR_FROM]
    clips = ", ".join(evaluation.get("clips", []))
    return (f"{_capitalised(who)} draws \"{prompt}\" only faintly: on clips it never saw ({clips}; "
            f"{sum(evaluation.get('frames', []))} frames) its output was nearer this style's filter target than every "
            f"other style's on {share(style.name):.0%} of frames (its model card says why). Its clearest styles: {', '.join(clear)}.")


def prompt_warning(prompt: str, evaluation: dict | None = None, who: str = "the embedded toy model") -> str | None:
    """What to tell someone who asks for `prompt`: that the model does not know it, or that it draws it faintly."""
    return unknown_prompt_warning(prompt, who) or faint_style_warning(prompt, evaluation, who)


def shipped_model_prompt_warning(prompt: str) -> str | None:
    """prompt_warning for the shipped toy weights, from their evaluation summary, without loading the model (the UI's
    service and the comparisons CLI ask before a run)."""
    from . import MODEL_DIR

    return prompt_warning(prompt, read_evaluation(MODEL_DIR))


def style_targets(sources, prompt: str) -> list[np.ndarray] | None:
    """The prompt's filter target of every source frame; None when the prompt is not one of the toy's
    deterministic styles."""
    style = style_for_prompt(prompt)
    if style is None or not style.deterministic:
        return None
    return [style.apply(f) for f in sources]


def style_mae(sources, outputs, prompt: str, targets: list[np.ndarray] | None = None) -> float | None:
    """Style fidelity for the toy's prompts: the mean absolute error (0-255) between each output frame
    and the prompt's filter target of its source frame; None when the prompt is not one of the toy's
    deterministic styles. Warp error alone rewards an output that drops detail; this says what a
    steadier output costs in fidelity to what was asked. `targets` (from style_targets) saves filtering
    the sources again when several outputs of one source are scored."""
    targets = style_targets(sources, prompt) if targets is None else targets
    if targets is None or not len(outputs):
        return None
    return float(np.mean([np.abs(o.astype(np.int16) - t.astype(np.int16)).mean() for t, o in zip(targets, outputs)]))
