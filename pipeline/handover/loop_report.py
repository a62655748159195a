"""``DIR/report.html`` of ``synth loop``: the lift per round, what it cost, what is still missed.

Rendered from ``loop.json`` (``pipeline/loop.py``) with the look of ``synth report``.
"""

from __future__ import annotations

import html
from pathlib import Path

from .. import storage
from ..redaction import redact
from .report import STYLE


def _number(value, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _interval(entry: dict, measure: str) -> str:
    found = entry.get("difference", {}).get(measure)
    if found is None:
        return ""
    return f"{found['difference']:+.4f} [{found['low']:+.4f}, {found['high']:+.4f}]"


def lift_table(summary: dict) -> str:
    head = (
        "<tr><th>model</th><th>nDCG@10</th><th>vs base (95% CI)</th>"
        "<th>Recall@100</th><th>vs base (95% CI)</th>"
        "<th>rows</th><th>tokens</th><th>engine hours</th><th>engine hours per nDCG point</th></tr>"
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(cell))}</td>"
            for cell in (
                entry["name"],
                _number(entry["ndcg@10"]),
                _interval(entry, "ndcg@10"),
                _number(entry["recall@100"]),
                _interval(entry, "recall@100"),
                _number(entry.get("rows", "")),
                _number(entry.get("total_tokens", "")),
                _number(entry.get("engine_hours", ""), 6),
                _number(entry.get("engine_hours_per_ndcg_point"), 6) if "rows" in entry else "",
            )
        )
        + "</tr>"
        for entry in summary["lift"]
    )
    return f"<table class='numbers' id='lift'><thead>{head}</thead><tbody>{body}</tbody></table>"


def misses_table(summary: dict) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(m['query_id'])}</td><td>{html.escape(m['query'])}</td>"
        f"<td>{html.escape(m['positive'])}</td></tr>"
        for m in summary["missed_by_final_model"]
    )
    head = "<tr><th>query id</th><th>query</th><th>its positive</th></tr>"
    return f"<table id='misses'><thead>{head}</thead><tbody>{rows}</tbody></table>"


def aims_section(summary: dict) -> str:
    """What each aimed round aimed at, why, and the distributions it changed."""
    if not summary.get("aims"):
        return "<p id='aims'>No round was aimed (one round, or --no-aim-rounds).</p>"
    parts = ["<div id='aims'>"]
    for aim in summary["aims"]:
        reasons = "".join(f"<li>{html.escape(line)}</li>" for line in aim["why"]) or (
            "<li>no slice of at least 5 rows failed more often than the rows as a whole</li>"
        )
        drawn = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in aim["passages_drawn"].items())
        weights = "".join(
            f"<tr><td>{html.escape(field)}</td><td>{html.escape(value)}</td>"
            f"<td>{before:.3f}</td><td>{after:.3f}</td></tr>"
            for field, values in aim["weights"].items()
            for value, (before, after) in values.items()
        )
        parts += [
            f"<h3>Round {aim['round']}, aimed at round {aim['from_round']}'s failures</h3>",
            f"<p>{aim['failed']} of {aim['rows_analysed']} training rows ({aim['failure_rate']:.0%}) had "
            f"their positive outside the model's top 10 over the corpus. Passages near the failing "
            f"positives: {aim['target_documents']} documents targeted"
            + (f"; passages read: {html.escape(drawn)}" if drawn else "")
            + ".</p>",
            f"<ul>{reasons}</ul>",
            "<table class='numbers'><thead><tr><th>distribution</th><th>value</th><th>configured</th>"
            f"<th>aimed</th></tr></thead><tbody>{weights}</tbody></table>",
        ]
    return "".join(parts + ["</div>"])


def loop_report(summary: dict, name: str) -> str:
    misses = len(summary["missed_by_final_model"])
    return "".join(
        [
            "<!DOCTYPE html><html><head><meta charset='utf-8'>",
            f"<title>synth loop: {html.escape(name)}</title><style>{STYLE}</style></head><body>",
            f"<h1>synth loop: {html.escape(name)}</h1>",
            f"<p id='summary'>{summary['rounds']} rounds of {summary['rows_per_round']} passages each, "
            "scored on "
            f"round 1's held-out split ({summary['queries']} queries over {summary['documents']} documents: "
            f"{html.escape(summary['eval_split'])}). Differences are against the base model, with a paired "
            "bootstrap 95% interval over the queries; an interval that includes 0 shows no lift.</p>",
            "<h2>Lift per round</h2>",
            lift_table(summary),
            "<h2>What each round aimed at</h2>",
            aims_section(summary),
            "<h2>Held-out queries the final model still misses "
            f"(positive outside its top 10; first {misses})</h2>",
            misses_table(summary),
            "</body></html>",
        ]
    )


def write_loop_report(out: Path, summary: dict) -> Path:
    path = Path(out) / "report.html"
    storage.write_text(path, redact(loop_report(summary, Path(out).name)))
    return path
