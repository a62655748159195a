"""Models side by side on one benchmark, with a paired bootstrap interval on each difference.

Every model is scored on the same queries (``evaluate`` with per-query scores); the difference
of model B against the first model A on a measure is the mean over queries of B's score minus
A's, and its 95% interval comes from resampling the queries with replacement (the paired
bootstrap: each resample keeps a query's two scores together, so the interval reflects how
much the difference depends on which queries the benchmark happens to hold). An interval that
excludes 0 is a difference that the queries' sampling alone hardly explains; one that includes 0
is not shown to be a lift.
"""

from __future__ import annotations

import numpy as np

COMPARED = ("ndcg@10", "recall@100")
RESAMPLES = 2000
LEVEL = 0.95


def paired_interval(
    base: dict[str, float], other: dict[str, float], resamples: int = RESAMPLES, seed: int = 0
) -> dict[str, float]:
    """Mean of ``other - base`` over their common queries and its bootstrap 95% interval."""
    queries = sorted(set(base) & set(other))
    if not queries:
        return {"difference": 0.0, "low": 0.0, "high": 0.0, "queries": 0}
    deltas = np.array([other[q] - base[q] for q in queries], dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    step = max(1, 4_000_000 // len(deltas))  # resamples drawn at a time: memory stays bounded
    for start in range(0, resamples, step):
        count = min(step, resamples - start)
        means[start : start + count] = deltas[rng.integers(0, len(deltas), (count, len(deltas)))].mean(axis=1)
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return {
        "difference": float(deltas.mean()),
        "low": float(low),
        "high": float(high),
        "queries": len(queries),
    }


def compare(results: dict[str, dict], seed: int = 0) -> dict[str, dict[str, dict[str, float]]]:
    """Model -> measure -> its difference against the first model, with the interval.

    ``results``: model -> ``evaluate(..., per_query=True)``'s result, the base model first."""
    names = list(results)
    base = results[names[0]]["per_query"]
    differences = {}
    for name in names[1:]:
        other = results[name]["per_query"]
        differences[name] = {
            measure: paired_interval(
                {q: s[measure] for q, s in base.items()}, {q: s[measure] for q, s in other.items()}, seed=seed
            )
            for measure in COMPARED
        }
    return differences


def comparison_table(target: str, results: dict[str, dict], differences: dict) -> str:
    """A plain-text table: each model's scores, and each difference against the first model."""
    names = list(results)
    width = max(len(n) for n in names) + 2
    lines = [f"{target}: {results[names[0]]['queries']} queries, {results[names[0]]['documents']} documents"]
    lines.append(
        "model".ljust(width) + "".join(m.rjust(12) for m in COMPARED) + "   difference to the first [95% CI]"
    )
    for name in names:
        row = name.ljust(width) + "".join(f"{results[name][m]:12.4f}" for m in COMPARED)
        if name in differences:
            row += "   " + "  ".join(
                f"{m} {d['difference']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
                for m, d in differences[name].items()
            )
        lines.append(row)
    return "\n".join(lines)
