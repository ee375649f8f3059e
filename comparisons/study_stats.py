"""The user study's statistics, from the field's kept libraries (scipy.stats, choix, krippendorff), never claiming
more than the votes hold.

The unit of independence is the ANNOTATOR: one person's votes on several pairs, or on the four criteria of one pair,
are not independent evidence. So:
- each criterion is reported on its own; "all criteria" pools an annotator's votes over criteria as ONE unit of
  that annotator (resampled together), which can never be narrower than treating them as independent;
- win-rate intervals are two-stage cluster bootstraps (annotators resampled, then each drawn annotator's votes;
  percentile; a pair's criteria stay together): the plain bootstrap over annotators (scipy.stats.bootstrap, which a test cross-checks against the
  first stage) covered a 70% preference of 30 simulated annotators in only 92 of 100 studies; resampling within
  annotators too is conservative. Intervals are drawn only from MIN_ANNOTATORS annotators on: below that the report says "too few annotators for an
  interval (k)" instead of a zero-width or falsely narrow interval;
- "annotators preferring M": how many annotators gave M more than half the points against the reference, out of
  those who were not even, with a Wilson interval (scipy.stats.binomtest(...).proportion_ci(method="wilson")):
  a binomial over independent people;
- Bradley-Terry strengths by choix (ilsr_pairwise; a draw is half a win each way), intervals from the same bootstrap;
- Krippendorff's alpha (nominal) by krippendorff.alpha.

A vote is (pair, method a, method b, winner), grouped by annotator, with winner in a / b / tie / both_bad; draws (tie, both bad) count
half a point to each side.
"""
from __future__ import annotations

import numpy as np

MIN_ANNOTATORS = 5          # fewer annotators: no interval is drawn (documented in the README and the report)
N_RESAMPLES = 2000          # bootstrap resamples of the win-rate intervals
BT_RESAMPLES = 300          # bootstrap resamples of the Bradley-Terry intervals (one choix fit each)
BT_ALPHA = 0.01             # choix's regularisation: finite strengths when a method never lost or never won
CONFIDENCE = 0.95
BOOTSTRAP_METHOD = (f"two-stage bootstrap (annotators, then each one's pairs; {N_RESAMPLES} resamples, percentile; "
                    "conservative)")
WILSON_METHOD = "Wilson score interval over annotators (scipy.stats.binomtest)"


def points(method: str, a: str, b: str, winner: str) -> float:
    """Points for `method` in one vote of pair (a, b): 1 win, 0.5 tie / both bad, 0 loss."""
    if winner in ("tie", "both_bad"):
        return 0.5
    return 1.0 if (winner == "a") == (method == a) else 0.0


def too_few(k: int) -> str:
    return f"too few annotators for an interval ({k})"


def per_annotator(by_ann: dict[str, list[tuple]], method: str, reference: str) -> list[np.ndarray]:
    """Per annotator who voted on (method, reference) pairs: an array (pairs, 2) of [points of `method`, votes] per
    pair they answered (summed over the criteria given): the units the intervals resample. Votes are
    (pair, a, b, winner)."""
    out = []
    for votes in by_ann.values():
        per_pair: dict = {}
        for pair, a, b, w in votes:
            if {a, b} == {method, reference}:
                acc = per_pair.setdefault(pair, [0.0, 0.0])
                acc[0] += points(method, a, b, w)
                acc[1] += 1
        if per_pair:
            out.append(np.array(list(per_pair.values())))
    return out


def win_rate(units: list[np.ndarray]) -> float:
    """(wins + half the draws) / votes over every annotator's pairs."""
    tot = np.sum([u.sum(0) for u in units], axis=0)
    return float(tot[0] / tot[1])


def two_stage_bootstrap(units: list[np.ndarray], seed: int = 0, n_resamples: int = N_RESAMPLES,
                        within: bool = True) -> np.ndarray:
    """(n_resamples,) win rates of a two-stage cluster bootstrap: annotators resampled with replacement, then (with
    `within`) each drawn annotator's pairs resampled from that annotator's own (all criteria of a pair together).
    With within=False it is the plain bootstrap over annotators that scipy.stats.bootstrap runs (a test cross-checks
    the two)."""
    rng = np.random.default_rng(seed)
    a = len(units)
    drawn = rng.integers(0, a, (n_resamples, a))                                 # (R, A) annotator per slot
    pts, votes = np.zeros(drawn.shape), np.zeros(drawn.shape)
    for i, u in enumerate(units):
        mask = drawn == i
        k = int(mask.sum())
        if not k:
            continue
        if within:
            pick = u[rng.integers(0, len(u), (k, len(u)))].sum(1)                 # (k, 2): each slot its own draw
        else:
            pick = np.broadcast_to(u.sum(0), (k, 2))
        pts[mask], votes[mask] = pick[:, 0], pick[:, 1]
    return pts.sum(1) / votes.sum(1)


def win_rate_interval(units: list[np.ndarray], seed: int = 0) -> tuple[float, float] | None:
    """95% percentile interval of the win rate by the two-stage bootstrap (annotators, then their pairs); None below
    MIN_ANNOTATORS annotators. Resampling within annotators too makes it conservative (it counts the pairs' own
    spread twice): it errs towards claiming less."""
    if len(units) < MIN_ANNOTATORS:
        return None
    boot = two_stage_bootstrap(units, seed)
    lo, hi = np.percentile(boot, [100 * (1 - CONFIDENCE) / 2, 100 * (1 + CONFIDENCE) / 2])
    return float(lo), float(hi)


def annotators_preferring(units: list[np.ndarray]) -> dict:
    """How many annotators gave the method more than half the points (k of n, the even ones left out), with a Wilson
    interval of that share (None below MIN_ANNOTATORS decided annotators)."""
    from scipy.stats import binomtest

    r = np.array([u[:, 0].sum() / u[:, 1].sum() for u in units])
    k, n = int((r > 0.5).sum()), int((r != 0.5).sum())
    ci = binomtest(k, n).proportion_ci(confidence_level=CONFIDENCE, method="wilson") if n >= MIN_ANNOTATORS else None
    return {"preferring": k, "decided": n, "low": None if ci is None else float(ci.low),
            "high": None if ci is None else float(ci.high)}


def bradley_terry(votes: list[tuple], methods: list[str]) -> np.ndarray:
    """Strengths (sum 1) of `methods` by choix.ilsr_pairwise: a decisive vote is two wins of the winner, a draw one
    win each way (half a win each)."""
    import choix

    idx = {m: i for i, m in enumerate(methods)}
    data = []
    for _, a, b, w in votes:
        i, j = idx[a], idx[b]
        if w == "a":
            data += [(i, j), (i, j)]
        elif w == "b":
            data += [(j, i), (j, i)]
        else:
            data += [(i, j), (j, i)]
    if not data:
        return np.full(len(methods), 1 / max(len(methods), 1))
    s = np.exp(choix.ilsr_pairwise(len(methods), data, alpha=BT_ALPHA))
    return s / s.sum()


def bradley_terry_intervals(by_ann: dict[str, list[tuple]], seed: int = 0) -> dict:
    """method -> {score, low, high}: Bradley-Terry strengths, with 95% percentile bootstrap intervals over annotators
    (None below MIN_ANNOTATORS), strongest first."""
    from scipy.stats import bootstrap

    votes = [v for vs in by_ann.values() for v in vs]
    if not votes:
        return {}
    methods = sorted({m for _, a, b, _ in votes for m in (a, b)})
    point = bradley_terry(votes, methods)
    anns = list(by_ann)
    lows = highs = [None] * len(methods)
    if len(anns) >= MIN_ANNOTATORS:
        def stat(idx):
            return bradley_terry([v for k in idx.astype(int) for v in by_ann[anns[k]]], methods)

        res = bootstrap((np.arange(len(anns), dtype=float),), stat, vectorized=False, n_resamples=BT_RESAMPLES,
                        confidence_level=CONFIDENCE, method="percentile", random_state=np.random.default_rng(seed))
        lows, highs = res.confidence_interval.low.tolist(), res.confidence_interval.high.tolist()
    out = {m: {"score": float(point[i]), "low": lows[i], "high": highs[i]} for i, m in enumerate(methods)}
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["score"]))


def krippendorff_alpha(units: dict[int, dict[str, str]]) -> tuple[float | None, int]:
    """Krippendorff's alpha (nominal) by krippendorff.alpha: units (pairs) -> {annotator: choice}. (alpha, units with at
    least two votes); None when no unit has two votes or only one value occurs (alpha undefined)."""
    import krippendorff

    units = {u: v for u, v in units.items() if len(v) >= 2}
    values = sorted({c for v in units.values() for c in v.values()})
    if not units or len(values) < 2:
        return None, len(units)
    anns = sorted({a for v in units.values() for a in v})
    code = {c: i for i, c in enumerate(values)}
    data = np.full((len(anns), len(units)), np.nan)
    for j, v in enumerate(units.values()):
        for a, c in v.items():
            data[anns.index(a), j] = code[c]
    return float(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")), len(units)
