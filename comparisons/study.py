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

Win rate of method M against the reference R, over votes on (M, R) pairs: (wins + 0.5 ties) / votes;
"both bad" counts as a tie. 95% intervals by bootstrap over votes (seeded).
"""
from __future__ import annotations

import csv
import hashlib
import itertools
import json
import sqlite3
from pathlib import Path

import numpy as np

from v2v_core.errors import V2VError

from .bundle import load_bundle

CRITERIA = ("text_alignment", "structure", "quality", "temporal_consistency")
CHOICES = ("left", "right", "tie", "both_bad")

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, input TEXT, prompt TEXT, method TEXT, video TEXT,
                                  UNIQUE(input, prompt, method));
CREATE TABLE IF NOT EXISTS pairs (id INTEGER PRIMARY KEY, a INTEGER REFERENCES items(id), b INTEGER REFERENCES items(id),
                                  UNIQUE(a, b));
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


def create(results: list[str | Path], db: str | Path) -> int:
    """Build items and blind pairs from results bundles (folders or zips written by `comparisons run`,
    `comparisons import` or the Compare tab); returns the number of pairs. A zip is extracted beside the
    database (its videos must outlive this call)."""
    conn = connect(db)
    conn.executescript(SCHEMA)
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
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    n = conn.execute("SELECT COUNT(*) FROM pairs").fetchone()[0]
    conn.close()
    return n


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


def _votes(conn, criterion: str | None = None) -> list[tuple[str, str, str, str]]:
    """(method a, method b, winner, criterion) per vote."""
    q = ("SELECT ia.method, ib.method, v.winner, v.criterion FROM votes v JOIN pairs p ON p.id = v.pair "
         "JOIN items ia ON ia.id = p.a JOIN items ib ON ib.id = p.b")
    return list(conn.execute(q + (" WHERE v.criterion = ?" if criterion else ""), (criterion,) if criterion else ()))


def _score(method: str, a: str, b: str, winner: str) -> float:
    """Points for `method` in one vote of pair (a, b): 1 win, 0.5 tie / both bad, 0 loss."""
    if winner in ("tie", "both_bad"):
        return 0.5
    return 1.0 if (winner == "a") == (method == a) else 0.0


def win_rates(conn, reference: str, criterion: str | None = None, n_boot: int = 2000, seed: int = 0) -> dict:
    """method -> {win_rate, low, high, votes} against the reference."""
    votes = _votes(conn, criterion)
    methods = sorted({m for a, b, _, _ in votes for m in (a, b)} - {reference})
    rng = np.random.default_rng(seed)
    out = {}
    for m in methods:
        pts = np.array([_score(m, a, b, w) for a, b, w, _ in votes if {a, b} == {m, reference}])
        if len(pts) == 0:
            continue
        boot = pts[rng.integers(0, len(pts), (n_boot, len(pts)))].mean(axis=1)
        out[m] = {"win_rate": float(pts.mean()), "low": float(np.percentile(boot, 2.5)),
                  "high": float(np.percentile(boot, 97.5)), "votes": int(len(pts))}
    return out


def bradley_terry(conn, criterion: str | None = None, iters: int = 200) -> dict[str, float]:
    """Bradley-Terry strengths (normalised to sum 1) by the MM algorithm; ties count half to each."""
    votes = _votes(conn, criterion)
    methods = sorted({m for a, b, _, _ in votes for m in (a, b)})
    idx = {m: i for i, m in enumerate(methods)}
    n = len(methods)
    wins = np.zeros((n, n))
    for a, b, w, _ in votes:
        i, j = idx[a], idx[b]
        sa = _score(a, a, b, w)
        wins[i, j] += sa
        wins[j, i] += 1 - sa
    games = wins + wins.T
    p = np.ones(n) / max(n, 1)
    for _ in range(iters):
        w_i = wins.sum(axis=1)
        denom = np.array([sum(games[i, j] / (p[i] + p[j]) for j in range(n) if j != i and games[i, j] > 0)
                          for i in range(n)])
        p = np.where(denom > 0, w_i / np.maximum(denom, 1e-12), p)
        p = np.maximum(p, 1e-9)
        p /= p.sum()
    return dict(sorted(zip(methods, map(float, p)), key=lambda kv: -kv[1]))


def report(db: str | Path, reference: str, png: str | Path | None = None) -> str:
    conn = connect(db)
    lines = [f"Win rate against {reference} (wins + half of ties/both-bad; 95% bootstrap interval)", "",
             "| method | criterion | win rate | 95% interval | votes |", "|---|---|---|---|---|"]
    per = {}
    for crit in (None, *CRITERIA):
        wr = win_rates(conn, reference, crit)
        per[crit or "all"] = wr
        for m, r in wr.items():
            lines.append(f"| {m} | {crit or 'all'} | {100 * r['win_rate']:.1f}% | "
                         f"[{100 * r['low']:.1f}, {100 * r['high']:.1f}] | {r['votes']} |")
    bt = bradley_terry(conn)
    lines += ["", "Bradley-Terry ranking (all criteria):", ""]
    lines += [f"{k + 1}. {m}: {s:.3f}" for k, (m, s) in enumerate(bt.items())]
    if png:
        _plot(per, reference, png)
    conn.close()
    return "\n".join(lines)


def _plot(per: dict, reference: str, png):
    """Grouped bars of win rate per criterion with intervals, like StreamV2V's Figure 6."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    crits = [c for c in per if per[c]]
    methods = sorted({m for c in crits for m in per[c]})
    fig, ax = plt.subplots(figsize=(2 + 1.5 * len(crits), 4))
    width = 0.8 / max(len(methods), 1)
    for k, m in enumerate(methods):
        xs = [i + k * width for i in range(len(crits))]
        ys = [100 * per[c].get(m, {}).get("win_rate", np.nan) for c in crits]
        err = [[100 * (per[c][m]["win_rate"] - per[c][m]["low"]) if m in per[c] else 0 for c in crits],
               [100 * (per[c][m]["high"] - per[c][m]["win_rate"]) if m in per[c] else 0 for c in crits]]
        ax.bar(xs, ys, width, yerr=err, capsize=3, label=m)
    ax.axhline(50, color="gray", lw=0.8, ls="--")
    ax.set_xticks([i + width * (len(methods) - 1) / 2 for i in range(len(crits))], crits, fontsize=8)
    ax.set_ylabel(f"win rate vs {reference} (%)")
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
