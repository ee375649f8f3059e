"""User-study store: concurrency, crash safety, replaced re-votes, hand-computed win rates."""
import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
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
    # 4 annotators: below study_stats.MIN_ANNOTATORS no interval is drawn, and the report says why
    assert wr["StreamV2V"]["low"] is None and wr["StreamV2V"]["interval"] == "too few annotators for an interval (4)"
    assert wr["StreamV2V"]["preferring"] == {"preferring": 2, "decided": 3, "low": None, "high": None}
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
    assert "| StreamV2V | all criteria |" in text and "Bradley-Terry" in text and (tmp_path / "wr.png").stat().st_size > 0
    assert study.export(db, tmp_path / "v.csv") == 6 * len(study.CRITERIA)
    assert study.next_pair(conn, "u") is None and study.progress(conn, "u") == (6, 6)
    assert study.next_pair(conn, "new") is not None


def test_annotators_preferring_has_scipys_wilson_interval_the_hand_computed_one():
    """7 of 10 annotators prefer the method (two more were even and are left out): scipy's Wilson interval is the one
    computed by hand with z = 1.96 (0.3968, 0.8922)."""
    from comparisons.study_stats import annotators_preferring

    units = [np.array([[1.0, 1.0]])] * 7 + [np.array([[0.0, 1.0]])] * 3 + [np.array([[0.5, 1.0]])] * 2
    r = annotators_preferring(units)
    z, n, p = 1.959964, 10, 0.7
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5 / (1 + z * z / n)
    assert (r["preferring"], r["decided"]) == (7, 10)
    assert (r["low"], r["high"]) == pytest.approx((centre - half, centre + half), abs=1e-6)
    assert (r["low"], r["high"]) == pytest.approx((0.3968, 0.8922), abs=1e-4)


def test_one_vote_is_shown_as_n_equals_1_with_a_wide_interval(db):
    conn = study.connect(db)
    p = _pair_of(conn, "StreamDiffusion", "StreamV2V")
    study.vote(conn, "solo", p, "quality", _left_choice_for(conn, "solo", p, "StreamV2V"))
    r = study.win_rates(conn, "StreamDiffusion", "quality")["StreamV2V"]
    assert r["shown"] == "n = 1" and (r["wins"], r["draws"], r["losses"]) == (1, 0, 0)
    assert r["low"] is None and r["high"] is None                     # one annotator: no interval, never [100, 100]
    text = study.report(db, "StreamDiffusion")
    assert "n = 1" in text and "100.0%" not in text and "too few annotators for an interval (1)" in text


def test_intervals_are_over_annotators(db):
    """Many votes of few people must not look like many independent people. Two annotators who disagree completely
    (16 votes each way): no interval at all. Six (three fans, three critics): an interval spanning most of [0, 1],
    and the Bradley-Terry intervals drawn too."""
    conn = study.connect(db)

    def votes(fans, critics):
        for inp in ("a.mp4", "b.mp4"):
            p = _pair_of(conn, "StreamDiffusion", "StreamV2V", inp)
            for crit in study.CRITERIA:
                for ann in fans:
                    study.vote(conn, ann, p, crit, _left_choice_for(conn, ann, p, "StreamV2V"))
                for ann in critics:
                    study.vote(conn, ann, p, crit, _left_choice_for(conn, ann, p, "StreamDiffusion"))

    votes(["fan"], ["critic"])
    r = study.win_rates(conn, "StreamDiffusion")["StreamV2V"]
    assert r["votes"] == 16 and r["annotators"] == 2 and r["win_rate"] == 0.5 and r["low"] is None
    assert all(v["low"] is None for v in study.bradley_terry_intervals(conn).values())
    votes(["fan2", "fan3"], ["critic2", "critic3"])
    r = study.win_rates(conn, "StreamDiffusion")["StreamV2V"]
    assert r["annotators"] == 6 and r["low"] < 0.2 and r["high"] > 0.8
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


def test_bradley_terry_is_chois_maximum_likelihood_by_hand():
    """A beats B 3 times of 4: the maximum-likelihood strengths are 0.75 / 0.25; a draw counts half each way, so one
    draw between equals gives 0.5 / 0.5."""
    from comparisons.study_stats import bradley_terry

    votes = [(1, "A", "B", "a")] * 3 + [(2, "A", "B", "b")]
    assert bradley_terry(votes, ["A", "B"]) == pytest.approx([0.75, 0.25], abs=2e-3)      # choix regularises a little
    assert bradley_terry([(1, "A", "B", "tie")], ["A", "B"]) == pytest.approx([0.5, 0.5])


def _simulated(rng, annotators: int, preference: float = 0.7, pairs: int = 6, criteria: int = 1):
    """annotator -> votes: each pair won by M with probability `preference`; with several criteria each pair's answer
    is repeated on every criterion (what one person's answers on four questions about one pair are like)."""
    return {f"a{k}": [(p, "M", "R", w) for p in range(pairs) for w in ["a" if rng.random() < preference else "b"] * criteria]
            for k in range(annotators)}


def test_intervals_on_simulated_annotators_cover_their_true_preference_and_shrink():
    """Annotators with a known 70% preference for M: 30 of them give a 95% interval that covers 0.7 in at least 93 of
    100 simulated studies; the interval narrows as annotators are added; 2 annotators give none."""
    from comparisons.study_stats import per_annotator, win_rate_interval

    covered, widths = 0, {}
    for k in range(100):
        lo, hi = win_rate_interval(per_annotator(_simulated(np.random.default_rng(k), 30), "M", "R"), seed=k)
        covered += lo <= 0.7 <= hi
        widths.setdefault(30, []).append(hi - lo)
    assert covered >= 93, covered
    for n in (10, 60):
        widths[n] = [np.subtract(*win_rate_interval(per_annotator(_simulated(np.random.default_rng(k), n), "M", "R"),
                                                    seed=k)[::-1]) for k in range(20)]
    assert np.mean(widths[10]) > np.mean(widths[30]) > np.mean(widths[60])
    assert win_rate_interval(per_annotator(_simulated(np.random.default_rng(0), 2), "M", "R")) is None


def test_pooling_criteria_never_narrows_an_interval():
    """Four criteria answered alike carry one answer's information: the "all criteria" interval (a pair's answers
    together, as one unit of its annotator) is as wide as one criterion's, where counting the votes as independent
    (the old Wilson over votes) halved it."""
    from comparisons.study_stats import per_annotator, win_rate_interval

    one = win_rate_interval(per_annotator(_simulated(np.random.default_rng(3), 12, criteria=1), "M", "R"), seed=1)
    pooled = win_rate_interval(per_annotator(_simulated(np.random.default_rng(3), 12, criteria=4), "M", "R"), seed=1)
    assert pooled[1] - pooled[0] >= (one[1] - one[0]) - 1e-9


def test_the_first_stage_of_the_bootstrap_is_scipys_bootstrap_over_annotators():
    """two_stage_bootstrap without its second stage is the plain bootstrap over annotators: its percentile interval
    matches scipy.stats.bootstrap's on the same units (the ratio of summed points to summed votes)."""
    from scipy.stats import bootstrap

    from comparisons.study_stats import per_annotator, two_stage_bootstrap

    units = per_annotator(_simulated(np.random.default_rng(5), 25, pairs=4), "M", "R")
    ours = np.percentile(two_stage_bootstrap(units, seed=0, n_resamples=20000, within=False), [2.5, 97.5])
    sums = np.array([u[:, 0].sum() for u in units])
    counts = np.array([u[:, 1].sum() for u in units])
    ref = bootstrap((sums, counts), lambda s, c, axis: s.sum(axis=axis) / c.sum(axis=axis), paired=True, vectorized=True,
                    n_resamples=20000, method="percentile", random_state=np.random.default_rng(1)).confidence_interval
    # the rate moves in steps of one vote (1 / 100 here): the two percentiles may fall one step apart, not more
    assert ours == pytest.approx([ref.low, ref.high], abs=1.5 / counts.sum())


def test_words_about_the_study_come_from_the_database(tmp_path):
    """Creation, the report and the admin view say the same counts, and they are the database's: 6 blind pairs and
    2 attention checks over 3 methods on 2 source clips; before any vote the report says the checks exist."""
    db = tmp_path / "w.db"
    study.create(_fake_results(tmp_path), db, attention_checks=2)
    conn = study.connect(db)
    d = study.design_summary(conn)
    counted = {k: conn.execute(f"SELECT COUNT(*) FROM pairs WHERE kind = '{k}'").fetchone()[0] for k in ("compare", "identical")}
    assert (d["pairs"], d["checks"]) == (counted["compare"], counted["identical"]) == (6, 2)
    assert d["methods"] == sorted(m for (m,) in conn.execute("SELECT DISTINCT method FROM items")) and d["sources"] == 2
    said = study.describe(conn)
    assert said.startswith("6 blind pairs and 2 attention checks, over 3 methods (") and "0 annotators voted" in said
    text = study.report(db, "StreamDiffusion")
    assert f"Study: {said}" in text and "2 in this study, none answered yet" in text and "none in this study" not in text


def test_the_study_route_serves_only_what_it_assigned(tmp_path, monkeypatch):
    """/study-video/TOKEN/ID answers the ids the study showed that session's participant (the study's own copy),
    and 404 to everything else: another participant's id, a guessed method-named file, an unknown token."""
    import urllib.error
    import urllib.request

    import app
    import ui_study

    db = tmp_path / "route.db"
    study.create(_fake_results(tmp_path), db)
    monkeypatch.setattr(ui_study, "STUDY_DB", str(db))
    conn = study.connect(db)
    alice, bob = study.start_session(conn, "alice"), study.start_session(conn, "bob")
    pair = study.next_pair(conn, "alice")
    a_left, a_right = study.served_videos(conn, db, "alice", pair)
    b_left, _ = study.served_videos(conn, db, "bob", pair)
    assert {Path(a_left).name, Path(a_right).name}.isdisjoint({Path(b_left).name})     # per-participant ids
    _, url, _ = app.demo.queue().launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True,
                                        ssr_mode=False, **app.LAUNCH_OPTIONS)
    try:
        def status(path):
            try:
                with urllib.request.urlopen(url.rstrip("/") + path) as r:
                    return r.status, r.read(), dict(r.headers)
            except urllib.error.HTTPError as e:
                return e.code, b"", {}

        code, body, headers = status(f"{ui_study.STUDY_VIDEO_ROUTE}/{alice}/{Path(a_left).name}")
        assert code == 200 and body == Path(a_left).read_bytes() and headers["content-type"] == "video/mp4"
        assert not any(m in " ".join(headers.values()) for m in ("StreamDiffusion", "StreamV2V", "Window"))
        for path in (f"{ui_study.STUDY_VIDEO_ROUTE}/{alice}/{Path(b_left).name}",          # bob's id, alice's token
                     f"{ui_study.STUDY_VIDEO_ROUTE}/{bob}/{Path(a_left).name}",            # alice's id, bob's token
                     f"{ui_study.STUDY_VIDEO_ROUTE}/{alice}/StreamV2V.mp4",                 # a guessed method name
                     f"{ui_study.STUDY_VIDEO_ROUTE}/{alice}/report.json",
                     f"{ui_study.STUDY_VIDEO_ROUTE}/forged/{Path(a_left).name}"):           # no such session
            assert status(path)[0] == 404, path
    finally:
        app.demo.close()


def test_admin_report_files_go_where_gradio_may_serve_them_whatever_the_database_path():
    """The admin view's chart, CSV and design are written under the system's temp directory, one folder per database,
    not beside the database: one kept on a Space's persistent /data (outside the app's folder and /tmp) made Gradio
    refuse the chart ("Cannot move ... to the gradio cache dir") and the admin view showed an error."""
    import tempfile

    import ui_study

    a = ui_study.report_files("/data/study.db")
    b = ui_study.report_files("/elsewhere/study.db")
    tmp = Path(tempfile.gettempdir()).resolve()
    assert [p.name for p in a] == ["study.winrates.png", "study.votes.csv", "study.design.json"]
    assert all(p.parent.is_dir() and tmp in p.resolve().parents for p in a + b)
    assert a[0].parent != b[0].parent and ui_study.report_files("/data/study.db") == a     # per database, stable
