"""User-study store: concurrency, crash safety, replaced re-votes, hand-computed win rates."""
import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

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


def test_wilson_interval_is_the_hand_computed_one_and_wide_for_one_vote():
    # 2 wins, 1 draw, 1 loss: p = 2.5 / 4; Wilson by hand with z = 1.96
    z, n, p = 1.959964, 4, 0.625
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5 / (1 + z * z / n)
    assert study.wilson(2.5, 4) == pytest.approx((centre - half, centre + half))
    assert study.wilson(2.5, 4) == pytest.approx((0.2194, 0.9081), abs=1e-3)
    low, high = study.wilson(1, 1)                        # one win: nowhere near [100, 100]
    assert low == pytest.approx(0.2065, abs=1e-3) and high == 1.0


def test_one_vote_is_shown_as_n_equals_1_with_a_wide_interval(db):
    conn = study.connect(db)
    p = _pair_of(conn, "StreamDiffusion", "StreamV2V")
    study.vote(conn, "solo", p, "quality", _left_choice_for(conn, "solo", p, "StreamV2V"))
    r = study.win_rates(conn, "StreamDiffusion", "quality")["StreamV2V"]
    assert r["shown"] == "n = 1" and (r["wins"], r["draws"], r["losses"]) == (1, 0, 0)
    assert r["low"] < 0.25 and r["boot_low"] == r["boot_high"] == 1.0    # one annotator: the bootstrap cannot vary
    text = study.report(db, "StreamDiffusion")
    assert "n = 1" in text and "100.0%" not in text


def test_bootstrap_is_over_annotators(db):
    """One annotator with many votes must not look like many independent people: resampling annotators,
    two people who disagree completely give an interval spanning both of their rates."""
    conn = study.connect(db)
    for inp in ("a.mp4", "b.mp4"):
        p = _pair_of(conn, "StreamDiffusion", "StreamV2V", inp)
        for crit in study.CRITERIA:
            study.vote(conn, "fan", p, crit, _left_choice_for(conn, "fan", p, "StreamV2V"))
            study.vote(conn, "critic", p, crit, _left_choice_for(conn, "critic", p, "StreamDiffusion"))
    r = study.win_rates(conn, "StreamDiffusion")["StreamV2V"]
    assert r["votes"] == 16 and r["annotators"] == 2 and r["win_rate"] == 0.5
    assert r["boot_low"] == 0.0 and r["boot_high"] == 1.0
    bt = study.bradley_terry_intervals(conn)
    assert set(bt) >= {"StreamDiffusion", "StreamV2V"} and all(v["low"] <= v["score"] <= v["high"] for v in bt.values())
    scores = [v["score"] for v in bt.values()]
    assert scores == sorted(scores, reverse=True)                       # a ranking: strongest first


def test_krippendorff_alpha_hand_computed(tmp_path):
    """Two raters, four pairs: (a, a), (b, b), (a, b), (a, a): coincidences o_aa 4, o_bb 2, o_ab = o_ba 1;
    alpha = 1 - D_o / D_e = 1 - 2 / ((64 - 25 - 9) / 7) = 0.5333."""
    db = tmp_path / "k.db"
    study.create(_fake_results(tmp_path, methods=("A", "B", "C"), inputs=("x.mp4", "y.mp4")), db)
    conn = study.connect(db)
    pairs = [p for (p,) in conn.execute("SELECT id FROM pairs ORDER BY id")][:4]
    for p, (w1, w2) in zip(pairs, [("a", "a"), ("b", "b"), ("a", "b"), ("a", "a")]):
        for ann, w in (("r1", w1), ("r2", w2)):
            conn.execute("INSERT INTO votes(annotator, pair, criterion, winner) VALUES (?,?,?,?)", (ann, p, "quality", w))
    alpha, units = study.krippendorff_alpha(conn, "quality")
    assert units == 4 and alpha == pytest.approx(1 - 2 / (30 / 7))


def test_design_export_lets_the_analysis_be_rerun(db, tmp_path):
    d = study.export_design(db, tmp_path / "design.json")
    saved = json.loads((tmp_path / "design.json").read_text())
    assert saved == d and len(saved["pairs"]) == 6 and saved["criteria"] == list(study.CRITERIA)
    assert all("/" not in it["video"] for it in saved["items"])         # file names, no server paths


def test_votes_need_a_session_token_bound_to_the_annotator(db):
    from v2v_core.errors import V2VError

    conn = study.connect(db)
    with pytest.raises(V2VError, match="not valid"):
        study.participant_vote(conn, "forged-token", 1, "quality", "left")
    with pytest.raises(V2VError, match="not valid"):
        study.participant_vote(conn, None, 1, "quality", "left")
    token = study.start_session(conn, "alice")
    study.participant_vote(conn, token, 1, "quality", "left")
    assert conn.execute("SELECT annotator FROM votes").fetchall() == [("alice",)]
    assert study.answers(conn, "alice", 1) == {"quality": "left"}          # as alice saw it, after a reload too


def test_served_videos_have_opaque_names(db, tmp_path):
    conn = study.connect(db)
    left, right = study.served_videos(conn, db, "bob", 1)
    shown = study.present(conn, "bob", 1)
    assert Path(left).read_bytes() == Path(shown["left"]).read_bytes()
    for p in (left, right):
        name = Path(p).name.lower()
        assert not any(m.lower().split()[0] in name for m in ("StreamDiffusion", "StreamV2V", "Window attention"))
        assert "run" not in Path(p).parent.name
    assert study.served_videos(conn, db, "bob", 1) == (left, right)          # stable for one annotator
    assert study.served_videos(conn, db, "carol", 1)[0] != left                # per-annotator names


def test_attention_check_failures_appear_in_the_report(tmp_path):
    db = tmp_path / "c.db"
    assert study.create(_fake_results(tmp_path), db, attention_checks=2) == 6
    conn = study.connect(db)
    checks = [p for (p,) in conn.execute("SELECT id FROM pairs WHERE kind = 'identical'")]
    assert len(checks) == 2
    shown = study.present(conn, "lazy", checks[0])
    assert shown["left"] == shown["right"]                             # one video on both sides
    for c in study.CRITERIA:
        study.vote(conn, "lazy", checks[0], c, "left" if c == "quality" else "tie")
        study.vote(conn, "careful", checks[0], c, "tie")
    assert study.attention_failures(conn) == {"lazy": {"checks": 1, "failed": 1}, "careful": {"checks": 1, "failed": 0}}
    text = study.report(db, "StreamDiffusion")
    assert "1 of 2 annotators failed: lazy (1 of 1)" in text
    assert study.win_rates(conn, "StreamDiffusion") == {}                # check votes never count as comparisons
    assert study.progress(conn, "careful") == (1, 8)                     # participants answer the checks too


def test_invitation_mode_lets_only_invited_codes_vote(db):
    from v2v_core.errors import V2VError

    conn = study.connect(db)
    study.start_session(conn, "anyone")                          # open study: any name
    codes = study.invite(conn, 2)
    assert len(set(codes)) == 2 and study.invite_only(conn)
    with pytest.raises(V2VError, match="by invitation"):
        study.start_session(conn, "anyone")
    token = study.start_session(conn, codes[0])
    study.participant_vote(conn, token, 1, "quality", "tie")
    assert conn.execute("SELECT annotator FROM votes").fetchall() == [(codes[0],)]
