"""Train SVDiff's temporal memory (METHODS.md section 3) with the backbone frozen.

    python -m v2v_core train-svdiff --synthetic 12 --memory-size 8 --steps 300 --out toy-8x8.safetensors
    python -m v2v_core train-svdiff --videos clips/ --backbone sd15 --prompt "a photo" --device cuda ...

Only the memory parameters train. Clips are split into segments of `segment` frames; each batch item
is a "chain" that walks one clip segment by segment at one timestep t, its memory carried from the
last frame of a segment into the next with the graph cut there (truncated backpropagation). Three
objectives, all MSE per frame (the UNet's output read through the backbone's parametrisation:
Backbone.predicted_eps / predicted_x0):
- standard (SD and other backbones; the paper's): x_t = sqrt(abar) z + sqrt(1 - abar) eps with fresh
  noise per frame, z the frame's latent, text --prompt; loss = |eps_theta(x_t, t, text) - eps|^2.
- sdedit: the toy's own training objective applied to clips. Each chain takes one of the toy's
  deterministic styles; x_t is the noised SOURCE latent (fresh noise per frame, or --noise chain), and
  eps_theta is trained so that its x0 estimate lands on the style-filtered frame's latent.
- consistent (the toy's default; THIS PROJECT'S VARIANT of the data, not the paper's): the frozen
  backbone translates each clip through the engine (prompt, strength 0.3/0.4/0.5 and seed drawn per
  clip); x_t is exactly the UNet input the engine formed at each LCM step (its one noise per stream),
  and the x0 target is that run's output made consistent along the source's optical flow
  (y_k = (1 - b) out_k + b warp(y_{k-1}), b = --blend 0.5). The paper trains on real videos, which are
  consistent by nature, with a backbone that already fits them; the toy is under-fitted, so any
  target it cannot draw per frame (the sdedit objective's style filters) is learned as extra
  per-frame capacity, which sharpened details and raised the warp error. Here the per-frame part of
  the target is what the backbone already draws, so the memory can only lower the loss by carrying
  the past forward.
What was measured on the toy (woman-running, 48 frames, 256 px, "a pencil sketch", strength 0.4, 2
steps; per-frame baseline warp error 4.375): standard objective on styled clips 5.22; sdedit with one
noise per clip 7.34; sdedit with fresh noise (shipped until session 3) 6.49; consistent at lr 1e-3
5.66 (held-out teacher loss above the identity's: too noisy), at lr 3e-4 3.76, at lr 1e-4 3.14 (the
shipped recipe: steadier, and smoother, output; its cost in fidelity is in the SVDiff issue's note).
(Those figures are on the toy before its tuning stage; retrained against the tuned toy, whose baseline
is 3.68: 1x1 3.05, 8x8 3.24, 16x16 3.16.)
Seeded; resumable (--resume CKPT keeps the weights, the Adam moments and the step).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from .errors import V2VError

VIDEO_EXTS = (".mp4", ".webm", ".mov", ".avi", ".mkv", ".gif")
IN_STYLE_P = 0.25   # sdedit: share of chains whose input is already styled (as in the toy's own training)
SYNTHETIC_MOTIONS = ("pan", "zoom", "rotate", "object", "shift")
TEACHER_STRENGTHS = (0.3, 0.4, 0.5)  # consistent: the engine settings the teacher runs are drawn from
TEACHER_STEPS = 2
TEACHER_BLEND = 0.5                  # consistent: weight of the flow-warped previous teacher frame


def synthetic_clips(n: int, frames: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """n clips from the examples generator (known pan / zoom / rotation / moving object / shift) over
    the toy's training images (scikit-image photos and procedural scenes, never ../shared clips), with
    varied image, motion and speed; deterministic for a seed."""
    from .synthetic import make_clip
    from .toy.data import image_pool

    rng = np.random.default_rng(seed)
    pool = [im for im in image_pool(seed, short_sides=(320,)) if min(im.shape[:2]) >= 320]
    out = []
    for k in range(n):
        image = pool[int(rng.integers(len(pool)))]
        motion = SYNTHETIC_MOTIONS[int(rng.integers(len(SYNTHETIC_MOTIONS)))]
        speed = float(rng.uniform(1.0, 4.0))
        out.append(np.stack(make_clip(motion, frames, size, speed=speed, image=image).frames))
    return out


def video_clips(sources: list[str], frames: int | None, size: int) -> list[np.ndarray]:
    from .video import read_video

    paths: list[Path] = []
    for s in sources:
        p = Path(s)
        if p.is_dir():
            paths += sorted(q for q in p.iterdir() if q.suffix.lower() in VIDEO_EXTS)
        elif p.exists():
            paths.append(p)
        else:
            raise V2VError(f"{s} does not exist: pass video files or a folder of videos to --videos.")
    if not paths:
        raise V2VError(f"No videos found in {', '.join(sources)} (looked for {', '.join(VIDEO_EXTS)}).")
    return [np.stack(read_video(p, frames, size)[0]) for p in paths]


class Teacher:
    """One clip translated by the frozen backbone through the engine (no method), for the consistent
    objective: `x[k, s]` the UNet input of frame k at LCM step s exactly as the engine formed it, `t[s]`
    its timestep, `z[k]` the target latent (see consistent_teacher), `prompt` an index into the prompts."""

    def __init__(self, x, t: list[int], z, prompt: int):
        self.x, self.t, self.z, self.prompt = x, t, z, prompt


def consistent_teacher(backbone, frames, prompt: str, strength: float, steps: int, seed: int,
                       blend: float = TEACHER_BLEND, flow: str = "dis") -> tuple:
    """The frozen backbone's own per-frame translation of `frames` (the engine's standard path), made
    temporally consistent along the source's optical flow:
        y_0 = out_0,   y_k = (1 - blend) * out_k + blend * warp(y_{k-1} -> k)   (out_k where no match)
    Returns (UNet inputs (N, steps, 4, h, w), timesteps, target latents of y (N, 4, h, w)). The per-frame
    part of the target is what the backbone already draws, so a memory can only lower this loss by
    carrying the previous frames forward (what SVDiff's memory is for); a target the frozen toy cannot
    draw per frame (its style filters) instead rewards using the memory as extra per-frame capacity."""
    import torch

    from .backbones import to_tensor
    from .engine import Stream, StreamSettings
    from .flow import source_flow, warp_backward

    captured = []
    hook = backbone.unet.register_forward_pre_hook(lambda m, args: captured.append(args[0][0].clone()))
    try:
        stream = Stream(backbone, prompt, StreamSettings(strength=strength, steps=steps, seed=seed))
        outs = list(stream.run(list(frames)))
    finally:
        hook.remove()
    fl = source_flow(list(frames), flow)
    ones = np.ones(frames[0].shape[:2], np.float32)
    y = [outs[0].astype(np.float32)]
    for k in range(1, len(outs)):
        warped = warp_backward(y[-1], fl.bwd[k - 1])
        ok = (warp_backward(ones, fl.bwd[k - 1]) > 0.999) & ~fl.occ_j[k - 1]
        cur = outs[k].astype(np.float32)
        y.append(np.where(ok[..., None], (1 - blend) * cur + blend * warped, cur))
    with torch.inference_mode():
        z = torch.cat([backbone.encode_images(to_tensor(np.clip(f, 0, 255).round().astype(np.uint8), backbone.device,
                                                        backbone.dtype)) for f in y])
    x = torch.stack(captured).view(len(frames), steps, *captured[0].shape)
    return x.float().clone(), list(stream.t_list), z.float().clone()


def teacher_runs(backbone, clips, prompts: list[str], seed: int, blend: float, fingerprint: str, cache=None,
                 progress: bool = True) -> list[Teacher]:
    """The consistent objective's teachers: one engine run per clip, its prompt and strength drawn from (seed, 7),
    its noise seeded by seed and the clip's index. They depend on the backbone, the clips, the prompts, seed and blend,
    not on the memory: with `cache` (a file) they are made once, kept there under a key of exactly those, and read
    back by the next run that shares them (the Makefile's three memory sizes)."""
    import hashlib

    import torch
    from tqdm import tqdm

    h = hashlib.sha256(repr((fingerprint, prompts, seed, blend, TEACHER_STRENGTHS, TEACHER_STEPS)).encode())
    for clip in clips:
        h.update(np.ascontiguousarray(clip).tobytes())
    key = h.hexdigest()
    if cache and Path(cache).exists():
        held = torch.load(cache, weights_only=True)
        if held.get("key") == key:
            return [Teacher(x, list(t), z, int(p)) for x, t, z, p in held["teachers"]]
    teachers = []
    trng = np.random.default_rng([seed, 7])
    for i, clip in enumerate(tqdm(clips, desc="teacher runs", unit="clip", disable=not progress)):
        pi = int(trng.integers(len(prompts)))
        strength = float(TEACHER_STRENGTHS[int(trng.integers(len(TEACHER_STRENGTHS)))])
        x, ts, z = consistent_teacher(backbone, clip, prompts[pi], strength, TEACHER_STEPS, seed * 1000 + i, blend)
        teachers.append(Teacher(x, ts, z, pi))
    if cache:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"key": key, "teachers": [(t.x, t.t, t.z, t.prompt) for t in teachers]}, cache)
    return teachers


class _Chain:
    """One batch item: walks clip `clip` from frame `pos`, at timestep t, under one style/prompt."""

    def __init__(self, clip: int, t: int, style: int, eps=None):
        self.clip, self.t, self.style, self.pos, self.eps = clip, t, style, 0, eps
        self.in_style = False       # sdedit: the input is already in the style (what the second LCM step sees)
        self.step = 0               # consistent: the LCM step of the teacher's run this chain trains


def train(backbone, clips: list[np.ndarray], memory_size: int = 8, steps: int = 300, segment: int = 8,
          batch: int = 2, lr: float | None = None, seed: int = 0, t_range: tuple[int, int] = (100, 650),
          prompt: str | None = None, resume: str | None = None, out: str | None = None, save_every: int = 100,
          half: bool = False, progress: bool = True, log=None, objective: str = "auto", noise: str = "frame",
          blend: float = TEACHER_BLEND, teacher_cache: str | None = None) -> dict:
    """Train (or continue training) a memory for `backbone`; returns a summary with the loss curve.
    Writes `out` every `save_every` steps and at the end; `teacher_cache`: see teacher_runs."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from .backbones import to_tensor
    from .svdiff import (MemoryState, _Call, backbone_fingerprint, build_memory, install, load_checkpoint, save_checkpoint,
                         transformer_blocks)

    if not clips or min(len(c) for c in clips) < segment:
        raise V2VError(f"Every training clip needs at least {segment} frames (the segment length).")
    dev, dt = backbone.device, torch.float32
    unet = backbone.unet if backbone.dtype == dt else backbone.unet.to(dtype=dt)
    unet.requires_grad_(False)
    install(unet)
    widths = transformer_blocks(unet)
    if not widths:
        raise V2VError(f"Backbone '{backbone.name}' has no transformer blocks to put a memory after.")
    fingerprint = backbone_fingerprint(unet)   # hashed once: checked on resume, written in the header
    styles = None
    if backbone.name == "toy" and prompt is None:
        from .toy.styles import DETERMINISTIC_STYLES

        styles = list(DETERMINISTIC_STYLES)
    if objective == "auto":
        objective = "consistent" if styles else "standard"
    if lr is None:
        lr = 1e-4 if objective == "consistent" else 1e-3
    memory = build_memory(widths, memory_size, seed).to(dev)
    params = list(memory.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    start = 0
    if resume:
        state, head, moments = load_checkpoint(resume, backbone.name, widths, fingerprint)
        if int(head.get("memory_size", -1)) != memory_size:
            raise V2VError(f"{resume} holds a {head.get('memory_size')}x{head.get('memory_size')} memory, not "
                           f"{memory_size}x{memory_size}.")
        memory.load_state_dict(state)
        start = int(head.get("steps_trained", 0))
        if moments:
            for name, p in memory.named_parameters():
                opt.state[p] = {"step": torch.tensor(float(head.get("adam_step", start))),
                                "exp_avg": moments[f"{name}.exp_avg"].to(dev), "exp_avg_sq": moments[f"{name}.exp_avg_sq"].to(dev)}
    memory.train()

    if objective == "sdedit" and not styles:
        raise V2VError("The sdedit objective needs the toy backbone's styles; use --objective standard.")
    if objective == "consistent" and styles:
        from .toy.styles import STYLES

        styles = None                           # every toy prompt, the invented-content styles included
        prompts = [s.prompts[0] for s in STYLES]
    else:
        prompts = [s.prompts[0] for s in styles] if styles else [prompt or "a photo"]
    texts = [backbone.encode_prompt(p).to(dt).clone() for p in prompts]  # out of inference mode
    abar = backbone.scheduler.alphas_cumprod.to(dev, torch.float64)

    # a resumed run continues with generators seeded by (seed, start step): reproducible, though not the
    # exact draws an uninterrupted run would have made
    rng = np.random.default_rng([seed, start])
    gen = torch.Generator("cpu").manual_seed(seed * 1_000_003 + start + 1)
    cache: dict[tuple[int, int], torch.Tensor] = {}

    @torch.no_grad()
    def latents(clip: int, style: int) -> torch.Tensor:
        if (clip, style) not in cache:
            frames = clips[clip]
            if styles:
                frames = [styles[style].apply(f) for f in frames]
            z = torch.cat([backbone.encode_images(to_tensor(f, dev, backbone.dtype)).to(dt) for f in frames])
            cache[(clip, style)] = z.clone()  # a normal tensor (encode_images runs in inference mode)
        return cache[(clip, style)]

    teachers: list[Teacher] = []
    if objective == "consistent":              # one engine run per clip: prompt, strength and seed drawn
        teachers = [Teacher(t.x.to(dev, dt), t.t, t.z.to(dev, dt), t.prompt)
                    for t in teacher_runs(backbone, clips, prompts, seed, blend, fingerprint, teacher_cache, progress)]

    def new_chain() -> _Chain:
        if teachers:
            c = _Chain(int(rng.integers(len(clips))), 0, 0)
            c.step = int(rng.integers(TEACHER_STEPS))
            c.t, c.style = teachers[c.clip].t[c.step], teachers[c.clip].prompt
            return c
        c = _Chain(int(rng.integers(len(clips))), int(rng.integers(t_range[0], t_range[1] + 1)),
                   int(rng.integers(len(prompts))))
        c.in_style = objective == "sdedit" and bool(rng.random() < IN_STYLE_P)
        if objective == "sdedit" and noise == "chain":   # one noise per chain, as the engine uses one per stream
            c.eps = torch.randn(latents(c.clip, 0).shape[1:], generator=gen).to(dev, dt)
        return c

    chains = [new_chain() for _ in range(batch)]
    state = MemoryState()
    slots = [(b, "cond") for b in range(batch)]
    losses: list[float] = []
    meta = {"memory_size": memory_size, "backbone": backbone.name, "backbone_fingerprint": fingerprint,
            "widths": widths,
            "heads": {b: memory[k].attn.num_heads for b, k in zip(widths, memory.keys())},
            "segment": segment, "batch": batch, "lr": lr, "seed": seed, "t_range": list(t_range),
            "prompts": prompts, "clips": len(clips), "objective": objective, "noise": noise}
    if teachers:
        meta.update(teacher_blend=blend, teacher_strengths=list(TEACHER_STRENGTHS), teacher_steps=TEACHER_STEPS)
    t_start = time.perf_counter()
    bar = tqdm(range(start, steps), desc=f"svdiff {memory_size}x{memory_size}", unit="step", disable=not progress)
    for step in bar:
        for b, ch in enumerate(chains):                       # a finished clip: a new chain, a fresh memory
            if ch.pos + segment > len(clips[ch.clip]):
                chains[b] = new_chain()
                state.forget(slots[b])
        t = torch.tensor([c.t for c in chains], device=dev)
        a = abar[t].to(dt)[:, None, None, None]
        text = torch.cat([texts[c.style] for c in chains])
        loss = 0.0
        for k in range(segment):
            z = None if teachers else torch.stack([latents(c.clip, c.style)[c.pos + k] for c in chains])
            kw = {"v2v": _Call(memory, state, slots)}
            if teachers:            # the engine's own inputs in, the flow-consistent teacher latent as the x0 target
                x = torch.stack([teachers[c.clip].x[c.pos + k, c.step] for c in chains])
                z = torch.stack([teachers[c.clip].z[c.pos + k] for c in chains])
                pred = unet(x, t, encoder_hidden_states=text, cross_attention_kwargs=kw).sample
                c = pred.shape[1]          # an image-conditioned UNet's captured input carries the source after x
                x, src = x[:, :c], (x[:, c:] if x.shape[1] > c else None)
                loss = loss + F.mse_loss(backbone.predicted_x0(x, pred, a.sqrt(), (1 - a).sqrt(), src), z)
            elif objective == "standard":
                eps = torch.randn(z.shape, generator=gen).to(dev, dt)
                x = a.sqrt() * z + (1 - a).sqrt() * eps
                pred = unet(backbone.unet_input(x, z), t, encoder_hidden_states=text, cross_attention_kwargs=kw).sample
                loss = loss + F.mse_loss(backbone.predicted_eps(x, pred, a.sqrt(), (1 - a).sqrt(), z), eps)
            else:                   # source latent in, style latent as the x0 target
                src = torch.stack([latents(c.clip, c.style if c.in_style else 0)[c.pos + k] for c in chains])
                e = torch.stack([c.eps for c in chains]) if noise == "chain" else torch.randn(src.shape, generator=gen).to(dev, dt)
                x = a.sqrt() * src + (1 - a).sqrt() * e
                cond = torch.stack([latents(c.clip, 0)[c.pos + k] for c in chains])   # the unstyled source frame
                pred = unet(backbone.unet_input(x, cond), t, encoder_hidden_states=text, cross_attention_kwargs=kw).sample
                loss = loss + F.mse_loss(backbone.predicted_x0(x, pred, a.sqrt(), (1 - a).sqrt(), cond), z)
        loss = loss / segment
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        state.detach()                                         # truncated backpropagation at the boundary
        for c in chains:
            c.pos += segment
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        if log:
            log(step + 1, losses[-1])
        if out and ((step + 1) % save_every == 0 or step + 1 == steps):
            save_checkpoint(out, memory, {**meta, "steps_trained": step + 1,
                                          "train_minutes": round((time.perf_counter() - t_start) / 60, 2)},
                            optimizer=opt, half=half)
    memory.eval()
    return {"memory": memory, "losses": losses, "steps_trained": steps, "seconds": time.perf_counter() - t_start,
            "meta": meta}


def eval_loss(backbone, memory, clips: list[np.ndarray], t: int = 400, segment: int = 8, seed: int = 123,
              prompt: str = "a photo") -> float:
    """Mean noise-prediction MSE over every frame of `clips` (memory carried through each clip), with
    noise fixed by `seed`: the number training should lower. memory=None measures the bare backbone."""
    import torch
    import torch.nn.functional as F

    from .backbones import to_tensor
    from .svdiff import MemoryState, _Call

    dev = backbone.device
    gen = torch.Generator("cpu").manual_seed(seed)
    text = backbone.encode_prompt(prompt)
    a = backbone.scheduler.alphas_cumprod.to(dev)[t]
    tt = torch.tensor([t], device=dev)
    total, n = 0.0, 0
    with torch.no_grad():
        for clip in clips:
            state = MemoryState()
            for f in clip:
                z = backbone.encode_images(to_tensor(f, dev, backbone.dtype))
                eps = torch.randn(z.shape, generator=gen).to(dev, z.dtype)
                x = a.sqrt() * z + (1 - a).sqrt() * eps
                kw = {"v2v": _Call(memory, state, [(0, "cond")])} if memory is not None else None
                pred = backbone.unet(backbone.unet_input(x, z), tt, encoder_hidden_states=text, cross_attention_kwargs=kw).sample
                total += float(F.mse_loss(backbone.predicted_eps(x, pred, a.sqrt(), (1 - a).sqrt(), z), eps))
                n += 1
    return total / max(n, 1)


def add_parser(sub):
    p = sub.add_parser("train-svdiff", help="train SVDiff's temporal memory (backbone frozen)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--videos", nargs="+", help="video files or folders of videos")
    src.add_argument("--synthetic", type=int, metavar="N", help="N clips made by the examples generator")
    p.add_argument("--memory-size", type=int, default=8, choices=[1, 4, 8, 16], help="memory tokens per side")
    p.add_argument("--steps", type=int, default=300, help="optimisation steps (each: batch x segment frames)")
    p.add_argument("--out", required=True, help="checkpoint (.safetensors) written every --save-every steps")
    p.add_argument("--backbone", default="toy", help="toy | sd15 | sd15-random | PATH (default: toy)")
    p.add_argument("--prompt", default=None, help="text for every clip (default: toy: its style prompts; else 'a photo')")
    p.add_argument("--noise", default="frame", choices=["frame", "chain"],
                   help="sdedit objective: fresh noise per frame, or one noise per clip (as the engine streams)")
    p.add_argument("--blend", type=float, default=TEACHER_BLEND,
                   help="consistent objective: weight of the flow-warped previous teacher frame (0..1)")
    p.add_argument("--teacher-cache", default=None, metavar="FILE",
                   help="consistent objective: keep the teacher runs in FILE and reuse them when the backbone, clips, "
                        "prompts, seed and blend are the same (they do not depend on the memory size)")
    p.add_argument("--objective", default="auto", choices=["auto", "standard", "sdedit", "consistent"],
                   help="standard: eps-MSE on the clip's own latents (the paper's); sdedit: the toy's objective (source "
                        "in, style latent as the x0 target); consistent: this project's variant (the engine's own inputs "
                        "in, the backbone's output smoothed along the flow as the x0 target); auto: consistent for the "
                        "toy, else standard")
    p.add_argument("--size", type=int, default=256, help="frame size in px")
    p.add_argument("--frames", type=int, default=32, help="frames per clip")
    p.add_argument("--segment", type=int, default=8, help="frames per segment (truncated backpropagation)")
    p.add_argument("--batch", type=int, default=2, help="clips trained side by side")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: 1e-4 for the consistent "
                                                          "objective, 1e-3 for the others)")
    p.add_argument("--t-min", type=int, default=100, help="lowest training timestep (default: 100)")
    p.add_argument("--t-max", type=int, default=650, help="highest training timestep (default: 650)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data order, noise and memory init (default: 0)")
    p.add_argument("--resume", default=None, help="continue from this checkpoint (weights, Adam moments, step)")
    p.add_argument("--save-every", type=int, default=100, help="write the checkpoint every N steps (default: 100)")
    p.add_argument("--half", action="store_true", help="write float16 weights without optimizer state (to ship)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: the best available)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.set_defaults(fn=cmd_train)
    return p


def cmd_train(args) -> int:
    import torch

    from .backbones import load_backbone

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.segment < 1 or args.batch < 1 or args.steps < 1:
        raise V2VError("--segment, --batch and --steps must be at least 1.")
    clips = (synthetic_clips(args.synthetic, args.frames, args.size, args.seed) if args.synthetic
             else video_clips(args.videos, args.frames, args.size))
    backbone = load_backbone(args.backbone, device=args.device, dtype="float32", seed=args.seed)
    res = train(backbone, clips, args.memory_size, args.steps, args.segment, args.batch, args.lr, args.seed,
                (args.t_min, args.t_max), args.prompt, args.resume, args.out, args.save_every, args.half,
                objective=args.objective, noise=args.noise, blend=args.blend, teacher_cache=args.teacher_cache)
    first, last = np.mean(res["losses"][:20]), np.mean(res["losses"][-20:])
    print(f"wrote {args.out}: {res['steps_trained']} steps, loss {first:.4f} (first 20) -> {last:.4f} (last 20), "
          f"{res['seconds'] / 60:.1f} min" if res["losses"] else f"{args.out} already has {res['steps_trained']} steps")
    if not math.isfinite(last if res["losses"] else 0.0):
        raise V2VError("Training diverged (loss is not finite): lower --lr.")
    return 0
