"""User-study store: concurrency, crash safety, replaced re-votes, hand-computed win rates."""
import json
import sqlite3
import subprocess
import sys
import threading

import pytest

from comparisons import study
from conftest import ROOT


def _fake_results(tmp_path, methods=("StreamDiffusion", "StreamV2V", "Window attention"), inputs=("a.mp4", "b.mp4")):
    """Results bundles (format_version 1) whose videos are tiny real mp4s."""
    import numpy as np

    from v2v_core.video import VideoWriter

    clip = tmp_path / "tiny.mp4"
    with VideoWriter(clip, 10) as w:
        for i in range(2):
            w.write(np.full((16, 16, 3), 100 * i, np.uint8))
    dirs = []
    for k, inp in enumerate(inputs):
        d = tmp_path / f"run{k}"
        d.mkdir()
        for m in methods:
            (d / f"{m}.mp4").write_bytes(clip.read_bytes())
        rep = {"format_version": 1, "settings": {"input": inp, "prompt": "a cartoon"}, "input": None, "mosaic": None,
               "methods": {m: {"video": f"{m}.mp4"} for m in methods}}
        (d / "report.json").write_text(json.dumps(rep))
        dirs.append(d)
    return dirs


@pytest.fixture
def db(tmp_path):
    p = tmp_path / "study.db"
    assert study.create(_fake_results(tmp_path), p) == 6       # 3 methods -> 3 pairs, x 2 inputs
    return p


def _pair_of(conn, a, b, inp="a.mp4"):
    return conn.execute("SELECT p.id FROM pairs p JOIN items ia ON ia.id=p.a JOIN items ib ON ib.id=p.b "
                        "WHERE ia.method=? AND ib.method=? AND ia.input=?", (a, b, inp)).fetchone()[0]


def _left_choice_for(conn, annotator, pair, method):
    """The left/right choice an annotator makes to pick `method` in this pair."""
    shown = study.present(conn, annotator, pair)
    return "left" if shown["left"].endswith(f"{method}.mp4") else "right"


def test_win_rate_matches_hand_computed_case(db):
    conn = study.connect(db)
    p = _pair_of(conn, "StreamDiffusion", "StreamV2V")
    # 4 annotators on one criterion: StreamV2V wins twice, one tie, one loss -> (2 + 0.5) / 4 = 0.625
    for ann, pick in [("u1", "StreamV2V"), ("u2", "StreamV2V"), ("u3", None), ("u4", "StreamDiffusion")]:
        study.vote(conn, ann, p, "quality", "tie" if pick is None else _left_choice_for(conn, ann, p, pick))
    wr = study.win_rates(conn, "StreamDiffusion", "quality")
    assert wr["StreamV2V"]["win_rate"] == pytest.approx(0.625) and wr["StreamV2V"]["votes"] == 4
    assert wr["StreamV2V"]["low"] <= 0.625 <= wr["StreamV2V"]["high"]
    bt = study.bradley_terry(conn)
    assert list(bt)[0] == "StreamV2V"


def test_left_right_is_per_annotator_and_revote_replaces(db):
    conn = study.connect(db)
    orders = {study.flipped(f"user{k}", 1) for k in range(20)}
    assert orders == {True, False}                                 # both orders occur across annotators
    p = _pair_of(conn, "StreamDiffusion", "StreamV2V")
    study.vote(conn, "ann", p, "structure", _left_choice_for(conn, "ann", p, "StreamV2V"))
    study.vote(conn, "ann", p, "structure", _left_choice_for(conn, "ann", p, "StreamDiffusion"))   # changes mind
    rows = conn.execute("SELECT winner FROM votes WHERE annotator='ann'").fetchall()
    assert rows == [("a",)]                                        # one vote, the latest (a = StreamDiffusion)
    with pytest.raises(Exception):
        study.vote(conn, "ann", p, "beauty", "left")


def test_concurrent_voters_lose_no_vote(db):
    conn0 = study.connect(db)
    pairs = [r[0] for r in conn0.execute("SELECT id FROM pairs")]
    errors = []

    def voter(name):
        try:
            conn = study.connect(db)
            for p in pairs:
                for c in study.CRITERIA:
                    study.vote(conn, name, p, c, "left")
            conn.close()
        except Exception as e:  # pragma: no cover - the assertion below reports it
            errors.append(e)

    threads = [threading.Thread(target=voter, args=(f"t{k}",)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert conn0.execute("SELECT COUNT(*) FROM votes").fetchone()[0] == 8 * len(pairs) * len(study.CRITERIA)


def test_process_killed_mid_vote_leaves_database_consistent(db):
    code = f"""
import os, sqlite3
from comparisons import study
conn = study.connect({str(db)!r})
study.vote(conn, "kept", 1, "quality", "left")
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO votes(annotator, pair, criterion, winner) VALUES ('lost', 1, 'quality', 'a')")
os._exit(9)   # killed before COMMIT
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT)
    assert r.returncode == 9
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert [a for (a,) in conn.execute("SELECT annotator FROM votes")] == ["kept"]
    study.vote(study.connect(db), "after", 1, "quality", "tie")        # and it still takes votes


def test_report_and_export(db, tmp_path):
    conn = study.connect(db)
    for p in [r[0] for r in conn.execute("SELECT id FROM pairs")]:
        for c in study.CRITERIA:
            study.vote(conn, "u", p, c, "left")
    text = study.report(db, "StreamDiffusion", tmp_path / "wr.png")
    assert "| StreamV2V | all |" in text and "Bradley-Terry" in text and (tmp_path / "wr.png").stat().st_size > 0
    assert study.export(db, tmp_path / "v.csv") == 6 * len(study.CRITERIA)
    assert study.next_pair(conn, "u") is None and study.progress(conn, "u") == (6, 6)
    assert study.next_pair(conn, "new") is not None
