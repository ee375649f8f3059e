"""Where the studio runs: the backbone picker's list and reasons, ZeroGPU's load-at-import and per-request durations
(with a stand-in `spaces` module that records the order of events), and the README's stated figures."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

STAND_IN = Path(__file__).parent / "stand_in"
TWO = ["StreamDiffusion", "StreamV2V"]
# the README's "ten methods": every registered one but the two variants that repeat another's cost
TEN_LEFT_OUT = ("StreamV2V (paper defaults)", "SVDiff (16x16 memory)")


def ten_methods():
    from comparisons.registry import PRESETS

    return [p.name for p in PRESETS if p.name not in TEN_LEFT_OUT]


def test_the_picker_lists_every_backbone_and_says_why_one_cannot_run(monkeypatch, tmp_path):
    from comparisons import catalog
    from v2v_core import backbones

    folder = tmp_path / "my-sd"
    folder.mkdir()
    monkeypatch.setenv("V2V_BACKBONES", f"sd15-random, {folder}, /no/such/model, org/some-model")
    keys = [e.key for e in catalog.entries()]
    assert keys == ["toy", "sd15", "sd-turbo", "sd15-random", str(folder), "/no/such/model", "org/some-model"]

    monkeypatch.setattr(catalog, "has_gpu", lambda: False)
    monkeypatch.setattr(backbones, "_hub_reachable_once", lambda: False)
    why = {e.key: catalog.unavailable_reason(e) for e in catalog.entries()}
    assert why["toy"] is None and why["sd15-random"] is None
    assert why["sd15"].startswith("needs a GPU (about 43 s a frame at 512 px on a 2-core CPU)")
    assert "'stable-diffusion-v1-5/stable-diffusion-v1-5' is not in this machine's model cache" in why["sd15"]
    assert "'stabilityai/sd-turbo' is not in this machine's model cache" in why["sd-turbo"]
    assert why[str(folder)] == f"{folder} is not a diffusers folder (no model_index.json)"
    assert why["/no/such/model"] == "the folder /no/such/model does not exist on this machine"
    assert "needs a GPU" not in why["org/some-model"] and "not in this machine's model cache" in why["org/some-model"]

    (folder / "model_index.json").write_text("{}")
    monkeypatch.setattr(catalog, "has_gpu", lambda: True)
    monkeypatch.setattr(backbones, "_hub_reachable_once", lambda: True)   # a GPU Space with the hub: all can run
    assert all(catalog.unavailable_reason(e) is None for e in catalog.entries() if e.key != "/no/such/model")
    # on ZeroGPU, only what loaded at start
    assert "not loaded when this Space started" in catalog.unavailable_reason(catalog.entry("sd15"), {"toy"})
    assert catalog.unavailable_reason(catalog.entry("toy"), {"toy"}) is None


def test_the_prompt_help_follows_the_backbone():
    from comparisons import service

    toy, toy_help = service.prompt_help("toy")
    sd, sd_help = service.prompt_help("sd15")
    assert "a thermal image" in toy and "only" not in toy_help and "toy model knows these styles" in toy_help
    assert "a van gogh painting" in sd and sd_help.startswith("Any text")
    assert "is noise" in service.prompt_warning("a pencil sketch", "sd15-random")
    assert service.prompt_warning("a dragon", "sd15") is None        # open vocabulary: nothing to warn about
    assert "only knows its styles" in service.prompt_warning("a dragon", "toy")


def test_a_backbone_that_cannot_run_is_refused_before_anything_loads(monkeypatch):
    from comparisons import catalog, runner, service
    from v2v_core.errors import V2VError

    monkeypatch.setattr(catalog, "has_gpu", lambda: False)
    before = dict(runner._BACKBONES)
    with pytest.raises(V2VError, match="cannot run here: needs a GPU"):
        next(service.compare_iter(str(ROOT / "examples" / "astronaut-pan.mp4"), "a pencil sketch", TWO, 256, 4,
                                  backbone="sd15"))
    assert runner._BACKBONES == before


def test_zerogpu_durations_follow_the_request_as_the_readme_states(monkeypatch):
    from comparisons import zerogpu
    from v2v_core.errors import V2VError

    small = zerogpu.duration(TWO, 12, 512)
    large = zerogpu.duration(ten_methods(), 120, 512)
    readme = (ROOT / "README.md").read_text()
    stated = re.search(r"12 frames, StreamDiffusion and StreamV2V, 512 px: \*\*(\d+) s\*\*", readme)
    stated_large = re.search(r"120 frames, ten methods .*?, 512 px: \*\*(\d+) s\*\*", readme)
    assert stated and stated_large, "README's Deploy section states both durations"
    assert (small, large) == (int(stated.group(1)), int(stated_large.group(1)))
    assert small < 60 < large <= zerogpu.max_seconds()
    # TokenFlow's passes cost more than a per-frame method; size counts as pixels
    assert zerogpu.estimate_seconds(["TokenFlow"], 24, 512) > zerogpu.estimate_seconds(["StreamDiffusion"], 24, 512)
    assert zerogpu.duration(TWO, 12, 256) < small
    # over the platform's cap: refused before the run, saying what to lower
    monkeypatch.setenv("V2V_ZEROGPU_MAX_S", "120")
    with pytest.raises(V2VError, match=r"needs about 269 s of GPU and a ZeroGPU call may hold at most 120 s"):
        zerogpu.check_fits(ten_methods(), 120, 512)
    assert zerogpu.duration(ten_methods(), 120, 512) == 120
    zerogpu.check_fits(TWO, 12, 512)


ZEROGPU_SCRIPT = r"""
import json, sys
import spaces                                  # the stand-in (tests/stand_in)
import v2v_core.backbones as b

real = b.load_backbone
def recording(name, device=None, dtype=None, **kw):
    spaces.EVENTS.append(["load", name, str(device)])
    return real(name, device="cpu", dtype=dtype, **kw)     # no CUDA on this machine: ZeroGPU's torch moves it later
b.load_backbone = recording

import app
spaces.EVENTS.append(["imported"])

class Request:
    session_hash = "zerogpu-test"

clip = "examples/astronaut-pan.mp4"
ten = json.loads(sys.argv[1])
# a large request: what its decorated call asks ZeroGPU for (the generator is closed before any work)
big = app.run_compare(Request(), clip, "a thermal image", ten, 512, 120, 0, 0.4, 2, "toy", "torch")
next(big); big.close()
small = app.run_compare(Request(), clip, "a thermal image", ["StreamDiffusion", "StreamV2V"], 512, 12, 0, 0.4, 2, "toy", "torch")
next(small); small.close()
# a real (short) run through the decorated call: nothing loads inside it
last = None
for last in app.run_compare(Request(), clip, "a thermal image", ["StreamDiffusion"], 128, 3, 0, 0.4, 2, "toy", "torch"):
    pass
status = {r["key"]: r["unavailable"] for r in app.service.backbone_status()}
print(json.dumps({"events": spaces.EVENTS, "board": last[-1], "status": status,
                  "live_note": any(getattr(b, "elem_id", None) == "live-zerogpu" for b in app.demo.blocks.values())}))
"""


def test_on_zerogpu_backbones_load_at_import_before_any_gpu_call():
    import os

    env = {**os.environ, "SPACES_ZERO_GPU": "true", "PYTHONPATH": os.pathsep.join([str(STAND_IN), str(ROOT)]),
           "V2V_BACKBONE": "toy", "V2V_BACKBONES": ""}
    out = subprocess.run([sys.executable, "-c", ZEROGPU_SCRIPT, json.dumps(ten_methods())], capture_output=True,
                         text=True, cwd=ROOT, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    ev = r["events"]
    assert ev[0] == ["load", "toy", "cuda"] and ev[1] == ["imported"], ev       # loaded at import, to 'cuda'
    assert [e for e in ev if e[0] == "load"] == [ev[0]], ev                      # once, never inside a decorated call
    calls = [e for e in ev if e[0] == "gpu-call"]
    assert [c[1] for c in calls] == ["run_compare"] * 3
    from comparisons import zerogpu

    assert calls[0][2] == zerogpu.duration(ten_methods(), 120, 512) and calls[1][2] == zerogpu.duration(TWO, 12, 512)
    assert "Done." in r["board"]
    assert r["status"]["toy"] is None and "not loaded when this Space started" in r["status"]["sd15"]
    assert r["live_note"]                   # the Live tab says that each frame is a GPU call of its own there
