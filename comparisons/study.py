"""User-study store: blind pairwise votes in SQLite, with win rates and a Bradley-Terry ranking.

    python -m comparisons study create --results DIR1 DIR2 ... --out study.db
    python -m comparisons study report study.db --reference StreamDiffusion [--png winrates.png]
    python -m comparisons study export study.db --csv votes.csv

A pair is two methods' outputs for the same input and prompt (from runner output folders). Each
annotator sees each pair with its own random (but reproducible) left/right order; votes are left /
right / tie / both bad (GenAI-Arena style) per criterion: the TGVE criteria (text alignment,
structure, quality) plus temporal consistency. One vote per annotator x pair x criterion: a re-vote
replaces it. The database runs in WAL mode and every vote is one transaction, so concurrent voters
lose nothing and a process killed mid-vote leaves it consistent.

Win rate of method M against the reference R, over votes on (M, R) pairs: (wins + 0.5 draws) / votes;
"both bad" counts as a draw. Reported per criterion with win / draw / lose counts, shown as "n = k" instead of a
percentage below MIN_VOTES votes; the statistics (comparisons.study_stats: scipy.stats, choix, krippendorff) take
the ANNOTATOR as the unit of independence: a 95% two-stage bootstrap interval (annotators, then their pairs) drawn
only from study_stats.MIN_ANNOTATORS annotators on, the annotators preferring a method with a Wilson interval,
Bradley-Terry strengths with bootstrap intervals, Krippendorff's alpha (nominal) for agreement. `describe` says what
the study holds, counted from the database. `export_design` writes the design as JSON.
"""
from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
import secrets
import shutil
import sqlite3
from pathlib import Path

import numpy as np

from v2v_core.errors import V2VError

from . import study_stats as stats
from .bundle import load_bundle

CRITERIA = ("text_alignment", "structure", "quality", "temporal_consistency")
CHOICES = ("left", "right", "tie", "both_bad")

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, input TEXT, prompt TEXT, method TEXT, video TEXT,
                                  UNIQUE(input, prompt, method));
CREATE TABLE IF NOT EXISTS pairs (id INTEGER PRIMARY KEY, a INTEGER REFERENCES items(id), b INTEGER REFERENCES items(id),
                                  kind TEXT NOT NULL DEFAULT 'compare',
                                  UNIQUE(a, b));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS invites (code TEXT PRIMARY KEY, created REAL DEFAULT (julianday('now')));
CREATE TABLE IF NOT EXISTS sessions (token TEXT PRIMARY KEY, annotator TEXT NOT NULL, started REAL DEFAULT (julianday('now')));
CREATE TABLE IF NOT EXISTS votes (annotator TEXT NOT NULL, pair INTEGER NOT NULL REFERENCES pairs(id),
                                  criterion TEXT NOT NULL, winner TEXT NOT NULL CHECK (winner IN ('a','b','tie','both_bad')),
                                  ts REAL DEFAULT (julianday('now')), PRIMARY KEY (annotator, pair, criterion));
"""


def connect(db: str | Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(db), timeout=30, isolation_level=None)   # autocommit; explicit transactions
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def _migrate(conn) -> None:
    conn.executescript(SCHEMA)
    cols = {r[1] for r in conn.execute("PRAGMA table_info(pairs)")}
    if "kind" not in cols:                                   # databases made before attention checks existed
        conn.execute("ALTER TABLE pairs ADD COLUMN kind TEXT NOT NULL DEFAULT 'compare'")


def create(results: list[str | Path], db: str | Path, attention_checks: int = 0) -> int:
    """Build items and blind pairs from results bundles (folders or zips written by `comparisons run`,
    `comparisons import` or the Compare tab); returns the number of comparison pairs. A zip is extracted
    beside the database (its videos must outlive this call). attention_checks: that many extra pairs
    showing one video on both sides (the honest answer is "tie" on every question); they are left out of
    every statistic and the report flags annotators who picked a side on one."""
    conn = connect(db)
    _migrate(conn)
    conn.execute("BEGIN IMMEDIATE")
    try:
        for d in results:
            rep = load_bundle(d, extract_to=Path(db).resolve().parent / f"{Path(db).stem}-bundles" / Path(d).stem)
            s = rep["settings"]
            # pairs form within one source and prompt; results imported without a prompt pair within
            # their source group (the source's name, or the group the import was given)
            source = s.get("source_group") or s.get("input") or rep["bundle_dir"]
            if not s.get("imported"):
                source = s.get("input") or source
            for method, m in rep["methods"].items():
                conn.execute("INSERT OR IGNORE INTO items(input, prompt, method, video) VALUES (?,?,?,?)",
                             (str(source), s.get("prompt") or "", method, m["video"]))
        groups: dict[tuple, list[int]] = {}
        for iid, inp, prompt in conn.execute("SELECT id, input, prompt FROM items ORDER BY id"):
            groups.setdefault((inp, prompt), []).append(iid)
        for ids in groups.values():
            for a, b in itertools.combinations(sorted(ids), 2):
                conn.execute("INSERT OR IGNORE INTO pairs(a, b) VALUES (?,?)", (a, b))
        have = conn.execute("SELECT COUNT(*) FROM pairs WHERE kind = 'identical'").fetchone()[0]
        items = [i for (i,) in conn.execute("SELECT id FROM items ORDER BY id")]
        for k in range(have, min(attention_checks, len(items))):
            it = items[(k * 7919) % len(items)]                     # spread over the items, deterministic
            conn.execute("INSERT OR IGNORE INTO pairs(a, b, kind) VALUES (?,?, 'identical')", (it, it))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    n = conn.execute("SELECT COUNT(*) FROM pairs WHERE kind = 'compare'").fetchone()[0]
    conn.close()
    return n


def _secret(conn) -> str:
    """The study's own random secret (made once): served video names are derived from it, so nobody can
    work out which file is which method from the names."""
    conn.executescript(SCHEMA)
    row = conn.execute("SELECT value FROM meta WHERE key = 'secret'").fetchone()
    if row:
        return row[0]
    value = secrets.token_hex(16)
    conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('secret', ?)", (value,))
    return conn.execute("SELECT value FROM meta WHERE key = 'secret'").fetchone()[0]


def invite(conn, n: int) -> list[str]:
    """Invitation mode: n new participant codes. Once a study has invitations, only their holders can
    vote (each code is that participant's identity; the link /study?code=CODE fills it in)."""
    _migrate(conn)
    codes = [secrets.token_urlsafe(9) for _ in range(int(n))]
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO invites(code) VALUES (?)", [(c,) for c in codes])
    conn.execute("COMMIT")
    return codes


def invite_only(conn) -> bool:
    return conn.execute("SELECT COUNT(*) FROM invites").fetchone()[0] > 0


def start_session(conn, annotator: str) -> str:
    """A participant starts (or resumes): a fresh token bound to this annotator. Votes from the
    participant view carry it; a vote without a valid token is refused. In invitation mode the
    annotator must be an invitation code."""
    annotator = (annotator or "").strip()
    if not annotator:
        raise V2VError("Enter your name or participant code first.")
    _migrate(conn)
    if invite_only(conn) and conn.execute("SELECT 1 FROM invites WHERE code = ?", (annotator,)).fetchone() is None:
        raise V2VError("This study is by invitation: open the link you were given, or enter its code exactly.")
    token = secrets.token_urlsafe(24)
    conn.execute("INSERT INTO sessions(token, annotator) VALUES (?, ?)", (token, annotator))
    return token


def annotator_of(conn, token: str | None) -> str:
    row = conn.execute("SELECT annotator FROM sessions WHERE token = ?", (token or "",)).fetchone() if token else None
    if row is None:
        raise V2VError("This page's study session is not valid: press Start with your name or code to begin.")
    return row[0]


def participant_vote(conn, token: str, pair: int, criterion: str, choice: str) -> None:
    """A vote from the participant view: the annotator is the one the token was issued to."""
    vote(conn, annotator_of(conn, token), pair, criterion, choice)


def answers(conn, annotator: str, pair: int) -> dict[str, str]:
    """The answers this annotator already gave on this pair, as they saw it (left / right / tie / both_bad)."""
    out = {}
    flip = flipped(annotator, pair)
    for crit, w in conn.execute("SELECT criterion, winner FROM votes WHERE annotator = ? AND pair = ?", (annotator, pair)):
        out[crit] = w if w in ("tie", "both_bad") else ("left" if (w == "a") != flip else "right")
    return out


def _video_id(key: str, annotator: str, pair: int, side: str) -> str:
    """The opaque id of one side of one pair as one annotator sees it: per annotator, unguessable without the study's
    secret, and naming nothing."""
    return hashlib.sha256(f"{key}|{annotator}|{pair}|{side}".encode()).hexdigest()[:20]


def served_videos(conn, db: str | Path, annotator: str, pair: int) -> tuple[str, str]:
    """(left, right) as files with opaque names, copied next to the database: nothing in a name, an
    address or a download says which method made it. The study's own copies: the participant's page loads them
    through served_video (its own route), never from Gradio's shared file cache."""
    shown = present(conn, annotator, pair)
    folder = Path(db).resolve().parent / f"{Path(db).stem}-served"
    folder.mkdir(exist_ok=True)
    key = _secret(conn)
    out = []
    for side in ("left", "right"):
        src = Path(shown[side])
        name = _video_id(key, annotator, pair, side) + src.suffix.lower()
        dst = folder / name
        if not dst.exists():
            tmp = dst.with_suffix(".part")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        out.append(str(dst))
    return out[0], out[1]


def served_video(db: str | Path, token: str | None, video_id: str) -> Path | None:
    """The study's copy of the video `video_id` when the session `token` was shown it (one side of one of its
    annotator's pairs), else None: the participant route answers only the (token, id) pairs the study assigned, and
    404 to anything else, a guessed name or another participant's id included."""
    if not Path(db).exists() or not video_id.isalnum():
        return None
    conn = connect(db)
    try:
        row = conn.execute("SELECT annotator FROM sessions WHERE token = ?", (token or "",)).fetchone() if token else None
        if row is None:
            return None
        key = _secret(conn)
        for (pair,) in conn.execute("SELECT id FROM pairs"):
            for k, side in enumerate(("left", "right")):
                if _video_id(key, row[0], pair, side) == video_id:
                    return Path(served_videos(conn, db, row[0], pair)[k])
        return None
    finally:
        conn.close()


def methods(db: str | Path) -> list[str]:
    """The names of the results a study compares, in the order they were added."""
    conn = connect(db)
    try:
        return [m for (m,) in conn.execute("SELECT method FROM items GROUP BY method ORDER BY MIN(id)")]
    finally:
        conn.close()


def flipped(annotator: str, pair: int) -> bool:
    """This annotator's left/right order for this pair: random-looking, reproducible."""
    return hashlib.sha256(f"{annotator}|{pair}".encode()).digest()[0] % 2 == 1


def present(conn, annotator: str, pair: int) -> dict:
    """What the participant sees: left and right videos (no method names)."""
    row = conn.execute("SELECT ia.video, ib.video, ia.prompt FROM pairs p JOIN items ia ON ia.id = p.a "
                       "JOIN items ib ON ib.id = p.b WHERE p.id = ?", (pair,)).fetchone()
    if row is None:
        raise V2VError(f"No pair {pair} in this study.")
    a, b, prompt = row
    left, right = (b, a) if flipped(annotator, pair) else (a, b)
    return {"pair": pair, "left": left, "right": right, "prompt": prompt}


def next_pair(conn, annotator: str) -> int | None:
    """A pair this annotator has not finished (all criteria), in a per-annotator order."""
    done = {p for (p,) in conn.execute("SELECT pair FROM votes WHERE annotator = ? GROUP BY pair "
                                       "HAVING COUNT(*) >= ?", (annotator, len(CRITERIA)))}
    todo = [p for (p,) in conn.execute("SELECT id FROM pairs") if p not in done]
    todo.sort(key=lambda p: hashlib.sha256(f"{annotator}#{p}".encode()).hexdigest())
    return todo[0] if todo else None


def progress(conn, annotator: str) -> tuple[int, int]:
    total = conn.execute("SELECT COUNT(*) FROM pairs").fetchone()[0]
    done = conn.execute("SELECT COUNT(*) FROM (SELECT pair FROM votes WHERE annotator = ? GROUP BY pair "
                        "HAVING COUNT(*) >= ?)", (annotator, len(CRITERIA))).fetchone()[0]
    return done, total


def vote(conn, annotator: str, pair: int, criterion: str, choice: str) -> None:
    """Record one vote as the participant saw it (left/right/tie/both_bad); a re-vote replaces it."""
    if criterion not in CRITERIA:
        raise V2VError(f"Unknown criterion '{criterion}'; one of {', '.join(CRITERIA)}.")
    if choice not in CHOICES:
        raise V2VError(f"Unknown choice '{choice}'; one of {', '.join(CHOICES)}.")
    if not annotator.strip():
        raise V2VError("An annotator name is needed.")
    winner = choice if choice in ("tie", "both_bad") else (
        ("b" if choice == "left" else "a") if flipped(annotator, pair) else ("a" if choice == "left" else "b"))
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("INSERT INTO votes(annotator, pair, criterion, winner) VALUES (?,?,?,?) "
                     "ON CONFLICT(annotator, pair, criterion) DO UPDATE SET winner = excluded.winner, "
                     "ts = julianday('now')", (annotator, pair, criterion, winner))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


MIN_VOTES = 5   # below this many votes a win rate is shown as "n = k", never as a percentage


def _annotator_votes(conn, criterion: str | None = None) -> dict[str, list[tuple[int, str, str, str]]]:
    """annotator -> [(pair, method a, method b, winner)] of the comparison pairs (attention checks left out), on one
    criterion or on all of them."""
    q = ("SELECT v.annotator, v.pair, ia.method, ib.method, v.winner FROM votes v JOIN pairs p ON p.id = v.pair "
         "JOIN items ia ON ia.id = p.a JOIN items ib ON ib.id = p.b WHERE p.kind = 'compare'")
    out: dict[str, list] = {}
    for ann, pair, a, b, w in conn.execute(q + (" AND v.criterion = ?" if criterion else ""),
                                           (criterion,) if criterion else ()):
        out.setdefault(ann, []).append((pair, a, b, w))
    return out


def win_rates(conn, reference: str, criterion: str | None = None, seed: int = 0) -> dict:
    """method -> figures against the reference on one criterion (None: all criteria, a pair's answers together as
    one unit of its annotator): win_rate, wins / draws / losses, votes, annotators, low / high (95% two-stage
    bootstrap over annotators and their pairs, None below study_stats.MIN_ANNOTATORS: `interval` then says so),
    preferring (annotators who gave it more than half the points, of those not even, with a Wilson interval), shown
    ("n = k" below MIN_VOTES votes, else the percentage). Draws are ties and "both bad"."""
    by_ann = _annotator_votes(conn, criterion)
    methods = sorted({m for vs in by_ann.values() for _, a, b, _ in vs for m in (a, b)} - {reference})
    out = {}
    for m in methods:
        units = stats.per_annotator(by_ann, m, reference)
        if not units:
            continue
        pts = [stats.points(m, a, b, w) for vs in by_ann.values() for _, a, b, w in vs if {a, b} == {m, reference}]
        n, rate = len(pts), stats.win_rate(units)
        ci = stats.win_rate_interval(units, seed)
        out[m] = {"win_rate": rate, "wins": pts.count(1.0), "draws": pts.count(0.5), "losses": pts.count(0.0),
                  "votes": n, "annotators": len(units), "low": None if ci is None else ci[0],
                  "high": None if ci is None else ci[1],
                  "interval": stats.too_few(len(units)) if ci is None else f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]",
                  "preferring": stats.annotators_preferring(units),
                  "shown": f"n = {n}" if n < MIN_VOTES else f"{100 * rate:.1f}%"}
    return out


def bradley_terry(conn, criterion: str | None = None) -> dict[str, float]:
    """Bradley-Terry strengths (sum 1) by choix; a draw is half a win each way. Strongest first."""
    votes = [v for vs in _annotator_votes(conn, criterion).values() for v in vs]
    methods = sorted({m for _, a, b, _ in votes for m in (a, b)})
    return dict(sorted(zip(methods, map(float, stats.bradley_terry(votes, methods))), key=lambda kv: -kv[1]))


def bradley_terry_intervals(conn, criterion: str | None = None, seed: int = 0) -> dict:
    """method -> {score, low, high}: Bradley-Terry strengths with 95% bootstrap intervals over annotators (None below
    study_stats.MIN_ANNOTATORS), strongest first."""
    return stats.bradley_terry_intervals(_annotator_votes(conn, criterion), seed)


def krippendorff_alpha(conn, criterion: str) -> tuple[float | None, int]:
    """Krippendorff's alpha (nominal, the krippendorff package) of the annotators' choices on one criterion: units are
    pairs, values the winner as stored (a, b, tie, both_bad). (alpha, pairs with at least two votes); None when no
    pair has two votes or all votes agree on one value."""
    units: dict[int, dict[str, str]] = {}
    for ann, pair, w in conn.execute("SELECT v.annotator, v.pair, v.winner FROM votes v JOIN pairs p ON p.id = v.pair "
                                     "WHERE v.criterion = ? AND p.kind = 'compare'", (criterion,)):
        units.setdefault(pair, {})[ann] = w
    return stats.krippendorff_alpha(units)


def design_summary(conn) -> dict:
    """What the study holds, counted from the database (the one source of every sentence that describes it): blind
    comparison pairs, attention checks, methods, source clips, annotators who voted."""
    one = lambda q: conn.execute(q).fetchone()[0]  # noqa: E731
    return {"pairs": one("SELECT COUNT(*) FROM pairs WHERE kind = 'compare'"),
            "checks": one("SELECT COUNT(*) FROM pairs WHERE kind = 'identical'"),
            "methods": [m for (m,) in conn.execute("SELECT DISTINCT method FROM items ORDER BY method")],
            "sources": one("SELECT COUNT(DISTINCT input || '|' || prompt) FROM items"),
            "annotators": one("SELECT COUNT(DISTINCT annotator) FROM votes")}


def describe(conn) -> str:
    """One sentence of what the study holds (design_summary): the same words at creation, in the report and the admin
    view."""
    d = design_summary(conn)
    checks = f" and {d['checks']} attention check{'s' * (d['checks'] != 1)}" if d["checks"] else ", no attention checks"
    return (f"{d['pairs']} blind pair{'s' * (d['pairs'] != 1)}{checks}, over {len(d['methods'])} method"
            f"{'s' * (len(d['methods']) != 1)} ({', '.join(d['methods'])}) on {d['sources']} source clip"
            f"{'s' * (d['sources'] != 1)}; {d['annotators']} annotator{'s' * (d['annotators'] != 1)} voted so far.")


def report(db: str | Path, reference: str, png: str | Path | None = None) -> str:
    conn = connect(db)
    lines = [f"Study: {describe(conn)}", "",
             f"Against {reference}, each criterion on its own (\"all criteria\" counts a pair's answers together, as one "
             f"unit of its annotator): win / draw / lose counts (draw = tie or both bad); win rate = (wins + half the "
             f"draws) / votes, shown as \"n = k\" below {MIN_VOTES} votes; 95% interval by {stats.BOOTSTRAP_METHOD}, drawn "
             f"only from {stats.MIN_ANNOTATORS} annotators on; annotators preferring: those who gave the method more than "
             f"half the points, of those not even, with a {stats.WILSON_METHOD}.", "",
             "| method | criterion | win / draw / lose | win rate | 95% interval | annotators preferring | votes | "
             "annotators |", "|---|---|---|---|---|---|---|---|"]
    per = {}
    for crit in (*CRITERIA, None):
        wr = win_rates(conn, reference, crit)
        per[crit or "all criteria"] = wr
        for m, r in wr.items():
            p = r["preferring"]
            pref = f"{p['preferring']} of {p['decided']}" + (
                f" [{100 * p['low']:.1f}, {100 * p['high']:.1f}]" if p["low"] is not None else "")
            lines.append(f"| {m} | {crit or 'all criteria'} | {r['wins']} / {r['draws']} / {r['losses']} | {r['shown']} | "
                         f"{r['interval']} | {pref} | {r['votes']} | {r['annotators']} |")
    bt = bradley_terry_intervals(conn)
    k = design_summary(conn)["annotators"]
    lines += ["", "Bradley-Terry strengths (choix; all criteria; a draw is half a win each way; 95% percentile bootstrap "
              f"over annotators, from {stats.MIN_ANNOTATORS} annotators on; results never compared with each other, "
              "e.g. of different sources, are not on one scale):", ""]
    lines += [f"{n + 1}. {m}: {r['score']:.3f} " + (f"[{r['low']:.3f}, {r['high']:.3f}]" if r["low"] is not None
                                                    else f"({stats.too_few(k)})") for n, (m, r) in enumerate(bt.items())]
    checks = attention_failures(conn)
    failed = {a: r for a, r in checks.items() if r["failed"]}
    n_checks = design_summary(conn)["checks"]
    lines += ["", "Attention checks (one video on both sides; picking a side fails): "
              + ("none in this study" if not n_checks else
                 f"{n_checks} in this study, none answered yet" if not checks else
                 f"{len(failed)} of {len(checks)} annotators failed: " + ", ".join(
                     f"{a} ({r['failed']} of {r['checks']})" for a, r in sorted(failed.items())) if failed
                 else f"{n_checks} in this study; none failed ({len(checks)} annotators answered one)"), ""]
    lines += ["", "Agreement between annotators (Krippendorff's alpha, nominal, the krippendorff package; 1 = full "
              "agreement, 0 = chance):", ""]
    for crit in CRITERIA:
        alpha, units = krippendorff_alpha(conn, crit)
        lines.append(f"- {crit}: " + (f"{round(alpha, 2) + 0.0:.2f} over {units} pairs" if alpha is not None
                                       else f"not defined ({units} pairs with two or more votes, or no disagreement possible)"))
    if png:
        _plot(per, reference, png)
    conn.close()
    return "\n".join(lines)


def attention_failures(conn) -> dict[str, dict]:
    """annotator -> {checks: identical pairs answered, failed: those where a side was picked on any question}."""
    out: dict[str, dict] = {}
    for ann, pair, sided in conn.execute(
            "SELECT v.annotator, v.pair, MAX(v.winner IN ('a', 'b')) FROM votes v JOIN pairs p ON p.id = v.pair "
            "WHERE p.kind = 'identical' GROUP BY v.annotator, v.pair"):
        r = out.setdefault(ann, {"checks": 0, "failed": 0})
        r["checks"] += 1
        r["failed"] += int(sided)
    return out


def export_design(db: str | Path, json_path: str | Path) -> dict:
    """The study's design as JSON, so the analysis can be re-run elsewhere: items, pairs, criteria,
    choices and the rule that fixes each annotator's left/right order and pair order."""
    conn = connect(db)
    try:
        items = [dict(zip(("id", "input", "prompt", "method", "video"), r))
                 for r in conn.execute("SELECT id, input, prompt, method, video FROM items ORDER BY id")]
        for it in items:
            it["video"] = Path(it["video"]).name
        pairs = [dict(zip(("id", "a", "b", "kind"), r)) for r in conn.execute("SELECT id, a, b, kind FROM pairs ORDER BY id")]
    finally:
        conn.close()
    design = {"items": items, "pairs": pairs, "criteria": list(CRITERIA), "choices": list(CHOICES),
              "order": {"left_right": "b shown left when sha256(f'{annotator}|{pair}').digest()[0] is odd",
                        "pair_order": "pairs sorted by sha256(f'{annotator}#{pair}').hexdigest()"},
              "min_votes_for_percentages": MIN_VOTES}
    Path(json_path).write_text(json.dumps(design, indent=2) + "\n")
    return design


def _plot(per: dict, reference: str, png):
    """Grouped bars of win rate per criterion with intervals, like StreamV2V's Figure 6."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    crits = [c for c in per if per[c]]
    methods = sorted({m for c in crits for m in per[c]})
    fig, ax = plt.subplots(figsize=(2 + 1.5 * len(crits), 4))
    width = 0.8 / max(len(methods), 1)
    def enough(c, m):
        return m in per[c] and per[c][m]["votes"] >= MIN_VOTES

    for k, m in enumerate(methods):
        xs = [i + k * width for i in range(len(crits))]
        # below MIN_VOTES no bar (never a percentage): "n = k" is written where the bar would be
        ys = [100 * per[c][m]["win_rate"] if enough(c, m) else np.nan for c in crits]
        ax.bar(xs, ys, width, label=m)
        # an error bar only where there are enough annotators for an interval (study_stats.MIN_ANNOTATORS); a bar
        # without one says why, never a zero-width cap that would look like certainty
        for x, c in zip(xs, crits):
            r = per[c].get(m)
            if r is None:
                continue
            if not enough(c, m):
                ax.text(x, 3, f"n = {r['votes']}", ha="center", va="bottom", fontsize=7, rotation=90)
            elif r["low"] is None:
                ax.text(x, 3, f"no interval ({r['annotators']} annotators)", ha="center", va="bottom", fontsize=7,
                        rotation=90)
            else:
                ax.errorbar([x], [100 * r["win_rate"]], yerr=[[100 * (r["win_rate"] - r["low"])],
                                                            [100 * (r["high"] - r["win_rate"])]],
                            fmt="none", ecolor="black", capsize=3)
    ax.axhline(50, color="gray", lw=0.8, ls="--")
    ax.set_xticks([i + width * (len(methods) - 1) / 2 for i in range(len(crits))], crits, fontsize=8)
    ax.set_ylabel(f"win rate vs {reference} (%), 95% bootstrap")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def export(db: str | Path, csv_path: str | Path) -> int:
    conn = connect(db)
    rows = list(conn.execute(
        "SELECT v.annotator, v.pair, ia.input, ia.prompt, ia.method, ib.method, v.criterion, v.winner, v.ts "
        "FROM votes v JOIN pairs p ON p.id = v.pair JOIN items ia ON ia.id = p.a JOIN items ib ON ib.id = p.b "
        "ORDER BY v.pair, v.annotator, v.criterion"))
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["annotator", "pair", "input", "prompt", "method_a", "method_b", "criterion", "winner", "julian_day"])
        w.writerows(rows)
    conn.close()
    return len(rows)
