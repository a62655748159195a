"""``synth report``: one self-contained HTML page of plots and sample rows for a finished run.

Every image is a PNG drawn by matplotlib and inlined as a data URI, the styles are inline, and
the page loads nothing: it renders the same with no network. Rows are read in one streaming
pass over the shards (fixed-bin histograms, counters, and seeded reservoir samples), so memory
does not grow with the run.
"""

from __future__ import annotations

import base64
import html
import io
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .. import schema as S
from .. import storage
from ..redaction import redact
from ..run.folder import RunFolder
from ..text import tokens
from .card import calibration

SAMPLE_ROWS = 12
LENGTH_BINS = [0, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024]
GAP_BINS = [x / 20 for x in range(-10, 21)]  # positive score minus negative score, -0.5 .. 1.0


@dataclass
class Sample:
    """A seeded reservoir sample of at most ``size`` items."""

    size: int
    rng: random.Random
    items: list = field(default_factory=list)
    seen: int = 0

    def add(self, item) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(item)
        else:
            slot = self.rng.randrange(self.seen)
            if slot < self.size:
                self.items[slot] = item


def _bin(value: float, edges: list[float]) -> int:
    for i in range(len(edges) - 1):
        if value < edges[i + 1]:
            return i
    return len(edges) - 2


@dataclass
class RowSummary:
    query_lengths: Counter = field(default_factory=Counter)
    passage_lengths: Counter = field(default_factory=Counter)
    negatives_per_row: Counter = field(default_factory=Counter)
    score_gaps: Counter = field(default_factory=Counter)
    personas: Counter = field(default_factory=Counter)
    rows: int = 0


def summarise_rows(out: Path, seed: int) -> tuple[RowSummary, Sample, Sample]:
    summary = RowSummary()
    kept = Sample(SAMPLE_ROWS, random.Random(seed))
    columns = [S.ID, S.TASK_TYPE, S.LANGUAGE, S.QUERY, S.POSITIVE, S.NEGATIVES, S.PERSONA]
    columns += [S.POSITIVE_SCORE, S.NEGATIVE_SCORES]
    folder = RunFolder(out)
    for shard in folder.data_shards():
        for batch in storage.parquet_file(shard).iter_batches(batch_size=1024, columns=columns):
            for row in batch.to_pylist():
                summary.rows += 1
                summary.query_lengths[_bin(len(tokens(row[S.QUERY])), LENGTH_BINS)] += 1
                summary.passage_lengths[_bin(len(tokens(row[S.POSITIVE])), LENGTH_BINS)] += 1
                summary.negatives_per_row[len(row[S.NEGATIVES])] += 1
                if row[S.PERSONA]:
                    summary.personas[row[S.PERSONA]] += 1
                if row[S.POSITIVE_SCORE] is not None:
                    for score in row[S.NEGATIVE_SCORES] or []:
                        summary.score_gaps[_bin(row[S.POSITIVE_SCORE] - score, GAP_BINS)] += 1
                kept.add(row)
    dropped = Sample(SAMPLE_ROWS, random.Random(seed + 1))
    for shard in folder.rejected_shards():
        for batch in storage.parquet_file(shard).iter_batches(
            batch_size=1024, columns=[S.ID, S.TASK_TYPE, S.STAGE, S.REASON, S.QUERY, S.POSITIVE]
        ):
            for row in batch.to_pylist():
                dropped.add(row)
    return summary, kept, dropped


# -- plots ---------------------------------------------------------------------------------------


def _figure(width: float = 7.5, height: float = 3.2):
    import matplotlib

    matplotlib.use("Agg")  # no display, no GUI toolkit
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height), dpi=96)


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def plot_funnel(stats: dict) -> str:
    stages = [(name, stage) for name, stage in stats.get("stages", {}).items()]
    reasons = sorted({k for _, st in stages for k in st if k.startswith("dropped_")})
    fig, ax = _figure(height=max(2.5, 0.35 * len(stages) + 1))
    names = [name for name, _ in stages]
    ax.barh(names, [st.get("out", 0) for _, st in stages], color="#9e9e9e", label="passed")
    left = [st.get("out", 0) for _, st in stages]
    for reason in reasons:
        counts = [st.get(reason, 0) for _, st in stages]
        ax.barh(names, counts, left=left, label=reason[len("dropped_") :])
        left = [a + b for a, b in zip(left, counts, strict=True)]
    ax.invert_yaxis()
    ax.set_xlabel("rows")
    ax.set_title("Filter funnel: rows passing each stage, and the ones it dropped by reason")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _png(fig)


def plot_groups(groups: dict, name: str, title: str) -> str | None:
    values = groups.get(name, {})
    if not values:
        return None
    keys = sorted(values)
    fig, ax = _figure(height=max(2.5, 0.3 * len(keys) + 1))
    kept = [values[k].get("kept", 0) for k in keys]
    dropped = [values[k].get("dropped", 0) for k in keys]
    ax.barh(keys, kept, color="#55a868", label="kept")
    ax.barh(keys, dropped, left=kept, color="#c44e52", label="dropped")
    ax.invert_yaxis()
    ax.set_title(title)
    ax.set_xlabel("rows")
    ax.legend(fontsize=7)
    return _png(fig)


def plot_histogram(counts: Counter, edges: list[float], title: str, xlabel: str, color: str) -> str:
    fig, ax = _figure()
    labels = [f"{edges[i]:g}" for i in range(len(edges) - 1)]
    ax.bar(range(len(labels)), [counts.get(i, 0) for i in range(len(labels))], color=color)
    ax.set_xticks(range(len(labels)), labels, rotation=45, fontsize=7)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("rows")
    return _png(fig)


def plot_kept_vs_dropped(histogram: dict, title: str) -> str:
    fig, ax = _figure()
    edges = histogram["edges"]
    centres = [(a + b) / 2 for a, b in zip(edges, edges[1:], strict=False)]
    width = (edges[1] - edges[0]) * 0.45
    ax.bar([c - width / 2 for c in centres], histogram["kept"], width=width, color="#55a868", label="kept")
    ax.bar(
        [c + width / 2 for c in centres], histogram["dropped"], width=width, color="#c44e52", label="dropped"
    )
    ax.set_title(title)
    ax.set_ylabel("rows")
    ax.legend(fontsize=7)
    return _png(fig)


def plot_counts(counts: Counter, title: str, xlabel: str) -> str:
    fig, ax = _figure()
    keys = sorted(counts)
    ax.bar([str(k) for k in keys], [counts[k] for k in keys], color="#8172b2")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("rows")
    return _png(fig)


def plot_personas(personas: Counter, rows: int) -> str:
    per_persona = Counter(personas.values())  # rows per persona -> personas with that many
    fig, ax = _figure()
    keys = sorted(per_persona)
    ax.bar([str(k) for k in keys], [per_persona[k] for k in keys], color="#937860")
    ax.set_title(f"Persona coverage: {len(personas)} distinct personas over {rows} rows")
    ax.set_xlabel("rows written by one persona")
    ax.set_ylabel("personas")
    return _png(fig)


def plot_threshold_curve(entry: dict) -> str:
    """Precision and recall of the labelled rows at every cut of one score filter."""
    fig, ax = _figure()
    cuts = [c for c, _, _ in entry["curve"]]
    ax.plot(cuts, [p for _, p, _ in entry["curve"]], color="#4c72b0", label="precision")
    ax.plot(cuts, [r for _, _, r in entry["curve"]], color="#dd8452", label="recall")
    if entry.get("current") is not None:
        ax.axvline(entry["current"], color="#777", linestyle=":", label=f"now {entry['current']:g}")
    if entry.get("suggested") is not None:
        suggested = entry["suggested"]
        ax.axvline(suggested, color="#55a868", linestyle="--", label=f"suggested {suggested:g}")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(f"{entry['setting']} (cut)")
    ax.set_title(f"Your labels: precision and recall by {entry['setting']} ({entry['labels']} labels)")
    ax.legend(fontsize=7)
    return _png(fig)


def plot_false_negatives(negatives: dict) -> str:
    """The share of kept negatives a reviewer marked as answering, per margin band."""
    fig, ax = _figure()
    bands = negatives["by_margin"]
    names = [f"{b['from']:.2f}-{b['to']:.2f}" for b in bands]
    shares = [b["share"]["value"] for b in bands]
    errors = [  # at least 0: an interval's end can sit a rounding error past its share
        [max(0.0, s - b["share"]["low"]) for s, b in zip(shares, bands, strict=True)],
        [max(0.0, b["share"]["high"] - s) for s, b in zip(shares, bands, strict=True)],
    ]
    ax.bar(names, shares, yerr=errors, color="#c44e52", capsize=3)
    for i, b in enumerate(bands):
        ax.text(i, 0.02, f"n={b['negatives']}", ha="center", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("margin: 1 - cos(query, negative) / cos(query, positive)")
    ax.set_ylabel("marked as answering")
    ax.set_title("Your labels: false negatives by margin (95% intervals)")
    return _png(fig)


def review_section(review: dict) -> list[str]:
    """The report's part on a person's labels (``synth calibrate`` prints the same figures)."""
    from .card import figure, review_text

    rows = "".join(
        f"<tr><td>{html.escape(f['filter'])}</td><td>{f['reached']}</td><td>{f['dropped']}</td>"
        f"<td>{figure(f['precision'])}</td><td>{figure(f['recall'])}</td>"
        f"<td>{figure(f['bad_among_dropped'])}</td></tr>"
        for f in review["filters"]
    )
    parts = [
        "<h2 id='review'>Human review</h2>",
        f"<p id='review-summary'>{html.escape(review_text(review))}</p>",
        "<table class='numbers' id='review-filters'><thead><tr><th>filter</th><th>labelled rows reached</th>"
        "<th>dropped</th><th>precision</th><th>recall</th><th>bad among dropped</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>",
    ]
    for entry in review["thresholds"]:
        if entry["curve"]:
            title = f"Review: {entry['setting']}"
            parts.append(f"<img alt='{html.escape(title)}' src='{plot_threshold_curve(entry)}'>")
    negatives = review.get("negatives")
    if negatives and negatives["by_margin"]:
        parts.append(f"<img alt='Review: false negatives' src='{plot_false_negatives(negatives)}'>")
    return parts


# -- the page ------------------------------------------------------------------------------------


def _rows_table(rows: list[dict], columns: list[str]) -> str:
    def cell(value) -> str:
        text = json.dumps(value, ensure_ascii=False) if isinstance(value, list) else str(value or "")
        return html.escape(text if len(text) <= 400 else text[:400] + " ...")

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
img { max-width: 100%; display: block; margin: 1em 0; }
table { border-collapse: collapse; font-size: 12px; width: 100%; }
td, th { border: 1px solid #ccc; padding: 4px; vertical-align: top; text-align: left; }
.numbers td:nth-child(n+2) { text-align: right; }
"""


def build_report(out: Path, seed: int = 0) -> str:
    """The report's page: the figures gathered from the run (``summarise_rows``, stats, manifest,
    the calibration), then the head, the plots, the review and the sample rows rendered apart."""
    folder = RunFolder(out)
    stats = json.loads(folder.stats_file.read_text(encoding="utf-8"))
    manifest = json.loads(folder.manifest_file.read_text(encoding="utf-8"))
    summary, kept, dropped = summarise_rows(out, seed)
    parts = _head(folder.name, stats, manifest)
    for title, image in _plots(stats, summary):
        parts.append(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' src='{image}'>")
    review = calibration(folder)
    if review is not None:
        parts += review_section(review)
    parts.append(f"<h2>Random kept rows ({len(kept.items)} of {kept.seen})</h2>")
    parts.append(_rows_table(kept.items, [S.ID, S.TASK_TYPE, S.LANGUAGE, S.QUERY, S.POSITIVE, S.NEGATIVES]))
    parts.append(f"<h2>Random dropped rows ({len(dropped.items)} of {dropped.seen})</h2>")
    parts.append(_rows_table(dropped.items, [S.ID, S.TASK_TYPE, S.STAGE, S.REASON, S.QUERY, S.POSITIVE]))
    parts.append("</body></html>")
    return "\n".join(parts)


GROUP_PLOTS = [
    ("task_type", "Kept and dropped rows per task type"),
    ("language_pair", "Kept and dropped rows per language pair (query -> passage)"),
    ("question_type", "Kept and dropped rows per question type"),
    ("difficulty", "Kept and dropped rows per difficulty"),
]
LENGTH_LABEL = "length in words (CJK: characters)"
GAP_TITLE = "Score gap: cos(query, positive) - cos(query, negative), every negative"


def _plots(stats: dict, summary) -> list[tuple[str, str]]:
    """(title, image) of every plot the run's figures allow, in the page's order."""
    groups, histograms = stats.get("groups", {}), stats.get("histograms", {})
    images = [("Filter funnel", plot_funnel(stats))]
    images += [(title, image) for name, title in GROUP_PLOTS if (image := plot_groups(groups, name, title))]
    if summary.personas:
        images.append(("Persona coverage", plot_personas(summary.personas, summary.rows)))
    queries = plot_histogram(summary.query_lengths, LENGTH_BINS, "Query lengths", LENGTH_LABEL, "#4c72b0")
    passages = plot_histogram(
        summary.passage_lengths, LENGTH_BINS, "Positive passage lengths", LENGTH_LABEL, "#dd8452"
    )
    images += [("Query lengths", queries), ("Passage lengths", passages)]
    if "cosine" in histograms:
        cosine = plot_kept_vs_dropped(histograms["cosine"], "cos(query, positive): kept vs dropped rows")
        images.append(("Cosine", cosine))
    images.append(
        ("Negatives per row", plot_counts(summary.negatives_per_row, "Negatives per row", "negatives"))
    )
    if summary.score_gaps:
        images.append(
            ("Score gap", plot_histogram(summary.score_gaps, GAP_BINS, GAP_TITLE, "gap", "#64b5cd"))
        )
    return images


def _head(name: str, stats: dict, manifest: dict) -> list[str]:
    """The page's head: title, one summary line, the funnel table."""
    funnel_rows = "".join(
        f"<tr><td>{html.escape(stage_name)}</td><td>{stage.get('in', 0)}</td><td>{stage.get('out', 0)}</td>"
        f"<td>{html.escape(', '.join(f'{k[8:]}: {v}' for k, v in stage.items() if k.startswith('dropped_')))}"
        "</td></tr>"
        for stage_name, stage in stats.get("stages", {}).items()
    )
    drops = ", ".join(f"{html.escape(k)} {v}" for k, v in Counter(stats.get("dropped", {})).most_common())
    models = ", ".join(
        f"{role}: {'off' if m.get('enabled') is False else html.escape(m.get('name', ''))}"
        for role, m in manifest["models"].items()
    )
    return [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>synth report: {html.escape(name)}</title><style>{STYLE}</style></head><body>",
        f"<h1>synth report: {html.escape(name)}</h1>",
        f"<p id='summary'>{stats.get('rows_out', 0)} rows kept of {stats.get('rows_in', 0)} "
        f"generated. Models: {models}. Dropped: {drops or 'none'}.</p>",
        "<h2>Funnel</h2>",
        "<table class='numbers' id='funnel'><thead><tr><th>stage</th><th>rows in</th><th>rows out</th>"
        f"<th>dropped</th></tr></thead><tbody>{funnel_rows}</tbody></table>",
    ]


def write_report(out: Path, path: Path | None = None, seed: int = 0) -> Path:
    path = storage.location(path) if path else RunFolder(out).report_file
    storage.write_text(path, redact(build_report(out, seed)))
    return path
