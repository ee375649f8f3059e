"""The core's online temporal methods by name: one place that turns a name + config into a method
object for a Stream (None is the per-frame StreamDiffusion baseline). comparisons/ builds its named
presets on top of this."""
from __future__ import annotations

from .errors import V2VError

ONLINE_METHODS = ("streamdiffusion", "streamv2v", "window", "temporal-shift", "svdiff")
OFFLINE_METHODS = ("tokenflow",)      # whole clip in, whole clip out (v2v_core.tokenflow)
METHODS = ONLINE_METHODS + OFFLINE_METHODS


def config_class(name: str):
    """The config dataclass whose fields are this method's knobs (None for the baseline)."""
    if name == "streamv2v":
        from .streamv2v import StreamV2VConfig
        return StreamV2VConfig
    if name == "temporal-shift":
        from .temporal_shift import TemporalShiftConfig
        return TemporalShiftConfig
    if name == "svdiff":
        from .svdiff import SVDiffConfig
        return SVDiffConfig
    if name == "tokenflow":
        from .tokenflow import TokenFlowConfig
        return TokenFlowConfig
    if name in ("streamdiffusion", "window"):
        return None
    raise V2VError(f"Unknown method '{name}'; choose one of {', '.join(METHODS)}.")


def make_method(name: str, config=None, recorder_factory=None):
    """A method object for Stream(..., method=...). `config` overrides the defaults (a dataclass)."""
    from .streamv2v import WINDOW_ATTENTION, StreamV2V, StreamV2VConfig

    config_class(name)  # validates the name
    if name == "streamdiffusion":
        if recorder_factory is None:
            return None
        # plain attention (no bank, no EA, no FF: bit-identical to the baseline) carrying the recorder
        return StreamV2V(StreamV2VConfig(extended_attention=False, feature_fusion=False, bank="none"),
                         name="streamdiffusion", recorder_factory=recorder_factory)
    if name == "streamv2v":
        return StreamV2V(config, recorder_factory=recorder_factory)
    if name == "window":
        return StreamV2V(config or WINDOW_ATTENTION, name="window", recorder_factory=recorder_factory)
    if name == "svdiff":
        from .svdiff import SVDiff
        return SVDiff(config)
    if name == "tokenflow":
        from .tokenflow import TokenFlow
        return TokenFlow(config)
    from .temporal_shift import TemporalShift
    return TemporalShift(config)
