"""The streaming img2img engine (StreamDiffusion's math on LCM steps), METHODS.md section 0.

    backbone = load_backbone("toy")
    stream = Stream(backbone, "a pencil sketch", StreamSettings(strength=0.4, steps=2, seed=0))
    for frame in frames:            # uint8 (H, W, 3)
        for out in stream.push(frame):
            ...                     # output frame i is the translation of input frame i, in order
    for out in stream.flush():      # frames still in flight (stream batch only)
        ...

Per step i (timestep t_i, abar = alphas_cumprod[t_i], one noise tensor eps_i PER STEP, drawn once per
stream as a (k, 4, h, w) tensor like the reference's `init_noise`, and reused for every frame):
    x  = sqrt(abar) * z + sqrt(1 - abar) * eps_i         z = encoded frame at step 0
    eps = unet(x, t_i, text)                             unet([x ; z_src], ...) for an image-conditioned UNet
    x0 = (x - sqrt(1 - abar) * eps) / sqrt(abar)         (Backbone.predicted_x0: or x0 = out, a*x - b*out, z_src + out
                                                          for the scheduler's other prediction types)
    z  = c_out(t_i) * x0 + c_skip(t_i) * x               LCM boundary scalings; z feeds step i+1
Fixed per-step noise (seeded) is what keeps the per-frame baseline stable on static content, and what
the temporal methods improve on. This equals diffusers' StableDiffusionImg2ImgPipeline + LCMScheduler
(guidance 1) fed the same per-step noises (tested).

Image-conditioned backbones (InstructPix2Pix's layout: the UNet's in_channels is twice the latent
channels) get the stream's encoded source frame concatenated after the noisy latent at every step, on
every path (Backbone.unet_input).

Stream batch (optional): the k steps of k consecutive frames run as ONE UNet batch (slot i holds
frame n-i at step i). Only slots that hold a frame run: the first frames are real translations
(no filler frames while the batch fills), and flush() drains the frames still in flight. Same math
per slot as the sequential path.

A Stream owns everything that changes while a video plays: noise, counters, timings, in-flight
slots and the temporal method's state. The Backbone is shared and never written to, so any number of
streams can run interleaved on one model and each gives what it gives alone.
"""
from __future__ import annotations

import copy
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Protocol

import numpy as np
import torch

from .backbones import Backbone, seeded_noise, to_tensor, to_uint8
from .config import param, validate
from .errors import V2VError

BASE_STEPS = 50  # LCM's base schedule: timesteps 999, 979, ..., 19


@dataclass
class StreamSettings:
    """The engine's knobs (StreamV2V CLI defaults are strength 0.4 and 4 steps; the studio's default is
    2 steps, which halves the cost and is what the camera demo of the paper uses)."""
    strength: float = param(0.4, "How far the output may move from the input (0 = copy, 1 = ignore it)",
                            lo=0.05, hi=0.95, step=0.05)
    steps: int = param(2, "LCM denoising steps per frame (cost grows linearly)", lo=1, hi=8, step=1)
    seed: int = param(0, "Seed of the stream's noise and of any random choice its method makes", lo=0)
    stream_batch: bool = param(False, "Run the steps of consecutive frames as one UNet batch (faster on a GPU; "
                                      "same frames out, in the same order)")


def t_index_list(strength: float, steps: int, base: int = BASE_STEPS) -> list[int]:
    """The reference CLI's rule: indices into the base schedule for `steps` steps at `strength`."""
    init, stride = int(base * (1 - strength)), int(base * strength) // steps
    if stride < 1:
        raise V2VError(f"strength {strength} is too low for {steps} steps: raise the strength or use fewer steps.")
    return [init + i * stride for i in range(steps)]


class TemporalMethod(Protocol):
    """What a temporal method plugs into a stream (see streamv2v.py etc.). Its processors or hooks
    are installed on the shared UNet; its per-stream state comes from new_state() and reaches the
    processors through cross_attention_kwargs built by unet_kwargs()."""
    name: str

    def new_state(self, stream: "Stream"): ...

    def unet_kwargs(self, state, frames: list[int], steps: list[int]) -> dict | None: ...


@dataclass
class _Slot:
    frame: int                  # input frame index
    z: torch.Tensor             # (4, h, w) current latent
    src: torch.Tensor           # (4, h, w) the encoded input frame (image-conditioned backbones read it)
    step: int = 0               # next step to run
    timing: dict = field(default_factory=dict)


class Stream:
    """One user's video through one method on a shared backbone."""

    def __init__(self, backbone: Backbone, prompt: str, settings: StreamSettings | None = None,
                 method: TemporalMethod | None = None, keep_timings: int | None = None):
        """keep_timings: keep only the last N frames' timings (a live stream's memory stays flat); None keeps
        every frame's (whole-clip runs report them)."""
        self.backbone = backbone
        self.keep_timings = keep_timings
        self.prompt = prompt
        self.settings = settings or StreamSettings()
        validate(self.settings)
        self.method = method
        if method is not None and hasattr(method, "install"):
            method.install(backbone)      # idempotent; routed processors hold no stream state
        sched = copy.deepcopy(backbone.scheduler)  # set_timesteps mutates: never touch the shared one
        sched.set_timesteps(BASE_STEPS)
        self.t_list = [int(sched.timesteps[i]) for i in t_index_list(self.settings.strength, self.settings.steps)]
        dev, dt = backbone.device, backbone.dtype
        abar = sched.alphas_cumprod.double()[self.t_list]
        scal = [sched.get_scalings_for_boundary_condition_discrete(torch.tensor(t)) for t in self.t_list]
        col = lambda v: torch.tensor(v, dtype=torch.float64).to(device=dev, dtype=dt)[:, None, None, None]  # noqa: E731
        self._sqrt_a, self._sqrt_1ma = col(abar.sqrt().tolist()), col((1 - abar).sqrt().tolist())
        self._c_skip, self._c_out = col([float(c[0]) for c in scal]), col([float(c[1]) for c in scal])
        self._timesteps = torch.tensor(self.t_list, device=dev)
        self.text = backbone.encode_prompt(prompt)
        self.reset()

    def reset(self):
        """Back to frame 0: same seed, so the same frames come out again."""
        self.noise: torch.Tensor | None = None
        self.frames_in = 0
        self.frames_out = 0
        self.timings: list[dict] | deque = [] if self.keep_timings is None else deque(maxlen=self.keep_timings)
        self._setup_pending = self._setup_mark = 0.0
        self._slots: list[_Slot] = []
        self.method_state = self.method.new_state(self) if self.method is not None else None

    # -- the math -------------------------------------------------------------------------------
    def draw_noise(self, latent_shape) -> torch.Tensor:
        """The stream's per-step noises (k, 4, h, w): seeded, drawn once, the same for every frame."""
        return seeded_noise((self.settings.steps, *latent_shape), self.settings.seed, self.backbone.device,
                            self.backbone.dtype)

    def _denoise(self, z: torch.Tensor, steps: list[int], frames: list[int], src: torch.Tensor | None = None) -> torch.Tensor:
        """One LCM step for a batch of slots, slot j at step steps[j]. z, src: (B, 4, h, w); src (the encoded
        input frames) is read by image-conditioned backbones only."""
        s = torch.tensor(steps, device=z.device)
        a, b = self._sqrt_a[s], self._sqrt_1ma[s]
        x = a * z + b * self.noise[s]
        kwargs = self.method.unet_kwargs(self.method_state, frames, steps) if self.method is not None else None
        out = self.backbone.unet(self.backbone.unet_input(x, src), self._timesteps[s],
                                 encoder_hidden_states=self.text.expand(len(steps), -1, -1),
                                 cross_attention_kwargs=kwargs).sample
        x0 = self.backbone.predicted_x0(x, out, a, b, src)
        return self._c_out[s] * x0 + self._c_skip[s] * x

    def _all_steps(self, z: torch.Tensor, frame: int) -> torch.Tensor:
        zs = z
        for i in range(self.settings.steps):
            zs = self._denoise(zs, [i], [frame], z)
        return zs

    @torch.inference_mode()
    def denoise_latents(self, z: torch.Tensor, frame: int | None = None) -> torch.Tensor:
        """Every LCM step of the sequential path on an encoded frame z (1, 4, h, w) -> the final latent.
        Counts as frame `frame` for the temporal method (default: the next input frame); draws the
        stream's noise on first use. For tests and tools that work in latent space."""
        if self.noise is None:
            self.noise = self.draw_noise(z.shape[1:])
        return self._all_steps(z, self.frames_in if frame is None else frame)

    # -- frames in, frames out ------------------------------------------------------------------
    def _sync(self):
        if self.backbone.device.type == "cuda":
            torch.cuda.synchronize()

    @torch.inference_mode()
    def push(self, frame: np.ndarray) -> list[np.ndarray]:
        """Feed one uint8 (H, W, 3) frame; returns the frames finished by it (in input order)."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise V2VError(f"Frames must be uint8 RGB arrays of shape (H, W, 3); got {frame.dtype} {frame.shape}.")
        f = self.backbone.vae_factor * 8
        if frame.shape[0] % f or frame.shape[1] % f:
            raise V2VError(f"Frame size {frame.shape[1]}x{frame.shape[0]} is not a multiple of {f}: fit frames with "
                           "v2v_core.video.fit_frame (or --size).")
        t0, self._setup_mark = time.perf_counter(), self.backbone.runtime_setup_seconds()
        try:
            return self._push(frame, t0)
        finally:     # a runtime's one-off setup in this call after its last finished frame: the next ones carry it
            self._setup_pending += self.backbone.runtime_setup_seconds() - self._setup_mark

    def _push(self, frame: np.ndarray, t0: float) -> list[np.ndarray]:
        z = self.backbone.encode_images(to_tensor(frame, self.backbone.device, self.backbone.dtype))
        if self.noise is None:
            self.noise = self.draw_noise(z.shape[1:])
        elif self.noise.shape[1:] != z.shape[1:]:
            raise V2VError("Frame size changed mid-stream; start a new stream (reset()) for a new size.")
        self._sync()
        slot = _Slot(self.frames_in, z[0], z[0], timing={"encode": time.perf_counter() - t0, "unet": 0.0})
        self.frames_in += 1
        if not self.settings.stream_batch:
            t1 = time.perf_counter()
            zs = self._all_steps(z, slot.frame)
            self._sync()
            slot.timing["unet"] = time.perf_counter() - t1
            slot.z, slot.step = zs[0], self.settings.steps
            return self._finish([slot])
        self._slots.append(slot)
        return self._advance()

    def _advance(self) -> list[np.ndarray]:
        """One batched UNet call over every in-flight slot; emit the slots that finished."""
        t1 = time.perf_counter()
        z = torch.stack([s.z for s in self._slots])
        z = self._denoise(z, [s.step for s in self._slots], [s.frame for s in self._slots],
                          torch.stack([s.src for s in self._slots]))
        self._sync()
        dt = (time.perf_counter() - t1) / len(self._slots)
        for s, zi in zip(self._slots, z):
            s.z, s.step = zi, s.step + 1
            s.timing["unet"] += dt
        done = [s for s in self._slots if s.step == self.settings.steps]
        self._slots = [s for s in self._slots if s.step < self.settings.steps]
        return self._finish(done)

    def _finish(self, slots: list[_Slot]) -> list[np.ndarray]:
        if not slots:
            return []
        t0 = time.perf_counter()
        imgs = to_uint8(self.backbone.decode_latents(torch.stack([s.z for s in slots])))
        self._sync()
        dt = (time.perf_counter() - t0) / len(slots)
        temporal = self.method_state.pop_seconds() if hasattr(self.method_state, "pop_seconds") else 0.0
        acct = self.method_state.accounting() if hasattr(self.method_state, "accounting") else {}
        # the runtime's one-off conversion and compilation (in this call, and pending from calls that finished no frame)
        # on the frames finished now: their totals include it, fps_after_warmup leaves it out
        now = self.backbone.runtime_setup_seconds()
        setup, self._setup_pending, self._setup_mark = self._setup_pending + now - self._setup_mark, 0.0, now
        for s in slots:
            s.timing.update(decode=dt, temporal=temporal / len(slots), setup=setup / len(slots), **acct)
            s.timing["total"] = s.timing["encode"] + s.timing["unet"] + s.timing["decode"]
            self.timings.append(s.timing)
        self.frames_out += len(slots)
        return imgs

    @torch.inference_mode()
    def flush(self) -> list[np.ndarray]:
        """Finish every frame still in flight (stream batch); a no-op otherwise."""
        out = []
        self._setup_mark = self.backbone.runtime_setup_seconds()   # (another stream's setup since the last push: not ours)
        while self._slots:
            out += self._advance()
        return out

    def run(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Translate a sequence of frames, yielding output frame i for input frame i."""
        for fr in frames:
            yield from self.push(fr)
        yield from self.flush()


def fps_after_warmup(timings: list[dict], warmup: int = 2) -> float:
    """Frames per second over the frames after the first `warmup` (first calls pay one-off costs), without the
    runtime's conversion and compilation (a queue bank compiles a graph per length, past the warm-up)."""
    timings = list(timings)
    steady = timings[warmup:] if len(timings) > warmup else timings
    total = sum(t["total"] - t.get("setup", 0.0) for t in steady)      # a runtime's one-off setup is not its speed
    return len(steady) / total if total > 0 else float("nan")


def mean_timings(timings: list[dict]) -> dict:
    keys = ("encode", "unet", "temporal", "decode", "total")
    return {k: float(np.mean([t.get(k, 0.0) for t in timings])) if timings else 0.0 for k in keys}
