"""comparisons/: registry and the side-by-side runner."""
import json
from pathlib import Path

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


def test_runner_equals_each_method_alone(tiny_backbone, tmp_path):
    from v2v_core.tokenflow import tokenflow

    clip = ROOT / "examples" / "astronaut-pan.mp4"
    names = ["StreamDiffusion", "StreamV2V", "Temporal shift"]
    arrived = []
    rep = run_comparison(clip, "a cartoon", names + ["TokenFlow"], tmp_path, backbone=tiny_backbone, frames=6, size=64,
                         seed=3, keep_frames=True, on_result=lambda n, e: arrived.append((n, Path(e["video"]).exists())))
    assert arrived == [(n, True) for n in names + ["TokenFlow"]]     # each reported as soon as it is done
    frames = rep["_frames"]
    assert len(frames["input"]) == 6
    for n in names:
        alone = list(Stream(tiny_backbone, "a cartoon", StreamSettings(seed=3), REGISTRY[n].build()).run(frames["input"]))
        assert len(frames[n]) == len(alone) == 6 and all(np.array_equal(a, b) for a, b in zip(alone, frames[n])), n
    alone = tokenflow(tiny_backbone, frames["input"], "a cartoon", StreamSettings(seed=3), REGISTRY["TokenFlow"].config)
    assert len(frames["TokenFlow"]) == len(alone) == 6
    assert all(np.array_equal(a, b) for a, b in zip(alone, frames["TokenFlow"]))
    assert rep["methods"]["TokenFlow"]["online"] is False and rep["methods"]["TokenFlow"]["bank_bytes"] == []
    # each method against the per-frame baseline on the same frames (report and table)
    rel = rep["relative_to_baseline"]["methods"]
    assert rel["StreamDiffusion"] == {"warp_error": 1.0, "warp_error_paper_compatible": 1.0, "style_mae": 1.0, "laplacian": 1.0}
    m, b = rep["methods"]["TokenFlow"], rep["methods"]["StreamDiffusion"]
    assert rel["TokenFlow"]["laplacian"] == round(m["laplacian"] / b["laplacian"], 3)
    assert f"| {rel['TokenFlow']['warp_error']:.2f}x |" in (tmp_path / "report.md").read_text()
    names = names + ["TokenFlow"]
    raw = json.loads((tmp_path / "report.json").read_text())       # a results bundle: versioned, names inside it
    assert raw["format_version"] == 1 and raw["methods"]["StreamV2V"]["video"] == "streamv2v.mp4"
    from comparisons.bundle import load_bundle

    r = load_bundle(tmp_path)
    assert set(r["methods"]) == set(names)
    for n, m in r["methods"].items():
        for k in ("warp_error", "warp_error_paper_compatible", "fps", "seconds", "peak_memory_bytes", "bank_bytes"):
            assert k in m, (n, k)
        assert np.isfinite(m["warp_error"]) and len(m["bank_bytes"]) == (6 if m["online"] else 0)
        assert read_video(m["video"])[0][0].shape == (64, 64, 3)
    assert r["methods"]["StreamDiffusion"]["bank_bytes"] == [0] * 6
    from v2v_core.toy.styles import style_mae   # the style-fidelity column is the cartoon filter's distance
    assert r["methods"]["StreamV2V"]["style_mae"] == pytest.approx(style_mae(frames["input"], frames["StreamV2V"], "a cartoon"))
    assert r["methods"]["StreamV2V"]["bank_bytes"][-1] > 0
    mosaic = read_video(tmp_path / "mosaic.mp4")[0]
    assert len(mosaic) == 6 and mosaic[0].shape == (128, 192, 3)    # input + 4 methods: 3 columns, 2 rows
    assert "| StreamV2V |" in (tmp_path / "report.md").read_text()


def test_a_cancelled_run_stops_within_one_frame(tiny_backbone, tmp_path):
    """Stop: the event is set while method 2 reports its 3rd frame; no further frame is generated, the
    run raises Cancelled naming the method and its 3 done frames, and method 1's result had arrived."""
    import threading

    from comparisons.runner import iter_comparison
    from v2v_core.errors import Cancelled

    cancel, calls = threading.Event(), []

    def progress(method, done, total, stage):
        calls.append((method, done, total, stage, cancel.is_set()))
        if method == "StreamV2V" and stage == "generating" and done == 3:
            cancel.set()

    arrived = []
    with pytest.raises(Cancelled) as stopped:
        for kind, name, _ in iter_comparison(ROOT / "examples" / "astronaut-pan.mp4", "a cartoon",
                                             ["StreamDiffusion", "StreamV2V", "TokenFlow"], tmp_path,
                                             backbone=tiny_backbone, frames=8, size=64, progress=progress,
                                             cancel=cancel):
            arrived.append((kind, name))
    assert (stopped.value.method, stopped.value.frames) == ("StreamV2V", 3)
    assert arrived == [("result", "StreamDiffusion")]
    assert [c for c in calls if c[-1]] == []                      # nothing reported after the stop
    gen = [c[1] for c in calls if c[0] == "StreamDiffusion" and c[3] == "generating"]
    assert gen == list(range(1, 9))                               # progress is counted in frames, per method
    assert ("TokenFlow", 0, 8, "waiting", False) in calls          # every method is on the board from the start


def test_an_offline_method_reports_its_stages_in_words(tiny_backbone, tmp_path):
    """TokenFlow's board: the clip's encoding, each denoising step's parts, the decoding, counted in frames."""
    from comparisons.runner import run_comparison

    stages = []
    run_comparison(ROOT / "examples" / "astronaut-pan.mp4", "a cartoon", ["TokenFlow"], tmp_path, backbone=tiny_backbone,
                   frames=4, size=64, progress=lambda method, done, total, stage: stages.append(stage))
    seen = list(dict.fromkeys(stages))
    assert seen[:2] == ["waiting", "encoding"] and "decoding" in seen and seen[-1].startswith("done in"), seen
    assert any(s.startswith("denoising step 1/2: ") for s in seen) and not any("eing" in s for s in seen), seen


def test_job_reports_a_board_per_method_and_stops(tiny_backbone, tmp_path):
    from comparisons import service

    def work(progress, cancel):
        return service.compare_iter(ROOT / "examples" / "astronaut-pan.mp4", "a cartoon",
                                    ["StreamDiffusion", "StreamV2V"], size=64, frames=24, progress=progress,
                                    cancel=cancel, backbone=tiny_backbone)

    job = service.start_job("session-a", work)
    kinds, boards = [], []
    for kind, name, value in job.events(every=0.05):
        kinds.append(kind)
        if kind == "result":
            assert service.stop_job("session-a") and not service.stop_job("session-a")
        if kind == "progress":
            boards.append(value)
    assert any(set(b.get("StreamDiffusion", ())) == {"done", "total", "stage"} for b in boards)
    assert kinds.count("result") == 1 and kinds[-1] == "stopped" and "end" not in kinds
    assert (name, job.finished) == ("StreamV2V", ["StreamDiffusion"])
    msg = service.stopped_message(name, value, job.finished, 2)
    assert msg.startswith(f"Stopped after {value} frames of StreamV2V") and value < 24
    # the board agrees with the message: the stopped method's row says so, at the frame it reached
    assert job.board["StreamV2V"] == {"done": value, "total": 24, "stage": f"stopped at frame {value}"}
    assert job.board["StreamDiffusion"]["stage"].startswith("done in")
    # the user's mistakes come out as an "error" event, never as a crash
    bad = service.start_job("session-b", lambda progress, cancel: service.compare_iter(None, "x", ["StreamV2V"]))
    assert [e[0] for e in bad.events(every=0.05) if e[0] != "progress"] == ["error"]
    service.forget_job("session-b", bad)
    assert service.JOBS == {}


def test_ablation_axis_shows_the_differences():
    from comparisons.ablation import ablation_figure, value_range

    lo, hi = value_range([1.68, 1.75])
    assert 1.5 < lo < 1.68 and 1.75 < hi < 1.95          # not from 0: 1.68 and 1.75 look different
    m = {"EA on": {"warp_error": 1.68, "flow": "dis"}, "EA off": {"warp_error": 1.75, "flow": "dis"}}
    fig = ablation_figure(m, "t")
    assert list(fig.layout.yaxis.range) == pytest.approx([lo, hi])
    assert list(fig.data[0].x) == ["EA on", "EA off"]


def _dataset(tmp_path):
    ds = tmp_path / "data.jsonl"
    ds.write_text("\n".join(json.dumps(d) for d in [
        {"video": str(ROOT / "examples" / "astronaut-pan.mp4"), "prompt": "a cartoon", "frames": 4},
        {"video_path": str(ROOT / "examples" / "coffee-zoom.mp4"), "text": "pixel art", "frames": 4},
    ]) + "\n")
    return ds


def test_evaluation_resumes_without_recomputing(tmp_path, tiny_pipe_dir, monkeypatch):
    import comparisons.evaluate as ev

    calls = []
    real = ev.run_comparison
    monkeypatch.setattr(ev, "run_comparison", lambda *a, **k: calls.append(a[2][0].name) or real(*a, **k))
    ds = _dataset(tmp_path)
    out = tmp_path / "out"
    kw = dict(backbone=str(tiny_pipe_dir), size=64, log=lambda *_: None)
    first = ev.evaluate(ds, "StreamDiffusion,StreamV2V", out, **kw)
    assert len(calls) == 4
    second = ev.evaluate(ds, "StreamDiffusion,StreamV2V", out, **kw)
    assert len(calls) == 4                      # nothing recomputed
    assert first["table"] == second["table"]
    assert "| StreamV2V |" in (out / "table.md").read_text()
    (out / "jobs" / "0002-coffee-zoom" / "streamv2v" / "result.json").unlink()
    ev.evaluate(ds, "StreamDiffusion,StreamV2V", out, **kw)
    assert calls[4:] == ["StreamV2V"]           # only the unfinished job runs again


@pytest.mark.slow   # over 20 s on 2 cores (pytest.ini): `make test-slow` runs it
def test_two_rank_torchrun_matches_one_rank(tmp_path, tiny_pipe_dir):
    import subprocess
    import sys

    ds = _dataset(tmp_path)
    base = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    args = ["-m", "comparisons", "evaluate", str(ds), "--methods", "StreamDiffusion,StreamV2V",
            "--backbone", str(tiny_pipe_dir), "--size", "64"]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    for n, out in ((1, tmp_path / "one"), (2, tmp_path / "two")):
        r = subprocess.run(base + [str(n)] + args + ["--out-dir", str(out)], cwd=ROOT, capture_output=True, text=True,
                           env=env, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
    ranks = {json.loads(p.read_text())["rank"] for p in (tmp_path / "two").rglob("result.json")}
    assert ranks == {0, 1}                      # both ranks did work
    import csv

    def table(d):   # every column but fps (a timing, different on every run)
        rows = list(csv.DictReader(open(d / "table.csv")))
        return [{k: v for k, v in r.items() if k != "fps"} for r in rows]

    assert table(tmp_path / "one") == table(tmp_path / "two") and len(table(tmp_path / "one")) == 6


def test_ablation_reports_each_setting_as_it_finishes(tiny_backbone):
    """The streamv2v grid through the UI's service: each setting arrives with its video, in the board's
    order; settings whose bank nothing reads hold none; the report has the chart, table and mosaic."""
    from comparisons import service

    events = list(service.ablation_iter(ROOT / "examples" / "astronaut-pan.mp4", "a cartoon", "streamv2v", size=64,
                                        frames=3, backbone=tiny_backbone))
    results = [(n, v) for k, n, v in events if k == "result"]
    assert [n for n, _ in results] == service.ablation_settings("streamv2v")
    assert all(Path(v["video"]).exists() for _, v in results)
    banks = {n: v["bank_bytes"][-1] for n, v in results}
    assert banks["EA off, FF off, dyme"] == banks["EA off, FF off, queue"] == banks["bank none (= per-frame baseline)"] == 0
    assert banks["EA on, FF off, dyme"] > 0 and banks["EA off, FF on, queue"] > 0
    kind, _, rep = events[-1]
    assert kind == "report" and Path(rep["png"]).exists() and Path(rep["mosaic"]).exists()
    assert "at 64x64 px over 3 frames" in rep["ablation_title"] and "| EA on, FF on, dyme |" in rep["ablation_table"]


def test_relative_to_baseline_by_hand():
    from comparisons.runner import relative_to_baseline

    methods = {"StreamDiffusion": {"warp_error": 4.0, "warp_error_paper_compatible": 8.0, "style_mae": 2.0, "laplacian": 10.0},
               "X": {"warp_error": 2.0, "warp_error_paper_compatible": 6.0, "style_mae": None, "laplacian": 5.0}}
    assert relative_to_baseline(methods)["methods"]["X"] == {"warp_error": 0.5, "warp_error_paper_compatible": 0.75,
                                                             "style_mae": None, "laplacian": 0.5}
    assert relative_to_baseline({"X": methods["X"]}) is None          # no baseline in the run: no ratios


def test_a_preset_holds_its_config_class_and_asks_the_core_nothing_on_a_switch(monkeypatch):
    """fields() and with_overrides() (every UI switch, every Live settings change) read the preset's own config class:
    the method's name does not travel back to the core for them."""
    import comparisons.registry as registry
    from v2v_core.streamv2v import StreamV2VConfig

    def refuse(name):
        raise AssertionError(f"config_class({name!r}) asked again")

    monkeypatch.setattr(registry, "config_class", refuse)
    ff_only = REGISTRY["StreamV2V (FF only)"]
    assert ff_only.config_cls is StreamV2VConfig and REGISTRY["StreamDiffusion"].config_cls is None
    assert {f["name"] for f in ff_only.fields()} >= {"extended_attention", "feature_fusion"}
    assert ff_only.with_overrides(ff_strength=0.5) == StreamV2VConfig(extended_attention=False, ff_strength=0.5)
    assert REGISTRY["StreamDiffusion"].fields() == [] and REGISTRY["StreamDiffusion"].with_overrides() is None


def test_method_effect_tables_every_method_against_the_baseline_per_clip_and_style(tiny_backbone, tmp_path):
    """comparisons.method_effect (issue #30's method_effect): per clip and style, each method's figures are those of
    a side-by-side run of that prompt, with their ratios to the per-frame baseline; the table lists every row; styles
    resolve from "invented", names or prompts; a run without the baseline is refused."""
    from comparisons.method_effect import markdown, method_effect, pick_styles

    assert [s.name for s in pick_styles("invented")] == ["pointillism", "snowy scene"]
    assert [s.name for s in pick_styles("sepia, a pencil sketch")] == ["sepia", "pencil sketch"]
    assert [s.name for s in pick_styles("psychedelic,snowy scene")] == ["psychedelic", "snowy scene"]   # stage 10's
    with pytest.raises(V2VError, match="Unknown style"):
        pick_styles("watercolour")
    clip = ROOT / "examples" / "astronaut-pan.mp4"
    styles = pick_styles("pointillism,sepia")
    res = method_effect([clip], styles, tmp_path, methods="StreamDiffusion,StreamV2V", frames=4, size=64,
                        backbone=tiny_backbone, seed=3)
    rows = {(r["style"], r["method"]): r for r in res["rows"]}
    assert set(rows) == {(s, m) for s in ("pointillism", "sepia") for m in ("StreamDiffusion", "StreamV2V")}
    alone = run_comparison(clip, "a sepia photo", "StreamDiffusion,StreamV2V", tmp_path / "alone", backbone=tiny_backbone,
                           frames=4, size=64, seed=3)
    for m in ("StreamDiffusion", "StreamV2V"):
        r, a = rows[("sepia", m)], alone["methods"][m]
        assert r["warp_error"] == a["warp_error"] and r["style_mae"] == a["style_mae"] and r["frames"] == 4
        assert r["relative"]["warp_error"] == round(a["warp_error"] / alone["methods"]["StreamDiffusion"]["warp_error"], 3)
    v2v, base = rows[("sepia", "StreamV2V")], rows[("sepia", "StreamDiffusion")]
    assert v2v["relative"]["style_mae"] == round(v2v["style_mae"] / base["style_mae"], 3)     # ratios of one run
    assert rows[("pointillism", "StreamV2V")]["style_mae"] is None                            # no target: n/a
    md = markdown(res)
    assert md.count("| astronaut-pan (4 frames) |") == 4 and (tmp_path / "method_effect.md").read_text() == md
    with pytest.raises(V2VError, match="per-frame baseline"):
        method_effect([clip], styles[:1], tmp_path / "no-base", methods="StreamV2V", frames=4, size=64,
                      backbone=tiny_backbone)
