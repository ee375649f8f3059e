"""Results from anywhere: importing outside outputs into a bundle, reading bundles (untrusted zips
included), studies built from them, and the field's evaluation lists."""
from __future__ import annotations

import json
import tempfile
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, shared_video
from comparisons.bundle import FORMAT_VERSION, import_results, load_bundle, safe_extract, zip_bundle
from v2v_core.errors import V2VError

PUBLISHED = ROOT.parent / "shared" / "data" / "videos" / "published"
LUCIA = ("lucia-desert", "lucia-ruin", "lucia-van")


def _metrics_cli(tmp_path, source, edited, *extra) -> dict:
    from v2v_core.__main__ import main as cli

    out = tmp_path / f"m-{Path(edited).stem}-{len(list(tmp_path.iterdir()))}.json"
    assert cli(["metrics", "--source", str(source), "--edited", str(edited), "--no-clip", "--json", str(out), *extra]) == 0
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def kite_bundle(tmp_path_factory):
    src, edit = shared_video("kite-walk.mp4"), shared_video("kite-walk-style.mp4")
    out = tmp_path_factory.mktemp("kite") / "bundle"
    rep = import_results({"SVDiff (published)": edit}, out, source=src, prompt="a kite, styled", size=256, frames=12)
    return rep, out, src, edit


def test_imported_pair_has_the_metrics_cli_figures(kite_bundle, tmp_path):
    rep, out, src, edit = kite_bundle
    ref = _metrics_cli(tmp_path, src, edit, "--size", "256", "--frames", "12")
    m = rep["methods"]["SVDiff (published)"]
    assert m["warp_error"] == pytest.approx(ref["warp_error"], abs=1e-9)
    assert m["warp_error_paper_compatible"] == pytest.approx(ref["warp_error_paper_compatible"], abs=1e-9)
    assert m["flow"] == ref["flow"] and m["frames"] == ref["frames"] == 12
    assert m["warp_error_self_flow"] > 0 and "edited clip itself" in m["warp_error_self_flow_label"]
    # the folder is a bundle: versioned, names inside it, and it reloads with the same figures
    raw = json.loads((out / "report.json").read_text())
    assert raw["format_version"] == FORMAT_VERSION and raw["methods"]["SVDiff (published)"]["video"] == "svdiff-published.mp4"
    again = load_bundle(out)
    assert again["methods"]["SVDiff (published)"]["warp_error"] == m["warp_error"]
    assert Path(again["input"]).is_file() and Path(again["mosaic"]).is_file()


@pytest.fixture(scope="module")
def lucia_bundle(tmp_path_factory):
    for n in LUCIA:
        if not (PUBLISHED / f"{n}.mp4").exists():
            pytest.skip("published lucia edits not present (../shared/data/videos/published)")
    out = tmp_path_factory.mktemp("lucia") / "bundle"
    rep = import_results({n: PUBLISHED / f"{n}.mp4" for n in LUCIA}, out, size=None, frames=10, source_group="lucia")
    return rep, out


def test_results_without_a_source_get_source_free_metrics_and_reasons(lucia_bundle):
    rep, _ = lucia_bundle
    assert rep["input"] is None and rep["settings"]["source_group"] == "lucia"
    for n in LUCIA:
        m = rep["methods"][n]
        assert m["warp_error"] is None and m["warp_error_paper_compatible"] is None
        assert "no source" in m["unavailable"]["warp_error"]
        assert m["warp_error_self_flow"] is not None and np.isfinite(m["warp_error_self_flow"])


def test_a_study_from_the_lucia_bundle_pairs_all_three_and_counts_votes(lucia_bundle, tmp_path):
    from comparisons import study

    _, out = lucia_bundle
    zpath = zip_bundle(out, tmp_path / "lucia.zip")
    db = tmp_path / "s.db"
    assert study.create([zpath], db) == 3
    conn = study.connect(db)
    pair = study.next_pair(conn, "ann1")
    shown = study.present(conn, "ann1", pair)
    assert Path(shown["left"]).is_file() and Path(shown["right"]).is_file()
    study.vote(conn, "ann1", pair, "quality", "left")
    assert study.progress(conn, "ann1")[0] >= 0
    text = study.report(db, "lucia-desert")
    assert "lucia" in text


def test_compare_zip_replays_in_a_fresh_process_without_a_backbone(tiny_backbone, tmp_path, monkeypatch):
    """A bundle saved by a Compare run, reloaded in a fresh process: the same table and figures, and no
    backbone was loaded there."""
    from comparisons import service

    monkeypatch.setattr(service, "get_backbone", lambda name: tiny_backbone)
    clip = ROOT / "examples" / "astronaut-pan.mp4"
    rep = service.compare(str(clip), "a cartoon", ["StreamDiffusion", "StreamV2V"], size=64, frames=4)
    expected = {"table": rep["table"], "warp": service.warp_error_figure(rep).to_json(),
                "bank": service.bank_figure(rep).to_json()}
    code = (
        "import json, sys\n"
        "from comparisons import service, runner\n"
        "rep = service.replay(sys.argv[1])\n"
        "print(json.dumps({'table': rep['table'], 'warp': service.warp_error_figure(rep).to_json(),\n"
        "                  'bank': service.bank_figure(rep).to_json(), 'backbones': len(runner._BACKBONES),\n"
        "                  'diffusers': 'diffusers' in sys.modules, 'videos': sorted(rep['videos'])}))\n")
    p = subprocess.run([sys.executable, "-c", code, rep["zip"]], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got["backbones"] == 0 and not got["diffusers"]             # no model, not even its library
    assert got["videos"] == ["StreamDiffusion", "StreamV2V"]
    assert got["table"] == json.loads(json.dumps(expected["table"]))
    assert json.loads(got["warp"])["data"] == json.loads(expected["warp"])["data"]
    assert json.loads(got["bank"])["data"] == json.loads(expected["bank"])["data"]


def test_evaluate_results_reads_both_list_formats(tmp_path):
    from comparisons.results_list import evaluate_results

    src, edit = shared_video("kite-walk.mp4"), shared_video("kite-walk-style.mp4")
    root = src.parent
    v2v = [{"src_vid_name": "kite-walk.mp4", "vid_name": "kite-walk-style.mp4", "prompt": "a styled kite walk"},
           {"src_vid_name": "kite-walk", "vid_name": "kite-walk", "prompt": "the source itself"}]
    sdv2 = [{"src_video_name": "kite-walk.mp4", "output_video_name": "kite-walk-style.mp4", "prompt": "p",
             "height": 256, "width": 256, "fps": 18},
            {"src_video_name": "kite-walk.mp4", "output_video_name": "kite-walk.mp4", "prompt": "q",
             "height": 256, "width": 256, "fps": 10}]
    (tmp_path / "eval.json").write_text(json.dumps(v2v))
    (tmp_path / "evaluation.json").write_text(json.dumps(sdv2))
    a = evaluate_results(tmp_path / "eval.json", root, tmp_path / "a", size=256, frames=8)
    b = evaluate_results(tmp_path / "evaluation.json", root, tmp_path / "b", frames=8)
    for res, entries in ((a, [(src, edit), (src, src)]), (b, [(src, edit), (src, src)])):
        assert len(res["rows"]) == 2
        for row, (s, e) in zip(res["rows"], entries):
            ref = _metrics_cli(tmp_path, s, e, "--size", "256", "--frames", "8")
            assert row["warp_error"] == pytest.approx(ref["warp_error"], abs=1e-9)
            assert row["warp_error_paper_compatible"] == pytest.approx(ref["warp_error_paper_compatible"], abs=1e-9)
        assert res["means"]["warp_error"] == pytest.approx(np.mean([r["warp_error"] for r in res["rows"]]))
        assert (tmp_path / ("a" if res is a else "b") / "results.csv").read_text().count("\n") == 4
    # an entry without its source: only the source-free figure
    (tmp_path / "nosrc.json").write_text(json.dumps([{"src_vid_name": None, "vid_name": "kite-walk-style.mp4"}]))
    c = evaluate_results(tmp_path / "nosrc.json", root, tmp_path / "c", frames=8)
    assert c["rows"][0]["warp_error"] is None and c["rows"][0]["warp_error_self_flow"] > 0
    # resumable: a second run computes nothing new and gives the same rows
    again = evaluate_results(tmp_path / "eval.json", root, tmp_path / "a", size=256, frames=8,
                             progress=lambda *a: pytest.fail("recomputed a finished row"))
    assert again["rows"] == a["rows"]


# -- bad bundles ---------------------------------------------------------------------------------------
@pytest.fixture
def good_folder(tmp_path):
    from v2v_core.video import VideoWriter

    d = tmp_path / "good"
    d.mkdir()
    with VideoWriter(d / "a.mp4", 10) as w:
        for i in range(3):
            w.write(np.full((64, 64, 3), 40 * i, np.uint8))
    (d / "report.json").write_text(json.dumps({"format_version": FORMAT_VERSION, "settings": {"prompt": "p"},
                                               "input": None, "mosaic": None, "methods": {"A": {"video": "a.mp4"}}}))
    return d


def _zip(path, entries: dict):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return path


def test_good_bundle_loads(good_folder, tmp_path):
    rep = load_bundle(zip_bundle(good_folder, tmp_path / "g.zip"), extract_to=tmp_path / "x")
    assert Path(rep["methods"]["A"]["video"]).parent == tmp_path / "x"


@pytest.mark.parametrize("case,match", [
    ("no report", "No report.json"),
    ("unknown version", "format_version is 99"),
    ("missing video", "which is not in it"),
    ("dotdot", "outside its folder"),
    ("absolute", "outside its folder"),
    ("too many", "at most 5"),
    ("too large", "at most"),
    ("fake mp4", "not a readable video"),
    ("path in report", "names inside the bundle"),
    ("odd file type", "not a file a bundle holds"),
])
def test_bad_bundles_are_refused_clearly_and_write_nothing_outside(good_folder, tmp_path, case, match, monkeypatch):
    import comparisons.bundle as b

    video = (good_folder / "a.mp4").read_bytes()
    report = json.loads((good_folder / "report.json").read_text())
    entries = {"report.json": json.dumps(report), "a.mp4": video}
    if case == "no report":
        entries.pop("report.json")
    elif case == "unknown version":
        entries["report.json"] = json.dumps({**report, "format_version": 99})
    elif case == "missing video":
        entries.pop("a.mp4")
    elif case == "dotdot":
        entries["../escape.json"] = "{}"
    elif case == "absolute":
        entries["/tmp/escape-v2v.json"] = "{}"
    elif case == "too many":
        monkeypatch.setattr(b, "MAX_FILES", 5)
        entries.update({f"n{i}.md": "x" for i in range(6)})
    elif case == "too large":
        monkeypatch.setattr(b, "MAX_BYTES", 1000)
    elif case == "fake mp4":
        entries["a.mp4"] = b"this is not a video"
    elif case == "path in report":
        entries["report.json"] = json.dumps({**report, "methods": {"A": {"video": "../a.mp4"}}})
    elif case == "odd file type":
        entries["run.py"] = "print('never executed')"
    zpath = _zip(tmp_path / "bad.zip", entries)
    dest = tmp_path / "dest" / "inner"
    with pytest.raises(V2VError, match=match):
        b.load_bundle(zpath, extract_to=dest)
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and dest not in p.parents and p != zpath
               and good_folder not in p.parents]
    assert outside == [] and not Path("/tmp/escape-v2v.json").exists()


def test_safe_extract_enforces_sizes_while_writing(tmp_path):
    """A zip can lie about sizes in its directory: the limit holds on the bytes really written."""
    zpath = _zip(tmp_path / "z.zip", {"big.md": "x" * 5000})
    with pytest.raises(V2VError, match="more than|at most"):
        safe_extract(zpath, tmp_path / "out", max_bytes=1000)


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _strings(v)


def test_no_server_path_in_a_compare_zip_a_cli_bundle_or_the_shown_report(tiny_backbone, tmp_path, monkeypatch):
    """report.json of a Compare run's zip and of `comparisons run`'s bundle, and the report the UI and /compare show,
    name files inside the bundle and the input clip by its name: never a folder of the server (an upload's temp
    folder) or of the user."""
    import zipfile

    from comparisons import service
    from comparisons.runner import run_comparison

    monkeypatch.setattr(service, "get_backbone", lambda name: tiny_backbone)
    clip = ROOT / "examples" / "astronaut-pan.mp4"
    rep = service.compare(str(clip), "a cartoon", ["StreamDiffusion"], size=64, frames=3)
    with zipfile.ZipFile(rep["zip"]) as z:
        zipped = json.loads(z.read("report.json"))
    run_comparison(clip, "a cartoon", ["StreamDiffusion"], tmp_path / "cli", backbone=tiny_backbone, frames=3, size=64)
    cli = json.loads((tmp_path / "cli" / "report.json").read_text())
    for name, report in (("zip", zipped), ("cli", cli), ("shown", service.public_report(rep))):
        paths = [s for s in _strings(report) if s.startswith("/") or tempfile.gettempdir() in s or str(ROOT) in s
                 or str(tmp_path) in s]
        assert paths == [], (name, paths)
        assert report["settings"]["input"] == "astronaut-pan.mp4" and report["methods"]["StreamDiffusion"]["video"] == "streamdiffusion.mp4"


def test_run_folders_age_out_and_an_aged_out_example_replay_is_extracted_again(tmp_path, monkeypatch):
    """A UI that runs for weeks must not fill its disk: a run's folder older than WORK_TTL_S goes when the next run
    makes its own; a younger one stays. The example replay cached in memory is extracted again once its folder went."""
    import os
    import time

    from comparisons import service

    monkeypatch.setenv("V2V_WORK_DIR", str(tmp_path / "runs"))
    first = service._work_dir("v2v-compare-")
    (first / "out.mp4").write_bytes(b"x")
    young = service._work_dir("v2v-compare-")
    past = time.time() - service.WORK_TTL_S - 60
    os.utime(first, (past, past))
    new = service._work_dir("v2v-replay-")
    assert new.parent == young.parent == tmp_path / "runs" and new.name.startswith("v2v-replay-")
    assert not first.exists() and young.is_dir() and new.is_dir()

    clip = service.EXAMPLE_RESULTS.parent / "astronaut-pan.mp4"
    if not (service.EXAMPLE_RESULTS / "astronaut-pan.zip").is_file():
        pytest.skip("no results made in advance for the astronaut example")
    monkeypatch.setattr(service, "_EXAMPLE_REPLAYS", {})
    rep = service.example_results(str(clip))
    if rep is None:
        pytest.skip("the example's results were made with other weights than the shipped ones")
    folder = Path(rep["bundle_dir"])
    assert folder.parent == tmp_path / "runs"
    assert service.example_results(str(clip)) is rep          # cached: not extracted on every click
    import shutil

    shutil.rmtree(folder)
    again = service.example_results(str(clip))
    assert Path(again["bundle_dir"]).is_dir() and Path(again["zip"]).is_file() and again["bundle_dir"] != str(folder)
