"""A targeted plan for the next round, from a failure analysis (``train/failures.py``).

The plan is a small JSON file (``round-k/aim.json`` in ``synth loop``; any file for ``synth
generate --aim``) that says what a run aims at and why:

- ``generation``: question-type, difficulty and query-language weights. Each new weight mixes
  the configured distribution (``share_kept`` of it, 30% by default, so nothing is starved) with
  the configured weight times the slice's failure rate (smoothed: (failed + 1) / (rows + 2), so a
  slice of two rows moves little). Applied, they replace the configured weights, so the run's
  ``config.yaml`` shows the distributions it drew from.
- ``passages``: the documents of the corpus passages nearest to the failing rows' positives
  (``targets``, most pointed-at first), and the pool's size. The run draws every target it reads
  and keeps each other passage with the rate that makes the others ``share_kept`` of the draw
  (or fills ``--limit`` when there are too few targets): ``readers/passages.aimed``.
- ``held_out_documents``: the frozen eval split's documents, never drawn.
- ``why``: the slices with the highest failure rates (at least ``MIN_ROWS`` rows), in words.

Task types are reported in the failure analysis but not reweighted: a run's task types are a
list, not a distribution.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

from .. import storage
from ..config import RunConfig

AIM_VERSION = 1
SHARE_KEPT = 0.3
MIN_ROWS = 5  # a slice smaller than this is never named as the reason for a plan
WEIGHTED = {"question_types": "question_type", "difficulties": "difficulty", "languages": "language"}


class AimError(ValueError):
    """An aim file that cannot be applied: the message names the file and the field."""


def reweight(weights: dict[str, float], table: list[dict], share_kept: float) -> dict[str, float]:
    """``share_kept`` of the configured distribution, the rest in proportion to weight x failure rate."""
    seen = {e["value"]: (e["rows"], e["failed"]) for e in table}
    total = sum(weights.values())
    if total <= 0:
        return dict(weights)
    rate = {k: (seen.get(k, (0, 0))[1] + 1) / (seen.get(k, (0, 0))[0] + 2) for k in weights}
    aimed = sum(w * rate[k] for k, w in weights.items())
    kept, moved = share_kept / total, (1 - share_kept) / aimed
    return {k: round(w * (kept + moved * rate[k]), 4) for k, w in weights.items()}


def language_table(pairs: list[dict]) -> list[dict]:
    """The language-pair slices summed by query language."""
    rows, failed = Counter(), Counter()
    for entry in pairs:
        language = entry["value"].split("->", 1)[0]
        rows[language] += entry["rows"]
        failed[language] += entry["failed"]
    return [{"value": k, "rows": rows[k], "failed": failed[k]} for k in rows]


def document_of(passage_id: str) -> str:
    """The document a pool passage was cut from (``readers/passages.py`` names them ``doc#n``; a
    failing probe row's own document comes as ``doc#probe``)."""
    return passage_id.rsplit("#", 1)[0]


def aim_plan(
    failures: dict,
    config: RunConfig,
    *,
    share_kept: float = SHARE_KEPT,
    pool_passages: int,
    held_out: set[str],
    source: str,
) -> dict:
    """The plan that aims a run of ``config`` at ``failures`` (see the module's docstring)."""
    slices = failures["slices"]
    tables = {
        "question_types": slices["question_type"],
        "difficulties": slices["difficulty"],
        "languages": language_table(slices["language_pair"]),
    }
    generation = config.generation
    weights = {field: reweight(getattr(generation, field), tables[field], share_kept) for field in WEIGHTED}
    targets = list(dict.fromkeys(document_of(c["passage_id"]) for c in failures.get("candidates", [])))
    targets = [t for t in targets if t not in held_out]
    return {
        "aim": AIM_VERSION,
        "from": source,
        "share_kept": share_kept,
        "rows": failures["rows"],
        "failed": failures["failed"],
        "why": reasons(failures),
        "generation": weights,
        "passages": {"targets": targets, "pool_passages": pool_passages},
        "held_out_documents": sorted(held_out),
    }


def reasons(failures: dict, most: int = 5) -> list[str]:
    """The slices with the highest failure rates among those with ``MIN_ROWS`` rows, in words."""
    found = []
    for name, table in failures["slices"].items():
        for entry in table:
            if entry["rows"] >= MIN_ROWS and entry["rate"] > failures["rate"]:
                found.append((entry["rate"], entry["rows"], name, entry))
    found.sort(key=lambda item: (-item[0], -item[1], item[2]))
    return [
        f"{name} {e['value']}: {e['failed']} of {e['rows']} rows failed ({e['rate']:.0%}, "
        f"95% interval {e['low']:.0%}-{e['high']:.0%}; all rows {failures['rate']:.0%})"
        for _, _, name, e in found[:most]
    ]


def read_aim(path: str | Path) -> dict:
    """An aim file, checked: one ``AimError`` naming the file and what is wrong."""
    try:
        data = json.loads(storage.read_bytes(path))
    except FileNotFoundError:
        raise AimError(f"{path}: no such aim file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AimError(f"{path}: not a JSON aim file ({exc})") from None
    if not isinstance(data, dict) or data.get("aim") != AIM_VERSION:
        raise AimError(f'{path}: not an aim file (it must hold "aim": {AIM_VERSION})')
    generation = data.get("generation", {})
    unknown = sorted(set(generation) - set(WEIGHTED))
    if unknown:
        raise AimError(f"{path}: generation.{unknown[0]} cannot be aimed (only {', '.join(WEIGHTED)})")
    passages = data.get("passages", {})
    if not isinstance(passages.get("targets", []), list):
        raise AimError(f"{path}: passages.targets must be a list of document ids")
    if passages.get("targets") and int(passages.get("pool_passages", 0)) < 1:
        raise AimError(f"{path}: passages.pool_passages (the corpus's passage count) is missing")
    share = data.get("share_kept", SHARE_KEPT)
    if not 0 <= share <= 1:
        raise AimError(f"{path}: share_kept must be between 0 and 1")
    return data


def apply_aim(config: RunConfig, path: str | Path) -> RunConfig:
    """``config`` with the aim file's weights in place of its own and the file recorded (path and
    content hash: a run aimed by another plan is another run)."""
    data = read_aim(path)
    for field, weights in data.get("generation", {}).items():
        configured = getattr(config.generation, field)
        if not isinstance(weights, dict) or not weights:
            raise AimError(f"{path}: generation.{field} must map values to weights")
        unknown = sorted(set(weights) - set(configured))
        if unknown:
            raise AimError(
                f"{path}: generation.{field}.{unknown[0]} is not among the run's {field} "
                f"({', '.join(configured)}): an aim reweights what the run draws, it adds nothing"
            )
        numbers = all(isinstance(w, int | float) and w >= 0 for w in weights.values())
        if not numbers or not sum(weights.values()):
            raise AimError(f"{path}: generation.{field} needs weights of 0 or more, not all 0")
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
    dumped = config.model_dump(mode="json")
    dumped["generation"].update(data.get("generation", {}))
    dumped["aim"] = {"path": str(path), "digest": digest}
    try:
        return RunConfig.model_validate(dumped)
    except ValueError as exc:
        raise AimError(f"{path}: {exc}") from None


def others_rate(aim: dict, limit: int | None) -> float:
    """The rate at which a passage that is not a target is drawn: the others make ``share_kept`` of
    the draw, or fill ``limit`` when the targets are too few; 1 with no targets."""
    targets = len(aim.get("passages", {}).get("targets", []))
    pool = int(aim.get("passages", {}).get("pool_passages", 0))
    if not targets or pool <= targets:
        return 1.0
    share = float(aim.get("share_kept", SHARE_KEPT))
    others = pool - targets
    wanted = share * targets / (1 - share) if share < 1 else others
    if limit:
        wanted = max(wanted, limit - targets)
    return min(1.0, wanted / others)
