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
