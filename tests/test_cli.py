"""The translate CLI as a user runs it: playable mp4, report, seeds; examples are deterministic."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, shared_video
from v2v_core.__main__ import main as cli
from v2v_core.video import probe, read_video


def _translate(src, out, *extra):
    rc = cli(["translate", str(src), "--prompt", "a pencil sketch", "--out", str(out), "--backbone", "toy", *extra])
    assert rc == 0
    return read_video(out)[0]


@pytest.mark.slow   # over 20 s on 2 cores (pytest.ini): `make test-slow` runs it
def test_translate_woman_running_24_frames(tmp_path):
    """Done-means of the foundation: 24 frames at 256 px, a report, seeds reproduce / differ."""
    src = shared_video("woman-running.mp4")
    a = _translate(src, tmp_path / "a.mp4", "--frames", "24", "--size", "256", "--seed", "0",
                   "--report", str(tmp_path / "r.json"))
    b = _translate(src, tmp_path / "b.mp4", "--frames", "24", "--size", "256", "--seed", "0")
    c = _translate(src, tmp_path / "c.mp4", "--frames", "24", "--size", "256", "--seed", "1")
    assert len(a) == 24 and a[0].shape == (256, 256, 3)
    assert probe(tmp_path / "a.mp4").fps == 20.0
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert np.mean([np.abs(x.astype(int) - y).mean() for x, y in zip(a, c)]) > 0.5
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["frames"] == 24 and r["fps"] > 0
    assert {"backbone", "method", "strength", "steps", "size", "seed"} <= set(r["settings"])
    assert {"encode", "unet", "temporal", "decode"} <= set(r["timings"]["mean"])
    assert len(r["timings"]["per_frame"]) == 24


def test_cli_flags_come_from_the_config_declaration():
    out = subprocess.run([sys.executable, "-m", "v2v_core", "translate", "--help"], capture_output=True, text=True,
                         cwd=ROOT).stdout
    for flag in ("--strength", "--steps", "--seed", "--stream-batch", "--backbone", "--report", "--frames", "--size"):
        assert flag in out


def test_examples_are_deterministic_and_match_committed(tmp_path):
    from v2v_core.synthetic import make_clip

    a, b = make_clip("object", 6, 128), make_clip("object", 6, 128)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.flow, b.flow)
    committed = read_video(ROOT / "examples" / "astronaut-pan.mp4")[0]
    fresh = make_clip("pan", 24, 256, "astronaut").frames
    assert len(committed) == 24
    assert np.abs(committed[10].astype(int) - fresh[10]).mean() < 4   # only H.264's loss between them


@pytest.mark.parametrize("cli, cmd", [("v2v_core", c) for c in ("translate", "train-svdiff", "toy-eval", "metrics")]
                         + [("comparisons", c) for c in ("list", "run", "method-effect", "ablate", "evaluate", "import",
                                                         "evaluate-results", "study")])
def test_help_of_every_command_renders(cli, cmd, capsys):
    """Every flag's help is generated from config metadata: it must survive argparse's % formatting (`comparisons run
    --help` once crashed on the runtime help's "0.4%")."""
    import importlib

    with pytest.raises(SystemExit) as e:
        importlib.import_module(f"{cli}.__main__").main([cmd, "--help"])
    assert e.value.code == 0 and "usage" in capsys.readouterr().out


@pytest.mark.slow   # over 10 s on 2 cores, with a cheaper neighbour in the default suite
def test_translate_on_the_embedded_model_prints_no_warnings(tmp_path):
    """A quiet, truthful start: no library warning on stderr (the causes are fixed, nothing is silenced);
    only the command's own progress bar."""
    import re

    p = subprocess.run([sys.executable, "-m", "v2v_core", "translate", str(ROOT / "examples" / "astronaut-pan.mp4"),
                        "--prompt", "a pencil sketch", "--out", str(tmp_path / "o.mp4"), "--frames", "2", "--size", "128"],
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    lines = [seg.strip() for seg in re.split(r"[\r\n]", p.stderr) if seg.strip()]
    assert lines and all(seg.startswith("translate:") for seg in lines), lines


def _parsers():
    import argparse

    import comparisons.__main__ as cm
    import v2v_core.__main__ as vm

    out = []
    for mod in (cm, vm):
        captured = {}
        orig = mod.run_cli
        mod.run_cli = lambda parser, argv=None: captured.setdefault("p", parser) and 0
        try:
            mod.main([])
        finally:
            mod.run_cli = orig

        def walk(p, path):
            for a in p._actions:
                if isinstance(a, argparse._SubParsersAction):
                    for n, sp in a.choices.items():
                        walk(sp, path + [n])
                elif a.dest != "help":
                    out.append((" ".join(path), a))
        walk(captured["p"], [mod.__name__.split(".")[0]])
    return out


def test_every_flag_has_help_and_no_abbreviation_passes(capsys):
    missing = [(where, a.dest) for where, a in _parsers() if not a.help]
    assert missing == []
    from comparisons.__main__ import main as cmain

    with pytest.raises(SystemExit):
        cmain(["run", "clip.mp4", "--prompt", "p", "--method", "StreamV2V", "--out-dir", "x"])   # --methods abbreviated
    err = capsys.readouterr().err
    assert "python -m comparisons run" in err and "unrecognized arguments: --method" in err


def test_unknown_prompt_on_the_toy_is_a_warning_naming_its_styles(tmp_path):
    p = subprocess.run([sys.executable, "-m", "v2v_core", "translate", str(ROOT / "examples" / "astronaut-pan.mp4"),
                        "--prompt", "a claymation figure", "--out", str(tmp_path / "o.mp4"), "--frames", "2",
                        "--size", "128"], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    warn = [ln for ln in p.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warn) == 1 and "a claymation figure" in warn[0] and "a pencil sketch" in warn[0] and "pixel art" in warn[0]


@pytest.mark.slow   # over 10 s on 2 cores, with a cheaper neighbour in the default suite
def test_comparisons_run_says_what_the_studio_says_of_a_faint_style(tmp_path):
    p = subprocess.run([sys.executable, "-m", "comparisons", "run", str(ROOT / "examples" / "astronaut-pan.mp4"),
                        "--prompt", "pixel art", "--methods", "StreamDiffusion", "--out-dir", str(tmp_path / "r"),
                        "--frames", "2", "--size", "64"], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    from v2v_core.toy import MODEL_DIR
    from v2v_core.toy.styles import prompt_warning, read_evaluation

    expected = prompt_warning("pixel art", read_evaluation(MODEL_DIR))    # faint in v3.4's evaluation
    warn = [ln for ln in p.stderr.splitlines() if ln.startswith("warning:")]
    assert warn == ([f"warning: {expected}"] if expected else []), p.stderr


@pytest.mark.parametrize("choice,expected", [(None, "cores-1"), ("3", "3"), ("torch", "cores")])
def test_thread_policy_is_set_where_the_process_starts(choice, expected):
    """v2v_core.threads.apply (called by app.main and the CLIs' __main__): cores - 1 threads with a passive
    OpenMP wait by default, N on request, torch's own default with V2V_THREADS=torch. Importing the library
    sets nothing."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "V2V_THREADS")}
    if choice:
        env["V2V_THREADS"] = choice
    code = ("import os, v2v_core, comparisons.service; import torch; before = torch.get_num_threads(); "
            "from v2v_core.threads import apply; apply(); "
            "print(before, torch.get_num_threads(), os.environ.get('OMP_WAIT_POLICY'), os.cpu_count())")
    before, after, wait, cores = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                                check=True).stdout.split()
    assert before == cores                                     # importing the library changed nothing
    want = {"cores-1": str(max(1, int(cores) - 1)), "3": "3", "cores": cores}[expected]
    assert after == want
    assert wait == ("None" if choice == "torch" else "PASSIVE")


@pytest.mark.parametrize("cli,args,says", [
    ("comparisons", ["run", "--prompt", "  ", "--out-dir", "{out}"], "prompt is empty"),
    ("comparisons", ["run", "--prompt", "a sepia photo", "--size", "99999", "--out-dir", "{out}"], "V2V_MAX_SIZE=512"),
    ("comparisons", ["run", "--prompt", "a sepia photo", "--size", "100", "--out-dir", "{out}"], "multiple of 64"),
    ("comparisons", ["run", "--prompt", "a sepia photo", "--frames", "1", "--out-dir", "{out}"], "at least 2"),
    ("comparisons", ["ablate", "--prompt", "", "--out-dir", "{out}"], "prompt is empty"),
    ("v2v_core", ["translate", "--prompt", "a sepia photo", "--size", "99999", "--out", "{out}/o.mp4"], "V2V_MAX_SIZE=512"),
])
def test_argument_mistakes_are_told_before_anything_loads(cli, args, says, tmp_path):
    """Knowable mistakes come from argparse: exit 2, the rule in one line, no model loaded (well under the ~5 s a
    load takes), no progress bar, and no --out-dir left behind."""
    import time

    out = tmp_path / "out"
    args = [a.format(out=out) for a in args]
    t = time.monotonic()
    p = subprocess.run([sys.executable, "-m", cli, args[0], str(ROOT / "examples" / "astronaut-pan.mp4"), *args[1:]],
                       capture_output=True, text=True, cwd=ROOT, env={**os.environ, "V2V_MAX_SIZE": "512"})
    assert p.returncode == 2 and says in p.stderr, p.stderr
    assert "frame/s" not in p.stderr and "frame [" not in p.stderr and "%|" not in p.stderr, p.stderr   # no bar
    assert not out.exists() and time.monotonic() - t < 20


def test_a_failed_comparisons_run_leaves_no_out_dir(tmp_path):
    bad = tmp_path / "not-a-video.mp4"
    bad.write_bytes(b"no video here")
    p = subprocess.run([sys.executable, "-m", "comparisons", "run", str(bad), "--prompt", "a sepia photo",
                        "--methods", "StreamDiffusion", "--out-dir", str(tmp_path / "r"), "--frames", "2", "--size", "64"],
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 2 and p.stderr.strip().splitlines()[-1].startswith("error:"), p.stderr
    assert not (tmp_path / "r").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "mine.txt").write_text("a folder that was there before is left as it was")
    subprocess.run([sys.executable, "-m", "comparisons", "run", str(bad), "--prompt", "a sepia photo", "--out-dir",
                    str(kept), "--frames", "2", "--size", "64"], capture_output=True, text=True, cwd=ROOT)
    assert [f.name for f in kept.iterdir()] == ["mine.txt"]


def test_progress_bars_have_totals_from_the_start_and_end_at_100_percent():
    """comparisons run's bars (ProgressBars), fed the runner's reports of a StreamDiffusion then a TokenFlow run of 12
    frames at 2 steps, on a first OpenVINO start: each bar is created with its total, every bar ends full, and the
    graphs' conversion is a line before the first bar or a note beside one, never a bar of its own."""
    import io

    from comparisons.__main__ import ProgressBars

    err = io.StringIO()
    bars = ProgressBars(file=err)
    n, steps = 12, 2
    for m in ("StreamDiffusion", "TokenFlow"):
        bars(m, 0, n, "waiting")
    setup = "converting OpenVINO graph {} (a first start: kept on disk after)"
    bars("StreamDiffusion", 0, n, setup.format("unet"))
    for i in range(n):
        if i == 3:
            bars("StreamDiffusion", i, n, setup.format("v2v-1"))
        bars("StreamDiffusion", i + 1, n, "generating")
    bars("StreamDiffusion", n, None, "measuring (warp error, style)")
    bars("StreamDiffusion", n, n, "done in 1.0 s")
    for i in range(n):
        bars("TokenFlow", i + 1, n, "encoding")
    for s in range(1, steps + 1):
        bars("TokenFlow", (s - 1) * n, steps * n, setup.format("tokenflow-joint2i"))
        bars("TokenFlow", (s - 1) * n, steps * n, f"denoising step {s}/{steps}: keyframes")
        for i in range(n):
            bars("TokenFlow", (s - 1) * n + i + 1, steps * n, f"denoising step {s}/{steps}: propagate")
    for i in range(n // 2):                      # decoding reported in chunks: the bar still ends full
        bars("TokenFlow", 2 * i + 1, n, "decoding")
    bars("TokenFlow", n, n, "done in 2.0 s")
    bars.close()
    finals = [seg.rsplit("\r", 1)[-1] for seg in err.getvalue().split("\n") if seg.strip()]   # what stays on screen
    bar_lines = [ln for ln in finals if "|" in ln]
    assert [ln.split(":")[0] + ":" + ln.split(":")[1].split()[0] for ln in bar_lines] == [
        "StreamDiffusion:generating", "TokenFlow:encoding", "TokenFlow:denoising", "TokenFlow:decoding"], finals
    assert all("100%" in ln for ln in bar_lines) and all(" 12/12 " in ln or " 24/24 " in ln for ln in bar_lines), finals
    assert "frame [" not in err.getvalue() and "StreamDiffusion: done in 1.0 s" in finals   # never a bar without a total
    assert finals[0] == "StreamDiffusion: " + setup.format("unet") and "tokenflow-joint2i" in err.getvalue()
