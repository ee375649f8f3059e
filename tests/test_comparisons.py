"""comparisons/: registry and the lockstep runner."""
import json

import numpy as np
import pytest

from comparisons.registry import PRESETS, REGISTRY, resolve
from comparisons.runner import run_comparison
from conftest import ROOT
from v2v_core.engine import Stream, StreamSettings
from v2v_core.errors import V2VError
from v2v_core.video import read_video


def test_registry_lists_presets_with_metadata():
    assert {"StreamDiffusion", "StreamV2V", "StreamV2V (EA only)", "StreamV2V (FF only)", "StreamV2V (queue bank)",
            "Window attention", "Temporal shift"} <= set(REGISTRY)
    f = {d["name"]: d for d in REGISTRY["StreamV2V (FF only)"].fields()}
    assert f["extended_attention"]["value"] is False and f["feature_fusion"]["value"] is True
    assert f["ff_strength"]["lo"] == 0.0 and f["ff_strength"]["hi"] == 1.0 and f["ff_strength"]["help"]
    assert REGISTRY["StreamDiffusion"].fields() == []
    assert [p.name for p in resolve("all-online")] == [p.name for p in PRESETS if p.online]
    with pytest.raises(V2VError, match="Unknown method"):
        resolve("StreamV2V,NoSuchMethod")


def test_runner_lockstep_equals_each_method_alone(tiny_backbone, tmp_path):
    clip = ROOT / "examples" / "astronaut-pan.mp4"
    names = ["StreamDiffusion", "StreamV2V", "Temporal shift"]
    rep = run_comparison(clip, "a cartoon", names, tmp_path, backbone=tiny_backbone, frames=6, size=64, seed=3,
                         keep_frames=True)
    frames = rep["_frames"]
    assert len(frames["input"]) == 6
    for n in names:
        alone = list(Stream(tiny_backbone, "a cartoon", StreamSettings(seed=3), REGISTRY[n].build()).run(frames["input"]))
        assert all(np.array_equal(a, b) for a, b in zip(alone, frames[n])), n
    r = json.loads((tmp_path / "report.json").read_text())
    assert set(r["methods"]) == set(names)
    for n, m in r["methods"].items():
        for k in ("warp_error", "warp_error_paper_compatible", "fps", "seconds", "peak_memory_bytes", "bank_bytes"):
            assert k in m, (n, k)
        assert np.isfinite(m["warp_error"]) and len(m["bank_bytes"]) == 6
        assert read_video(m["video"])[0][0].shape == (64, 64, 3)
    assert r["methods"]["StreamDiffusion"]["bank_bytes"] == [0] * 6
    assert r["methods"]["StreamV2V"]["bank_bytes"][-1] > 0
    mosaic = read_video(tmp_path / "mosaic.mp4")[0]
    assert len(mosaic) == 6 and mosaic[0].shape == (128, 128, 3)    # input + 3 methods in a 2x2 grid
    assert "| StreamV2V |" in (tmp_path / "report.md").read_text()
