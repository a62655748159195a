"""``synth calibrate``: what a person's labels say about the gate on this run.

Each labelled row stands for the rows of its stratum: its weight is the stratum's size over
the labels in that stratum (skips do not count), so strata the sample over- or under-drew
are put back in proportion. A proportion is the weighted share, and its 95% interval the
Wilson score interval at the weights' effective number of labels (Kish: (sum w)^2 / sum w^2;
with one stratum, the plain Wilson interval over the labels).

For a filter, the labelled rows that *reached* it are those kept and those dropped at it or
at a later stage; it *passed* those kept or dropped later. A pair is good when the reviewer
said "good pair"; "bad query" and "positive does not answer it" are bad.

- precision: good among the rows it passed; recall: the rows it passed among the good ones;
  bad among dropped: how many of its drops were right.
- threshold for a target precision (score filters: cosine, judge): the loosest cut whose
  passed rows reach the target, read off the labelled rows' own scores (the cosine of a row
  dropped by the cosine filter is in its rejected record, so labels below the run's cut count).
- negatives: the share the reviewer marked as answering the query (false negatives), by
  source and against the positive-aware margin (1 - negative score / positive score); the
  margin a target share of true negatives needs. Negatives the margin removed were never
  kept, so the labels can only tighten it, never loosen it.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from .. import schema as S
from ..config import CODE_TASK_TYPES
from ..handover.card import figure

Z = 1.959964  # 95% two-sided
GATE_FILTERS = ("language", "repetition", "copy_check", "dedup", "cosine", "code_parses", "judge")
GATE_FILTERS += ("require_negatives",)
MARGIN_BINS = [0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0]


@dataclass
class Labelled:
    """One labelled row as calibration reads it."""

    record: dict
    weight: float

    @property
    def good(self) -> bool:
        return self.record[S.VERDICT] == "good"

    @property
    def kept(self) -> bool:
        return bool(self.record[S.KEPT])

    @property
    def stage(self) -> str | None:
        return self.record[S.STAGE]

    def score(self, name: str) -> float | None:
        if name == "cosine":
            value = self.record[S.POSITIVE_SCORE]
        elif name == "judge":
            value = self.record[S.JUDGE_SCORE]
        else:
            value = None
        if value is None and self.record.get(S.SCORES):
            value = json.loads(self.record[S.SCORES]).get({"judge": "judge_positive"}.get(name, name))
        return None if value is None else float(value)


def weighted(records: list[dict]) -> list[Labelled]:
    """Non-skip labels with their stratum weights."""
    judged = [r for r in records if r[S.VERDICT] != "skip"]
    per_stratum: dict[str, int] = defaultdict(int)
    for r in judged:
        per_stratum[r[S.STRATUM]] += 1
    return [Labelled(r, r[S.STRATUM_ROWS] / per_stratum[r[S.STRATUM]]) for r in judged]


def wilson(share: float, n: float) -> tuple[float, float]:
    if n <= 0:
        return 0.0, 1.0
    denominator = 1 + Z * Z / n
    centre = (share + Z * Z / (2 * n)) / denominator
    half = Z * math.sqrt(share * (1 - share) / n + Z * Z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def estimate(pairs: list[tuple[float, bool]]) -> dict | None:
    """The weighted share of True among (weight, flag) pairs, its interval and label count."""
    if not pairs:
        return None
    total = sum(w for w, _ in pairs)
    share = sum(w for w, flag in pairs if flag) / total
    effective = total * total / sum(w * w for w, _ in pairs)
    low, high = wilson(share, effective)
    return {"value": share, "low": low, "high": high, "labels": len(pairs)}


def _passes(row: Labelled, order: list[str], stage: str) -> tuple[bool, bool]:
    """(reached, passed) of a row for the filter ``stage``."""
    if row.kept:
        return True, True
    if row.stage not in order:
        return False, False
    at, here = order.index(row.stage), order.index(stage)
    return at >= here, at > here


def filter_metrics(rows: list[Labelled], order: list[str]) -> list[dict]:
    found = []
    for stage in order:
        if stage not in GATE_FILTERS:
            continue
        reached = [(r, passed) for r in rows for hit, passed in [_passes(r, order, stage)] if hit]
        if not reached:
            continue
        passed = [r for r, p in reached if p]
        dropped = [r for r, p in reached if not p]
        found.append(
            {
                "filter": stage,
                "reached": len(reached),
                "dropped": len(dropped),
                "precision": estimate([(r.weight, r.good) for r in passed]),
                "recall": estimate([(r.weight, p) for r, p in reached if r.good]),
                "bad_among_dropped": estimate([(r.weight, not r.good) for r in dropped]),
            }
        )
    return found


def round_cut(cut: float, values: list[float]) -> float:
    """The shortest decimal at or above ``cut`` that leaves every value on the same side of it."""
    for digits in range(2, 8):
        scale = 10**digits
        rounded = math.ceil(cut * scale - 1e-9) / scale
        if not any(cut < v <= rounded for v in values):
            return rounded
    return cut


def precision_curve(scored: list[tuple[float, float, bool]], strict: bool) -> list[list[float]]:
    """[cut, precision, recall] at every cut the labelled scores allow, loosest first.

    ``scored``: (score, weight, good); a row passes a cut when score > cut (``strict``) or >= cut.
    """
    values = sorted({s for s, _, _ in scored})
    cuts = [values[0] - 1e-6, *values] if strict else values
    good = sum(w for _, w, g in scored if g)
    curve = []
    for cut in cuts:
        passed = [(w, g) for s, w, g in scored if (s > cut if strict else s >= cut)]
        if not passed:
            break
        kept_good = sum(w for w, g in passed if g)
        curve.append([cut, kept_good / sum(w for w, _ in passed), kept_good / good if good else 0.0])
    return curve


def loosest_cut(
    scored: list[tuple[float, float, bool]], target: float, strict: bool, below_cut: bool
) -> dict | None:
    """The lowest cut whose passed rows reach ``target`` precision, with its intervals; None if none does.

    When every labelled row may pass, the labels say nothing about a lower cut unless some of
    them lie below the run's own (``below_cut``: the filter dropped labelled rows): then the
    cut goes just under the lowest labelled score, else the setting is kept (``keep``).
    """
    values = sorted({s for s, _, _ in scored})
    for i, (cut, precision, _) in enumerate(precision_curve(scored, strict)):
        if precision < target:
            continue
        if i == 0 and not below_cut:
            return {"suggested": None, "keep": True, **_at(scored, cut, strict)}
        if not strict:
            suggested = cut
        elif cut < values[0]:  # nothing labelled needs cutting: just under the lowest score
            suggested = math.floor(values[0] * 100) / 100
            suggested = suggested if suggested < values[0] else round(suggested - 0.01, 2)
        else:
            suggested = round_cut(cut, values)
        return {"suggested": suggested, **_at(scored, cut, strict)}
    return None


def _at(scored: list[tuple[float, float, bool]], cut: float, strict: bool) -> dict:
    def passes(score: float) -> bool:
        return score > cut if strict else score >= cut

    return {
        "precision": estimate([(w, g) for s, w, g in scored if passes(s)]),
        "recall": estimate([(w, passes(s)) for s, w, g in scored if g]),
    }


def thresholds(rows: list[Labelled], order: list[str], config: dict, target: float) -> list[dict]:
    cosine = config.get("filters", {}).get("cosine", {})
    judge = config.get("filters", {}).get("judge", {})
    found = []
    groups = [
        ("cosine", "filters.cosine.threshold", cosine.get("threshold"), lambda r: not _code(r), True),
        ("cosine", "filters.cosine.code_threshold", cosine.get("code_threshold"), _code, True),
        ("judge", "filters.judge.min_positive_score", judge.get("min_positive_score"), lambda r: True, False),
    ]
    for stage, setting, current, member, strict in groups:
        if stage not in order:
            continue
        scored = [
            (score, r.weight, r.good)
            for r in rows
            if member(r) and _passes(r, order, stage)[0] and (score := r.score(stage)) is not None
        ]
        if not scored:
            continue
        below = any(not r.kept and r.stage == stage for r in rows if member(r))
        cut = loosest_cut(scored, target, strict, below)
        entry = {"filter": stage, "setting": setting, "current": current, "labels": len(scored)}
        entry.update(cut or {"suggested": None})
        entry["curve"] = precision_curve(scored, strict)
        if stage == "cosine" and cosine.get("mode") == "percentile":
            entry["note"] = "the run cut by percentile; the suggestion is an absolute threshold"
        found.append(entry)
    return found


def _code(row: Labelled) -> bool:
    return row.record[S.TASK_TYPE] in CODE_TASK_TYPES


def negative_metrics(rows: list[Labelled], config: dict, target: float) -> dict | None:
    """False negatives among the labelled rows' negatives, by source and by margin."""
    items = []  # (gap, weight, source, is_false_negative)
    for row in rows:
        scores = row.record[S.NEGATIVE_SCORES] or []
        sources = row.record[S.NEGATIVE_SOURCES] or []
        positive = row.record[S.POSITIVE_SCORE]
        marked = set(row.record[S.FALSE_NEGATIVES] or [])
        for j, score in enumerate(scores):
            gap = 1 - score / positive if positive and positive > 0 else None
            source = sources[j] if j < len(sources) else "unknown"
            items.append((gap, row.weight, source, j in marked))
    if not items:
        return None
    current = config.get("negatives", {}).get("relative_margin")
    by_margin = []
    for low, high in zip(MARGIN_BINS, MARGIN_BINS[1:], strict=False):
        inside = [(w, fn) for gap, w, _, fn in items if gap is not None and low <= gap < high]
        if inside:
            by_margin.append({"from": low, "to": high, "negatives": len(inside), **_share(inside)})
    gaps = [(gap, w, not fn) for gap, w, _, fn in items if gap is not None]
    margin = {"setting": "negatives.relative_margin", "current": current, "suggested": None}
    if gaps:
        start = current if current is not None else 0.0
        candidates = [start, *sorted({g for g, _, _ in gaps if g > start})]
        values = [g for g, _, _ in gaps]
        for cut in candidates:
            kept = [(w, true) for g, w, true in gaps if g > cut]
            if not kept:
                break
            share = estimate(kept)
            if share["value"] >= target:
                removed = len(gaps) - len(kept)
                margin.update(
                    suggested=round_cut(cut, values) if cut > start else start,
                    true_negative_share=share,
                    negatives_removed=removed,
                )
                break
    return {
        "labels": len(items),
        "false_negatives": estimate([(w, fn) for _, w, _, fn in items]),
        "by_source": {
            source: estimate([(w, fn) for _, w, s, fn in items if s == source])
            for source in sorted({s for _, _, s, _ in items})
        },
        "by_margin": by_margin,
        "margin": margin,
    }


def _share(pairs: list[tuple[float, bool]]) -> dict:
    found = estimate(pairs)
    return {"false_negatives": sum(1 for _, fn in pairs if fn), "share": found}


def calibrate(records: list[dict], order: list[str], config: dict, target: float = 0.9) -> dict:
    """Every figure ``synth calibrate`` shows, from the latest decision per row."""
    rows = weighted(records)
    kept = [r for r in rows if r.kept]
    return {
        "target_precision": target,
        "labels": len(rows),
        "skipped": sum(1 for r in records if r[S.VERDICT] == "skip"),
        "reviewers": sorted({r[S.REVIEWER] for r in records}),
        "verdicts": {v: sum(1 for r in records if r[S.VERDICT] == v) for v in S.VERDICTS},
        "kept_precision": estimate([(r.weight, r.good) for r in kept]),
        "filters": filter_metrics(rows, order),
        "thresholds": thresholds(rows, order, config, target),
        "negatives": negative_metrics(rows, config, target),
    }


def suggested_settings(result: dict) -> dict:
    """The suggestions as a nested config mapping (``synth generate --config`` / ``regate --config``)."""
    found: dict = {}

    def put(dotted: str, value) -> None:
        node = found
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    for entry in result["thresholds"]:
        if entry["suggested"] is not None:
            put(entry["setting"], entry["suggested"])
            if entry["filter"] == "cosine":
                put("filters.cosine.mode", "absolute")
    margin = (result["negatives"] or {}).get("margin") or {}
    if margin.get("suggested") is not None and margin["suggested"] != margin.get("current"):
        put(margin["setting"], margin["suggested"])
    return found


def format_calibration(result: dict) -> str:
    """The terminal's tables."""
    verdicts = ", ".join(f"{S.VERDICTS[v]} {n}" for v, n in result["verdicts"].items() if n)
    lines = [
        f"{result['labels']} labelled rows ({verdicts}) by {', '.join(result['reviewers'])}; "
        "95% intervals in brackets",
        f"precision of the kept rows: {figure(result['kept_precision'])}",
        "",
        f"{'filter':<18} {'reached':>7} {'dropped':>7}  {'precision':<19}  {'recall':<19}  bad among dropped",
    ]
    for f in result["filters"]:
        lines.append(
            f"{f['filter']:<18} {f['reached']:>7} {f['dropped']:>7}  {figure(f['precision']):<19}  "
            f"{figure(f['recall']):<19}  {figure(f['bad_among_dropped'])}"
        )
    target = result["target_precision"]
    lines += ["", f"settings for precision {target:g}:"]
    for t in result["thresholds"]:
        now = "embedder default" if t["current"] is None else f"{t['current']:g}"
        if t.get("keep"):
            lines.append(
                f"  {t['setting']}: keep it (now {now}; precision {figure(t['precision'])} at every "
                f"labelled score, labels: {t['labels']})"
            )
        elif t["suggested"] is None:
            lines.append(f"  {t['setting']}: not reachable (now {now}; labels: {t['labels']})")
        else:
            lines.append(
                f"  {t['setting']}: {t['suggested']:g} (now {now}; precision {figure(t['precision'])}, "
                f"recall {figure(t['recall'])}, labels: {t['labels']})"
            )
        if t.get("note"):
            lines.append(f"    ({t['note']})")
    negatives = result["negatives"]
    if negatives:
        sources = ", ".join(f"{s} {figure(v)}" for s, v in negatives["by_source"].items())
        lines += [
            "",
            f"negatives marked as answering the query: {figure(negatives['false_negatives'])} of "
            f"{negatives['labels']} ({sources})",
        ]
        for b in negatives["by_margin"]:
            lines.append(
                f"  margin {b['from']:.2f}-{b['to']:.2f}: {b['false_negatives']} of {b['negatives']} "
                f"({figure(b['share'])})"
            )
        margin = negatives["margin"]
        if margin["suggested"] is None:
            lines.append(f"  {margin['setting']}: not reachable for precision {target:g}")
        else:
            lines.append(
                f"  {margin['setting']}: {margin['suggested']:g} (now {margin['current']}; true negatives "
                f"{figure(margin['true_negative_share'])}, removes {margin['negatives_removed']} "
                "labelled negatives)"
            )
    return "\n".join(lines)


def run_settings(out) -> tuple[list[str], dict]:
    """A run's stage order (from its stats) and its config, with the cosine cuts it really used.

    A config that leaves ``filters.cosine.threshold`` unset cut at the embedder's calibrated
    value, which the manifest records.
    """
    import yaml

    from ..run.folder import RunFolder

    folder = RunFolder(out)
    stats = json.loads(folder.stats_file.read_text(encoding="utf-8"))
    config = yaml.safe_load(folder.config_file.read_text(encoding="utf-8")) or {}
    embedder = {}
    if folder.manifest_file.exists():
        manifest = json.loads(folder.manifest_file.read_text(encoding="utf-8"))
        embedder = manifest.get("models", {}).get("embedder", {})
    cosine = config.setdefault("filters", {}).setdefault("cosine", {})
    for key, used in (("threshold", "cosine_threshold"), ("code_threshold", "code_cosine_threshold")):
        if cosine.get(key) is None and embedder.get(used) is not None:
            cosine[key] = embedder[used]
    return list(stats.get("stages", {})), config


def calibrate_run(out, target: float = 0.9, records: list[dict] | None = None) -> dict | None:
    """``calibrate`` on a run with its own labels (or ``records``); None when there are none (skips aside)."""
    from .labels import load_labels

    records = load_labels(out) if records is None else records
    if not any(r[S.VERDICT] != "skip" for r in records):
        return None
    order, config = run_settings(out)
    return calibrate(records, order, config, target)


def write_suggested(result: dict, path: str, out: str, precision: float) -> None:
    """The settings ``suggested_settings`` gives, as a YAML file for ``synth regate --config``."""
    import yaml

    settings = suggested_settings(result)
    header = (
        f"# settings suggested by `synth calibrate {out} --precision {precision:g}` from "
        f"{result['labels']} labels\n# use: synth regate {out} --out NEW --config {path}\n"
    )
    body = yaml.safe_dump(settings, sort_keys=True) if settings else "# nothing to change\n"
    Path(path).write_text(header + body, encoding="utf-8")
