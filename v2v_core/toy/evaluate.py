"""Evaluate the embedded toy model on a clip: `python -m v2v_core toy-eval VIDEO [--frames 48]`.

Outputs come from the engine's standard path at the studio's defaults for the toy (strength 0.4,
2 LCM steps, seed 0). Figures (JSON):
- vae_psnr_db / vae_ssim: the autoencoder's round trip of the frames at `size` px;
- fidelity: per deterministic style, PSNR (dB) and SSIM of the output against the style's filter target
  of the frame (psnr, ssim), beside the autoencoder's round trip of that target (bound_psnr,
  bound_ssim): what the model could at best draw through its autoencoder. Structure is judged here: an
  output with the right palette and no structure scores low. Beside them reach_psnr / reach_ssim: the filter
  applied to the autoencoder's round trip of the frame, then drawn through the autoencoder. The UNet knows the
  frame only through its latent; a filter that reacts to detail the encoder drops (the cartoon's thresholded
  outlines, pixel art's colour quantisation) gives another image from that round trip, so a model that applied
  the filter exactly to what its latent holds would score this, not the bound (a reference, not a limit: it
  counts the autoencoder's loss twice, so it is pessimistic for the smooth styles; photo's is the double round trip);
- recognisability: per deterministic style, the share of frames whose output is closer in mean
  absolute error to that style's filter target than to every other style's (the earlier, weaker test);
- photo_psnr_db: the output of "a photo" against the input;
- invented_detail: per invented-content style (pointillism, snow), the mean absolute Laplacian of its
  output over that of the "a photo" output on the same frames (the dots and flakes are there: > 1);
- invented_detail_bound: the same ratio for the autoencoder's round trip of that style's target (dots and
  flakes placed by seeded noise; drawn as the model was trained, styles.trained_rule, v4's snowy scene with its
  snow): what any UNet could at best show through this autoencoder;
- prompt_separation_mae: mean absolute difference between outputs of different prompts;
- attention_share: per style, the PSNR (dB) of the output with every self-attention (attn1) / every cross-attention
  (attn2) output zeroed against the untouched output, on the first ATTENTION_FRAMES frames (attention_share): how much
  of what the model draws lives in its attention (what StreamV2V, window attention and TokenFlow act on);
- fps: frames/second of the per-frame baseline at `size` px (strength 0.4, 2 steps), after warm-up.
SSIM is scikit-image's structural_similarity over the three channels (7x7 windows, data range 255).
"""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import torch

from ..backbones import load_backbone, to_tensor, to_uint8
from ..engine import Stream, StreamSettings, fps_after_warmup
from ..metrics import laplacian_energy  # noqa: F401  (toy-eval's detail measure; imported from here by tests)
from ..video import read_video
from .styles import DETERMINISTIC_STYLES


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def grid_target(bb, style, frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A style's target on a frame as the model's training drew it: a random style from noise drawn with rng, a style
    whose choice is keyed on the source latent (batches.latent_keyed, under styles.trained_rule) from the frame's own
    latent, as the UNet is given it."""
    from .batches import latent_keyed
    from .styles import latent_shared_noise, shared_rendering

    if style.deterministic:
        return style.apply(frame)
    h, w = frame.shape[:2]
    eps = rng.standard_normal((4, h // 8, w // 8)).astype(np.float32)       # as Style.apply draws it
    if not latent_keyed(style.name):
        return style.apply(frame, eps=eps)
    with torch.no_grad():
        z = bb.encode_images(to_tensor(frame, bb.device, bb.dtype))[0].float().cpu().numpy()
    return shared_rendering(style.name, frame, eps, latent_shared_noise(z, eps))


def invented_targets(bb, clip, folder=None) -> dict:
    """Per invented-content style, its targets on the frames of clip, each frame's noise drawn from one seeded
    generator, drawn as the model in `folder` was trained on them (styles.trained_rule, grid_target)."""
    from .styles import STYLES, trained_rule

    rng = np.random.default_rng(0)
    with trained_rule(folder):
        return {s.name: [grid_target(bb, s, f, rng) for f in clip] for s in STYLES if not s.deterministic}


def style_grid(videos, out_png: str, frame: int = 0, size: int = 256, backbone=None, strength: float = 0.4,
               steps: int = 2, folder=None) -> str:
    """A picture of every style on one frame of each video: per video, a row of the filter targets (each as the model
    in `folder` was trained on it: styles.trained_rule) and a row of the model's outputs (the engine's standard path),
    the input at the left of both rows."""
    import cv2

    from .styles import STYLES, trained_rule

    bb = backbone or load_backbone("toy")
    videos = [videos] if isinstance(videos, (str, bytes)) or hasattr(videos, "__fspath__") else list(videos)

    def label(img, text):
        img = img.copy()
        cv2.rectangle(img, (0, 0), (img.shape[1], 20), (0, 0, 0), -1)
        cv2.putText(img, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        return img

    rows = []
    for video in videos:
        clip, _ = read_video(video, frame + 1, size)
        f = clip[frame]
        tops, bottoms = [f], [f]
        rng = np.random.default_rng(0)
        with trained_rule(folder):                  # the folder's training.json read once per clip, not per style
            tops += [grid_target(bb, s, f, rng) for s in STYLES]
        for s in STYLES:
            stream = Stream(bb, s.prompts[0], StreamSettings(strength=strength, steps=steps, seed=0))
            bottoms.append(list(stream.run([f]))[0])
        name = Path(str(video)).stem
        names = [f"input: {name}"] + [f'"{s.prompts[0]}"' for s in STYLES]
        rows.append(np.concatenate([label(t, n + (" target" if i else "")) for i, (t, n) in enumerate(zip(tops, names))], 1))
        rows.append(np.concatenate([label(b, n + (" output" if i else "")) for i, (b, n) in enumerate(zip(bottoms, names))], 1))
    cv2.imwrite(str(out_png), cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR))
    return str(out_png)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, channel_axis=2, data_range=255))


def round_trip(bb, frames) -> list[np.ndarray]:
    """The backbone's autoencoder: encode then decode each frame."""
    with torch.inference_mode():
        return [to_uint8(bb.decode_latents(bb.encode_images(to_tensor(f, bb.device, bb.dtype))))[0] for f in frames]


ATTENTION_FRAMES = 8                   # the attention probe's frames (3 runs per style)
ATTENTION_KINDS = ("attn1", "attn2")   # diffusers' names: self-attention, cross-attention (the prompt)


def attention_share(bb, clip, prompt: str, strength: float = 0.4, steps: int = 2) -> dict:
    """How much the output depends on the UNet's self- and cross-attention: per kind, the mean PSNR (dB) of the
    per-frame baseline's output with EVERY such layer's output zeroed (forward hooks, removed afterwards) against the
    untouched output. High (40+ dB): the model draws without it; low: what it draws lives there (TOY_MODEL_NOTES.md)."""
    def run(kind=None):
        handles = [m.register_forward_hook(lambda _m, _i, out: torch.zeros_like(out))
                   for name, m in bb.unet.named_modules() if kind and name.endswith(kind)]
        try:
            return list(Stream(bb, prompt, StreamSettings(strength=strength, steps=steps, seed=0)).run(clip))
        finally:
            for h in handles:
                h.remove()

    base = run()
    return {kind: round(float(np.mean([psnr(a, b) for a, b in zip(base, run(kind))])), 2) for kind in ATTENTION_KINDS}


def _mean_agreement(images, refs) -> tuple[float, float]:
    """Mean PSNR (dB, 2 decimals) and SSIM (3 decimals) of images against their references, frame by frame."""
    return (round(float(np.mean([psnr(a, b) for a, b in zip(images, refs)])), 2),
            round(float(np.mean([ssim(a, b) for a, b in zip(images, refs)])), 3))


def evaluate(video: str, frames: int = 48, size: int = 256, backbone=None, strength: float = 0.4, steps: int = 2,
             folder=None) -> dict:
    """toy-eval's report on one clip (the module's docstring); `folder` is the model's, whose training.json says how
    its invented styles were drawn (styles.trained_rule: the bound's targets as the model was trained on them)."""
    from .styles import STYLES

    bb = backbone or load_backbone("toy")
    clip, _ = read_video(video, frames, size)
    recon = round_trip(bb, clip)

    def run(prompt):
        return list(Stream(bb, prompt, StreamSettings(strength=strength, steps=steps, seed=0)).run(clip))

    targets = {s.name: [s.apply(f) for f in clip] for s in DETERMINISTIC_STYLES}
    outputs, recog, fidelity = {}, {}, {}
    for s in DETERMINISTIC_STYLES:
        outputs[s.name] = run(s.prompts[0])
        hits = 0
        for i, out in enumerate(outputs[s.name]):
            d = {n: np.abs(out.astype(np.int16) - t[i]).mean() for n, t in targets.items()}
            hits += min(d, key=d.get) == s.name
        recog[s.name] = hits / len(clip)
        bound = round_trip(bb, targets[s.name])
        reach = round_trip(bb, [s.apply(r) for r in recon])
        fidelity[s.name] = {}
        for prefix, images in (("", outputs[s.name]), ("bound_", bound), ("reach_", reach)):
            fidelity[s.name][prefix + "psnr"], fidelity[s.name][prefix + "ssim"] = _mean_agreement(images, targets[s.name])
    sep = [np.mean([np.abs(a.astype(np.int16) - b).mean() for a, b in zip(outputs[x], outputs[y])])
           for x, y in itertools.combinations(outputs, 2)]
    photo_detail = laplacian_energy(outputs["photo"])
    invented = {s.name: round(laplacian_energy(run(s.prompts[0])) / photo_detail, 2) for s in STYLES if not s.deterministic}
    invented_bound = {n: round(laplacian_energy(round_trip(bb, t)) / photo_detail, 2)
                      for n, t in invented_targets(bb, clip, folder).items()}
    share = {s.name: attention_share(bb, clip[:ATTENTION_FRAMES], s.prompts[0], strength, steps) for s in STYLES}
    base = Stream(bb, "a pencil sketch", StreamSettings(strength=0.4, steps=2, seed=0))
    list(base.run(clip))
    vae_psnr, vae_ssim = _mean_agreement(recon, clip)
    return {
        "video": str(video), "frames": len(clip), "size": size, "backbone": bb.name,
        "vae_psnr_db": vae_psnr, "vae_ssim": vae_ssim,
        "fidelity": fidelity,
        "recognisability": {k: round(v, 3) for k, v in recog.items()},
        "recognisability_mean": round(float(np.mean(list(recog.values()))), 3),
        "photo_psnr_db": round(float(np.mean([psnr(o, f) for o, f in zip(outputs["photo"], clip)])), 2),
        "invented_detail": invented,
        "invented_detail_bound": invented_bound,
        "prompt_separation_mae": round(float(np.mean(sep)), 2),
        "attention_share": share, "attention_share_frames": min(len(clip), ATTENTION_FRAMES),
        "fps": round(fps_after_warmup(base.timings), 2),
        "eval_settings": {"strength": strength, "steps": steps, "seed": 0, "threads": torch.get_num_threads()},
    }


def summary(reports: list[dict], folder) -> dict:
    """What the studio tells its users about a model folder's styles (styles.EVALUATION_FILE): per deterministic style,
    per clip, the recognisability and the gap to the autoencoder's bound (dB), for the weights of `folder`."""
    from .styles import weights_digest

    return {
        "weights": weights_digest(folder),
        "clips": [Path(r["video"]).stem for r in reports],
        "frames": [r["frames"] for r in reports], "size": reports[0]["size"],
        "recognisability": {s: [r["recognisability"][s] for r in reports] for s in reports[0]["recognisability"]},
        "gap_db": {s: [round(r["fidelity"][s]["bound_psnr"] - r["fidelity"][s]["psnr"], 2) for r in reports]
                   for s in reports[0]["fidelity"]},
        "made_by": "python -m v2v_core toy-eval CLIP [CLIP ...] --frames N --summary FOLDER/evaluation.json",
    }


def markdown_report(reports: list[dict]) -> str:
    """The model card's tables for one or more evaluate() reports (one column group per clip): per deterministic
    style output PSNR / SSIM, bound, gap in dB (bound - output), SSIM ratio (output / bound) and the reach reference
    (PSNR / SSIM, when the report has it); then the other figures; then the autoencoder's round trip averaged over
    the clips."""
    names = [Path(r["video"]).stem for r in reports]
    reach = all("reach_psnr" in f for r in reports for f in r["fidelity"].values())
    cols = "output | bound | gap dB | SSIM ratio" + (" | reach" if reach else "")
    lines = ["| style | " + " | ".join(f"{n}: {cols}" for n in names) + " |",
             "|---" * (1 + (4 + reach) * len(names)) + "|"]
    for style in reports[0]["fidelity"]:
        row = [style]
        for r in reports:
            f = r["fidelity"][style]
            row += [f"{f['psnr']:.2f} / {f['ssim']:.3f}", f"{f['bound_psnr']:.2f} / {f['bound_ssim']:.3f}",
                    f"{f['bound_psnr'] - f['psnr']:.2f}", f"{f['ssim'] / f['bound_ssim']:.2f}"]
            row += [f"{f['reach_psnr']:.2f} / {f['reach_ssim']:.3f}"] if reach else []
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "| figure | " + " | ".join(names) + " |", "|---" * (1 + len(names)) + "|"]
    for key in ("vae_psnr_db", "vae_ssim", "photo_psnr_db", "recognisability_mean", "prompt_separation_mae", "fps"):
        lines.append(f"| {key} | " + " | ".join(str(r[key]) for r in reports) + " |")
    for key in ("recognisability", "invented_detail", "invented_detail_bound"):
        for style in reports[0].get(key, {}):
            lines.append(f"| {key}: {style} | " + " | ".join(str(r[key][style]) for r in reports) + " |")
    for style in reports[0].get("attention_share", {}):      # dB with every attn1 / attn2 output zeroed
        lines.append(f"| attention_share attn1 / attn2 dB: {style} | " + " | ".join(
            f"{r['attention_share'][style]['attn1']} / {r['attention_share'][style]['attn2']}" for r in reports) + " |")
    lines += ["", f"autoencoder round trip, mean over the clips: {np.mean([r['vae_psnr_db'] for r in reports]):.2f} dB, "
                  f"SSIM {np.mean([r['vae_ssim'] for r in reports]):.3f}"]
    return "\n".join(lines) + "\n"
