"""Named method presets: the one list the CLI, the UI and the evaluator show.

A preset names a core method (v2v_core.methods) and a config. Methods the core does not implement
yet are absent, never faked.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from v2v_core.config import describe
from v2v_core.methods import config_class, make_method
from v2v_core.streamv2v import WINDOW_ATTENTION, StreamV2VConfig
from v2v_core.svdiff import SVDiffConfig
from v2v_core.tokenflow import TokenFlowConfig
from v2v_core.temporal_shift import TemporalShiftConfig

STREAMV2V_PAPER = "Liang et al., Looking Backward: Streaming Video-to-Video Translation with Feature Banks, ICLR 2025"
TOKENFLOW_PAPER = "Geyer et al., TokenFlow: Consistent Diffusion Features for Consistent Video Editing, ICLR 2024"
STREAMDIFFUSION_PAPER = "Kodaira et al., StreamDiffusion: A Pipeline-level Solution for Real-time Interactive Generation, 2023"
# StreamV2V's paper states FF strength 0.75 and threshold 0.9; its released code runs 0.8 / 0.98 (our default)
PAPER_FF = {"ff_strength": 0.75, "ff_threshold": 0.9}
# The ablation grids (comparisons.ablation builds them); listed here so the UI and CLI name them cheaply
ABLATION_GRIDS = ("streamv2v", "streamv2v-paper", "svdiff")
SVDIFF_PAPER = "Chen et al., Streaming Video Diffusion: Online Video Editing with Diffusion Models, 2024"


@dataclass(frozen=True)
class MethodPreset:
    name: str
    description: str
    paper: str
    core_method: str                   # a name of v2v_core.methods.METHODS
    config: object = None              # the core method's config dataclass instance (None: defaults / none)
    online: bool = True
    tags: tuple[str, ...] = field(default_factory=tuple)
    config_cls: type | None = field(init=False, default=None, compare=False, repr=False)

    def build(self, config=None, recorder_factory=None):
        """The method object for a Stream; `config` replaces the preset's (e.g. UI overrides)."""
        return make_method(self.core_method, config if config is not None else self.config, recorder_factory)

    def __post_init__(self):
        # the config's class, resolved once: fields() and with_overrides() (called on every UI switch and every Live
        # settings change) read it here instead of sending the method's name back to the core each time
        object.__setattr__(self, "config_cls", type(self.config) if self.config is not None
                           else config_class(self.core_method))

    def with_overrides(self, **overrides):
        """The preset's config with some fields changed (validated by the core)."""
        if self.config_cls is None:
            if overrides:
                raise ValueError(f"{self.name} has no settings to override")
            return None
        base = self.config if self.config is not None else self.config_cls()
        return dataclasses.replace(base, **overrides)

    def fields(self) -> list[dict]:
        """Config fields with metadata (range, step, help) and this preset's values, for UIs."""
        if self.config_cls is None:
            return []
        cfg = self.config if self.config is not None else self.config_cls()
        return [dict(f, value=getattr(cfg, f["name"])) for f in describe(self.config_cls)]


PRESETS: tuple[MethodPreset, ...] = (
    MethodPreset("StreamDiffusion", "per-frame img2img with LCM steps and one fixed noise: the baseline that flickers",
                 STREAMDIFFUSION_PAPER, "streamdiffusion", tags=("baseline",)),
    MethodPreset("StreamV2V", "feature bank of past frames: extended attention + feature fusion + dynamic merging "
                 "(code defaults: FF strength 0.8, threshold 0.98, as the released code runs)",
                 STREAMV2V_PAPER, "streamv2v", StreamV2VConfig()),
    MethodPreset("StreamV2V (paper defaults)", "StreamV2V with the paper's stated FF strength 0.75 and threshold 0.9 "
                 "(the released code uses 0.8 / 0.98)", STREAMV2V_PAPER, "streamv2v", StreamV2VConfig(**PAPER_FF),
                 tags=("variant",)),
    MethodPreset("StreamV2V (EA only)", "StreamV2V ablation: extended attention without feature fusion",
                 STREAMV2V_PAPER, "streamv2v", StreamV2VConfig(feature_fusion=False), tags=("ablation",)),
    MethodPreset("StreamV2V (FF only)", "StreamV2V ablation: feature fusion without extended attention",
                 STREAMV2V_PAPER, "streamv2v", StreamV2VConfig(extended_attention=False), tags=("ablation",)),
    MethodPreset("StreamV2V (queue bank)", "StreamV2V with a first-in-first-out bank of the last 4 frames instead of DyMe",
                 STREAMV2V_PAPER, "streamv2v", StreamV2VConfig(bank="queue"), tags=("ablation",)),
    MethodPreset("Window attention", "training-free baseline: extended attention over the previous 3 frames only",
                 SVDIFF_PAPER + " (baseline it names)", "window", WINDOW_ATTENTION, tags=("baseline",)),
    MethodPreset("Temporal shift", "training-free baseline: 1/8 of each block's channels taken from the previous frame",
                 SVDIFF_PAPER + " (baseline it names)", "temporal-shift", TemporalShiftConfig(), tags=("baseline",)),
    MethodPreset("SVDiff", "learned spatial-aware temporal memory (8x8 tokens) after every transformer block; the toy's "
                 "shipped memories are trained on this project's flow-consistent teacher, not the paper's video data",
                 SVDIFF_PAPER, "svdiff", SVDiffConfig(memory_size=8)),
    MethodPreset("SVDiff (1x1 memory)", "SVDiff memory-size ablation: one memory token per block",
                 SVDIFF_PAPER, "svdiff", SVDiffConfig(memory_size=1), tags=("ablation",)),
    MethodPreset("SVDiff (16x16 memory)", "SVDiff memory-size ablation: 16x16 memory tokens per block",
                 SVDIFF_PAPER, "svdiff", SVDiffConfig(memory_size=16), tags=("ablation",)),
    MethodPreset("TokenFlow", "offline reference: keyframes edited jointly, their attention tokens propagated along the "
                              "source's feature correspondences (whole clip in, whole clip out), blended as the "
                              "released code does; SDEdit on the engine's LCM steps, without the released DDIM "
                              "sampler, guidance 7.5 and DDIM inversion (a documented choice for speed)",
                 TOKENFLOW_PAPER, "tokenflow", TokenFlowConfig(), online=False, tags=("offline",)),
)
REGISTRY: dict[str, MethodPreset] = {p.name: p for p in PRESETS}


def resolve(names: str | list[str]) -> list[MethodPreset]:
    """Presets from a comma-separated list, or "all" / "all-online"."""
    from v2v_core.errors import V2VError

    if isinstance(names, str):
        if names.strip() in ("all", "all-online"):
            return [p for p in PRESETS if p.online or names.strip() == "all"]
        names = [n.strip() for n in names.split(",") if n.strip()]
    out = []
    for n in names:
        if n not in REGISTRY:
            raise V2VError(f"Unknown method '{n}'. Registered: {', '.join(REGISTRY)} (or all / all-online).")
        out.append(REGISTRY[n])
    if not out:
        raise V2VError("No methods selected.")
    return out
