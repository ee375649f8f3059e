"""Parameters declared once: dataclass fields carry their UI/CLI metadata, and both faces are built
from it (never retyped).

    @dataclass
    class MySettings:
        strength: float = param(0.4, "How far from the input", lo=0.05, hi=1.0, step=0.05)

`add_cli_arguments(parser, MySettings)` adds `--strength`, and `from_cli(MySettings, args)` reads it
back; `describe(MySettings)` lists (name, type, default, help, bounds) for UIs and docs.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import field
from typing import Any

from .errors import V2VError

# Where a run's networks execute: one runtime for every method of a run (v2v_core.openvino_runtime). Here, not
# there, so that the UI can list them without importing torch.
# openvino-bf16: OpenVINO in bfloat16, only where the CPU has bfloat16 units, never chosen by auto (its rounding moves
# warp errors by a few percent: README, "A CPU runtime"); openvino-bf16-unet: only the UNet in bfloat16, the
# autoencoder and text encoder in f32 (warp errors within 0.4% of PyTorch's there), also asked for by name.
RUNTIMES = ("torch", "openvino", "openvino-bf16-unet", "openvino-bf16", "auto")
RUNTIME_HELP = ("one runtime for every method of a run: torch; openvino (converted graphs on a CPU, f32: StreamDiffusion, "
                "StreamV2V's family, temporal shift, SVDiff, TokenFlow); openvino-bf16-unet (the UNet in bfloat16, on a CPU with "
                "bfloat16 units: faster, frames within 55 dB, warp errors within 0.4%); openvino-bf16 (everything in "
                "bfloat16: fastest, warp errors moved by a few percent); auto: f32 OpenVINO where every method has a "
                "path, else PyTorch")


def param(default: Any, help: str, lo=None, hi=None, step=None, choices=None, flag: str | None = None):
    """A config field with metadata. Bounds are inclusive; `flag` overrides the CLI flag name."""
    meta = dict(help=help, lo=lo, hi=hi, step=step, choices=choices, flag=flag)
    return field(default=default, metadata=meta)


def describe(cls) -> list[dict]:
    out = []
    for f in dataclasses.fields(cls):
        m = dict(f.metadata)
        out.append(dict(name=f.name, type=f.type if isinstance(f.type, str) else f.type.__name__,
                        default=f.default, **{k: m.get(k) for k in ("help", "lo", "hi", "step", "choices")}))
    return out


def validate(obj) -> None:
    """Raise V2VError for a value outside its declared bounds or choices."""
    for f in dataclasses.fields(obj):
        v, m = getattr(obj, f.name), f.metadata
        if m.get("choices") and v not in m["choices"]:
            raise V2VError(f"{f.name}={v!r} is not one of {', '.join(map(str, m['choices']))}.")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            lo, hi = m.get("lo"), m.get("hi")
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                raise V2VError(f"{f.name}={v} is outside its range [{lo}, {hi}].")


def _flag(f) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def add_cli_arguments(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        m = f.metadata
        lo, hi = m.get("lo"), m.get("hi")
        bounds = (f" [{lo}..{hi}]" if lo is not None and hi is not None else f" [>= {lo}]" if lo is not None
                  else f" [<= {hi}]" if hi is not None else "")
        help_ = f"{m.get('help', '')}{bounds} (default: {f.default})".replace("%", "%%")  # argparse formats help
        if isinstance(f.default, bool):
            parser.add_argument(_flag(f), dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_)
        else:
            parser.add_argument(_flag(f), dest=f.name, type=type(f.default), default=None, choices=m.get("choices"),
                                help=help_)


def from_cli(cls, args: argparse.Namespace, **overrides):
    kw = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}
    kw.update(overrides)
    obj = cls(**kw)
    validate(obj)
    return obj
